"""Training of a joint model (``psearch train-joint``) through the shared loop
(``psearch.training.loop.fit``).

Every box of the train split is a person for the detector; labeled boxes are identities for the
identity loss (class ``k`` = the k-th labeled pid, sorted; OIM: unlabeled ones enter its queue).
I-Net and DC-I-Net (and OIM with ``train.sampler: pairs``) train on pairs of images sharing a
labeled person (``PairBatchSampler``, ``train.batch_size / 2`` pairs per batch, as many images
per epoch as the train split; ``train_loader``). SGD with momentum, linear warm-up and step
decay (``warmup_step_decay``), horizontal flips, gradient clipping. AlignPS (``reid.model:
alignps``) trains like OIM, on single images by default.
``DIR/last.pt`` holds the model (with the OIM table and queue), optimizer, scheduler,
config and a fingerprint of the training data, so ``resume=True`` continues where it stopped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from psearch.core.checkpoint import load_checkpoint
from psearch.core.device import resolve_device
from psearch.core.errors import PsearchError
from psearch.core.io import write_json_atomic
from psearch.data.annotations import PersonSearchDataset
from psearch.detector.train import data_fingerprint
from psearch.joint.config import CHECKPOINT_KIND, resolve_joint_config
from psearch.joint.evaluate import evaluate_joint
from psearch.joint.infer import JointSearcher
from psearch.joint.model import build_joint_model
from psearch.joint.pairs import PairBatchSampler
from psearch.nn.targets import DetectionTrainSet, collate, identity_table
from psearch.training.loop import LAST_NAME, fit, prepare_run, sgd_optimizer, step_decay_schedule

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


def train_loader(records: list, table: np.ndarray, train: dict[str, Any]) -> DataLoader:
    """The batches of ``train.sampler`` over ``records`` (train images with boxes): ``pairs``
    (``PairBatchSampler``, ``batch_size / 2`` pairs, as many images per epoch as ``records``)
    or ``shuffle`` (seeded by ``train.seed``)."""
    train_set = DetectionTrainSet(records, train["hflip"], table)
    if train["sampler"] == "pairs":
        pairs = PairBatchSampler([r.pids for r in records], train["batch_size"] // 2,
                                 train["seed"], images_per_epoch=len(records))
        return DataLoader(train_set, batch_sampler=pairs, num_workers=train["workers"],
                          collate_fn=collate)
    return DataLoader(train_set, batch_size=train["batch_size"], shuffle=True,
                      num_workers=train["workers"], collate_fn=collate,
                      drop_last=len(records) > train["batch_size"],
                      generator=torch.Generator().manual_seed(train["seed"]))


def train_joint(dataset: PersonSearchDataset, config: dict[str, Any], out_dir: str | os.PathLike,
                device: str | None = None, resume: bool = False, epochs: int | None = None,
                evaluate: bool = True, progress: bool = True,
                log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Train (or resume) a joint model on ``dataset.train``; return the final metrics.

    ``config``: a joint config (``resolve_joint_config``); ignored on resume, where the
    checkpoint's is used (``epochs`` may extend training). Metrics (train time, last losses,
    and with ``evaluate`` the standard protocols on the model's detections and on ground-truth
    boxes of the test split) are also written to ``DIR/metrics.json``.
    """
    out_dir = Path(out_dir)
    device = resolve_device(device)
    table = check_training_data(dataset)
    fingerprint = data_fingerprint(dataset.train)
    payload = prepare_run(out_dir, CHECKPOINT_KIND, resume, fingerprint, str(dataset.root))
    if payload is not None:
        config = payload["config"]
    config = resolve_joint_config(config)
    config["reid"]["num_ids"] = len(table)
    if epochs is not None:
        config["train"]["epochs"] = epochs
    train = config["train"]

    torch.manual_seed(train["seed"])
    model = build_joint_model(config, load_weights=payload is None).to(device)
    optimizer = sgd_optimizer(model, train)
    records = [r for r in dataset.train if len(r.boxes)]
    loader = train_loader(records, table, train)
    pairs = loader.batch_sampler if isinstance(loader.batch_sampler, PairBatchSampler) else None
    if payload is not None:  # the data order of the remaining epochs, as an unbroken run
        torch.manual_seed(train["seed"] + payload["epoch"])
        if pairs is None:
            loader.generator.manual_seed(train["seed"] + payload["epoch"])

    def on_epoch_start(epoch: int) -> None:
        if pairs is not None:
            pairs.epoch = epoch

    def step(batch: tuple[list, list]) -> dict[str, torch.Tensor]:
        images = [img.to(device, non_blocking=True).float().div_(255) for img in batch[0]]
        targets = [{k: v.to(device) for k, v in t.items()} for t in batch[1]]
        return model(images, targets)

    searcher = JointSearcher(model, config, device=device,
                             checkpoint=str((out_dir / LAST_NAME).resolve()))
    reports: list[dict[str, Any]] = []

    def evaluate_now() -> dict[str, Any]:
        model.eval()  # fit puts it back in training mode for the next epoch
        reports.append(evaluate_joint(searcher, dataset, progress=progress))
        return headline(reports[-1])

    state = {"data_fingerprint": fingerprint, "pid_values": table.tolist(),
             "data": {"root": str(dataset.root), "name": dataset.name,
                      "train_images": len(records)}}
    periodic = evaluate and bool(dataset.gallery) and bool(train["eval_every"])
    history = fit(out_dir=out_dir, kind=CHECKPOINT_KIND, config=config, model=model,
                  optimizer=optimizer, loader=loader, step=step,
                  lr_lambda=step_decay_schedule(train, len(loader)),
                  epochs=train["epochs"], clip_grad_norm=train["clip_grad_norm"],
                  resume_payload=payload, extra_state=state,
                  evaluate=evaluate_now if periodic else None,
                  eval_every=int(train["eval_every"]), best_metric="detected_mAP",
                  on_epoch_start=on_epoch_start,
                  checkpoint_every=train["checkpoint_every"], keep_epochs=train["keep_epochs"],
                  progress=progress, log=log)
    final = history[-1] if history else {}
    metrics: dict[str, Any] = {
        "epochs": train["epochs"],
        "train_seconds": float(load_checkpoint(out_dir / LAST_NAME).get("train_seconds", 0.0)),
        "losses": {"loss": final.get("loss"), **final.get("losses", {})}}
    if evaluate and dataset.gallery:
        model.eval()
        fresh = final.get("eval") is not None and reports
        metrics.update(reports[-1] if fresh else evaluate_joint(searcher, dataset,
                                                                progress=progress))
    write_json_atomic(out_dir / METRICS_NAME, metrics)
    return metrics


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The figures of an evaluation that the history keeps: the headline protocol's mAP and
    top-1 on ground-truth boxes (``mAP``, ``top1``) and on the model's detections
    (``detected_mAP``, ``detected_top1``), and detection AP/recall of all people."""
    out: dict[str, Any] = {}
    for boxes, prefix in (("ground_truth", ""), ("detected", "detected_")):
        search = report[boxes]["search"]
        if search:
            name, figures = list(search.items())[-1]
            out.update({"protocol": name, f"{prefix}mAP": figures["mAP"],
                        f"{prefix}top1": figures["top1"]})
    detection = report["detected"]["detection"]["all"]
    out.update(ap=detection["ap"], recall=detection["recall"])
    return out
