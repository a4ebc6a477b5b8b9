"""Training of a joint model (``psearch train-joint``): detection and re-ID losses, one loop.

Every box of the train split is a person for the detector; labeled boxes are identities for
the OIM loss (class ``k`` = the k-th labeled pid, sorted), unlabeled ones enter its queue.
SGD with momentum, linear warm-up, step decay, horizontal flips, gradient clipping (the
detector's schedule, ``psearch.detector.train.lr_factor``). ``DIR/last.pt`` is written after
each epoch (model with the OIM table and queue, optimizer, scheduler, config, a fingerprint of
the training data), so ``resume=True`` continues where the last finished epoch stopped.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from psearch.checkpoint import load_checkpoint, save_checkpoint
from psearch.data.annotations import PersonSearchDataset
from psearch.detector.targets import DetectionTrainSet, collate, identity_table
from psearch.detector.train import data_fingerprint, lr_factor
from psearch.device import resolve_device
from psearch.errors import PsearchError
from psearch.io import write_json_atomic
from psearch.joint.config import CHECKPOINT_KIND, resolve_joint_config
from psearch.joint.evaluate import evaluate_joint
from psearch.joint.infer import JointSearcher
from psearch.joint.model import JointSearchModel
from psearch.progress import progress_bar

LAST_NAME = "last.pt"
METRICS_NAME = "metrics.json"


def check_training_data(dataset: PersonSearchDataset) -> np.ndarray:
    """The identity table (sorted labeled pids) of the train split; ``PsearchError`` when it
    has no images, no person box, or no labeled identity (the identity loss needs one)."""
    records = dataset.train
    if not records:
        raise PsearchError(f"{dataset.root}: the train split has no images")
    if not any(len(r.boxes) for r in records):
        raise PsearchError(f"{dataset.root}: no train image has a person box; a joint model "
                           f"learns detection from boxes")
    table = identity_table(records)
    if not len(table):
        raise PsearchError(f"{dataset.root}: the train split has no labeled identity (every "
                           f"box has pid -1); a joint model's identity loss needs some")
    return table


def train_joint(dataset: PersonSearchDataset, config: dict[str, Any], out_dir: str | os.PathLike,
                device: str | None = None, resume: bool = False, epochs: int | None = None,
                evaluate: bool = True, progress: bool = True,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume) a joint model on ``dataset.train``; return the final metrics.

    ``config``: a joint config (``resolve_joint_config``); ignored on resume, where the
    checkpoint's is used (``epochs`` may extend training). Metrics (train time, last losses,
    and with ``evaluate`` the standard protocols on detected and ground-truth boxes of the test
    split) are also written to ``DIR/metrics.json``.
    """
    out_dir = Path(out_dir)
    last = out_dir / LAST_NAME
    device = resolve_device(device)
    table = check_training_data(dataset)
    fingerprint = data_fingerprint(dataset.train)
    payload = None
    if resume:
        if not last.is_file():
            raise PsearchError(f"{last}: nothing to resume (no checkpoint); drop --resume")
        payload = load_checkpoint(last, kind=CHECKPOINT_KIND)
        if payload.get("data_fingerprint") != fingerprint:
            raise PsearchError(f"{last}: was trained on other data than {dataset.root} "
                               f"(fingerprint differs); use another --out to start afresh")
        config = payload["config"]
    elif last.is_file():
        raise PsearchError(f"{last}: a training run is already here; pass --resume to continue "
                           f"it or choose another --out")
    config = resolve_joint_config(config)
    config["reid"]["num_ids"] = len(table)
    if epochs is not None:
        config["train"]["epochs"] = epochs
    train = config["train"]

    torch.manual_seed(train["seed"])
    model = JointSearchModel.from_config(config, load_weights=payload is None).to(device)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                lr=train["lr"], momentum=train["momentum"],
                                weight_decay=train["weight_decay"])
    records = [r for r in dataset.train if len(r.boxes)]
    loader = DataLoader(DetectionTrainSet(records, train["hflip"], table),
                        batch_size=train["batch_size"], shuffle=True,
                        num_workers=train["workers"], collate_fn=collate,
                        drop_last=len(records) > train["batch_size"],
                        generator=torch.Generator().manual_seed(train["seed"]))
    iters = len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  lambda it: lr_factor(it, iters, train))
    start_epoch, history, seconds = 0, [], 0.0
    if payload is not None:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        start_epoch, history = payload["epoch"], payload.get("history", [])
        seconds = payload.get("train_seconds", 0.0)
        torch.manual_seed(train["seed"] + start_epoch)
        loader.generator.manual_seed(train["seed"] + start_epoch)

    def step(batch: tuple[list, list]) -> dict[str, torch.Tensor]:
        images, targets = batch
        images = [img.to(device, non_blocking=True).float().div_(255) for img in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        return model(images, targets)

    for epoch in range(start_epoch, train["epochs"]):
        tic = time.perf_counter()
        losses = _train_epoch(model, loader, step, optimizer, scheduler, train, epoch, progress)
        seconds += time.perf_counter() - tic
        entry = {"epoch": epoch + 1, "losses": losses, "seconds": seconds}
        every = int(train["eval_every"] or 0)
        if evaluate and every and (epoch + 1) % every == 0 and epoch + 1 < train["epochs"]:
            entry["eval"] = _headline(_evaluate(model, config, device, dataset, progress))
            log(f"epoch {epoch + 1}: {entry['eval']}")
        history.append(entry)
        save_checkpoint(last, CHECKPOINT_KIND, config, model.state_dict(), epoch=epoch + 1,
                        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                        history=history, train_seconds=seconds, data_fingerprint=fingerprint,
                        pid_values=table.tolist(),
                        data={"root": str(dataset.root), "name": dataset.name,
                              "train_images": len(records)})

    metrics: dict[str, Any] = {"epochs": train["epochs"], "train_seconds": seconds,
                               "losses": history[-1]["losses"] if history else {}}
    if evaluate and dataset.gallery:
        metrics.update(_evaluate(model, config, device, dataset, progress, str(last.resolve())))
    write_json_atomic(out_dir / METRICS_NAME, metrics)
    return metrics


def _evaluate(model: JointSearchModel, config: dict[str, Any], device: torch.device,
              dataset: PersonSearchDataset, progress: bool,
              checkpoint: str | None = None) -> dict[str, Any]:
    searcher = JointSearcher(model, config, device=device, checkpoint=checkpoint)
    try:
        return evaluate_joint(searcher, dataset, progress=progress)
    finally:
        model.train()


def _headline(report: dict[str, Any]) -> dict[str, float]:
    """mAP/top-1 of the last search protocol and detection AP, rounded, for the log."""
    out = {}
    for boxes, rep in report.items():
        if rep["search"]:
            name, search = list(rep["search"].items())[-1]
            out[f"{boxes} {name} mAP"] = round(search["mAP"], 4)
            out[f"{boxes} {name} top1"] = round(search["top1"], 4)
    out["det AP"] = round(report["detected"]["detection"]["all"]["ap"], 4)
    return out


def _train_epoch(model: torch.nn.Module, loader: DataLoader, step: Callable,
                 optimizer: torch.optim.Optimizer, scheduler: Any, train: dict[str, Any],
                 epoch: int, progress: bool) -> dict[str, float]:
    """One pass over the data; the epoch's mean of each loss term."""
    model.train()
    sums: dict[str, float] = {}
    bar = progress_bar(loader, enabled=progress, desc=f"epoch {epoch + 1}/{train['epochs']}",
                       leave=False)
    for n, batch in enumerate(bar, 1):
        terms = step(batch)
        loss = sum(terms.values())
        if not math.isfinite(loss.item()):
            raise PsearchError(f"training diverged (loss {loss.item()}) at epoch {epoch + 1}, "
                               f"iteration {n}; lower train.lr or raise train.warmup_iters")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train["clip_grad_norm"])
        optimizer.step()
        scheduler.step()
        for key, value in (("loss", loss), *terms.items()):
            sums[key] = sums.get(key, 0.0) + value.item()
        bar.set_postfix({k.removeprefix("loss_"): f"{v / n:.3f}" for k, v in sums.items()})
    bar.close()
    return {k: v / max(1, len(loader)) for k, v in sums.items()}
