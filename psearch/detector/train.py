"""Training of the person detector (``psearch train-detector``).

Every box of the train split is a person, labeled identity or not. SGD with momentum, a linear
warm-up over the first iterations and step decay at given epochs, random horizontal flips,
gradient-norm clipping. After each epoch ``DIR/epoch_N.pt`` and ``DIR/last.pt`` are written
(model, optimizer and scheduler state, the config and a fingerprint of the training data), so
``resume=True`` continues exactly where the last finished epoch stopped.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from psearch.checkpoint import load_checkpoint, save_checkpoint
from psearch.data.annotations import ImageRecord, PersonSearchDataset
from psearch.detector.inference import PersonDetector
from psearch.detector.model import build_detector, resolve_model_config
from psearch.detector.targets import DetectionTrainSet
from psearch.detector.targets import collate as _collate
from psearch.device import resolve_device
from psearch.errors import PsearchError
from psearch.io import write_json_atomic
from psearch.media import read_image

CHECKPOINT_KIND = "detector"
LAST_NAME = "last.pt"
METRICS_NAME = "metrics.json"

DEFAULT_TRAIN_CONFIG: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 4,
    "lr": 0.02,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "warmup_iters": 200,
    "warmup_factor": 0.001,  # the first iteration's lr is lr * warmup_factor
    "lr_steps": [8],  # epochs after which lr is multiplied by gamma
    "gamma": 0.1,
    "clip_grad_norm": 10.0,
    "hflip": 0.5,
    "workers": 0,
    "seed": 0,
}


def resolve_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A full detector config ``{"model": ..., "train": ...}`` with defaults filled in."""
    unknown = set(cfg) - {"model", "train"}
    if unknown:
        raise PsearchError(f"detector config: unknown section(s) {', '.join(sorted(unknown))} "
                           f"(expected model, train)")
    train = copy.deepcopy(DEFAULT_TRAIN_CONFIG)
    for key, value in (cfg.get("train") or {}).items():
        if key not in train:
            raise PsearchError(f"train config: unknown key {key!r} (known: {', '.join(train)})")
        train[key] = value
    return {"model": resolve_model_config(cfg.get("model")), "train": train}


def data_fingerprint(records: list[ImageRecord]) -> str:
    """SHA-256 of the training images' names and boxes (order-independent)."""
    digest = hashlib.sha256()
    for record in sorted(records, key=lambda r: r.name):
        digest.update(record.name.encode())
        digest.update(np.round(record.boxes, 2).astype(np.float32).tobytes())
    return digest.hexdigest()


def lr_factor(iteration: int, iters_per_epoch: int, train: dict[str, Any]) -> float:
    """Multiplier of the base lr at ``iteration``: linear warm-up times step decay."""
    warmup = train["warmup_iters"]
    factor = 1.0
    if iteration < warmup:
        alpha = iteration / warmup
        factor = train["warmup_factor"] * (1 - alpha) + alpha
    epoch = iteration // max(1, iters_per_epoch)
    return factor * train["gamma"] ** sum(epoch >= step for step in train["lr_steps"])


def train_detector(dataset: PersonSearchDataset, config: dict[str, Any], out_dir: str | os.PathLike,
                   device: str | None = None, resume: bool = False, epochs: int | None = None,
                   evaluate: bool = True, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a detector on ``dataset.train``; return the final metrics.

    ``config``: a detector config (``resolve_config``); ignored on resume, where the checkpoint's
    config is used (``epochs`` may still extend training). The metrics (last losses and, with
    ``evaluate``, detection AP and recall on the test split) are also written to
    ``DIR/metrics.json``.
    """
    out_dir = Path(out_dir)
    last = out_dir / LAST_NAME
    device = resolve_device(device)
    records = dataset.train
    if not records:
        raise PsearchError(f"{dataset.root}: the train split has no images")
    fingerprint = data_fingerprint(records)

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
    config = resolve_config(config)
    if epochs is not None:
        config["train"]["epochs"] = epochs
    train = config["train"]

    torch.manual_seed(train["seed"])
    model = build_detector(config["model"], load_weights=payload is None).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=train["lr"], momentum=train["momentum"],
                                weight_decay=train["weight_decay"])
    loader = DataLoader(DetectionTrainSet(records, train["hflip"]), batch_size=train["batch_size"],
                        shuffle=True, num_workers=train["workers"], collate_fn=_collate,
                        drop_last=len(records) > train["batch_size"],
                        generator=torch.Generator().manual_seed(train["seed"]))
    iters = len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(it, iters, train))
    start_epoch, losses, seconds = 0, {}, 0.0
    if payload is not None:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        start_epoch = payload["epoch"]
        losses = payload.get("losses", {})
        seconds = payload.get("train_seconds", 0.0)
        torch.manual_seed(train["seed"] + start_epoch)
        loader.generator.manual_seed(train["seed"] + start_epoch)

    for epoch in range(start_epoch, train["epochs"]):
        tic = time.perf_counter()
        losses = _train_epoch(model, loader, optimizer, scheduler, train, device, epoch, progress)
        seconds += time.perf_counter() - tic
        state = {"epoch": epoch + 1, "train_seconds": seconds, "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "data_fingerprint": fingerprint,
                 "losses": losses, "data": {"root": str(dataset.root), "name": dataset.name,
                                            "train_images": len(records)}}
        model_state = model.state_dict()
        save_checkpoint(out_dir / f"epoch_{epoch + 1}.pt", CHECKPOINT_KIND, config, model_state,
                        **state)
        save_checkpoint(last, CHECKPOINT_KIND, config, model_state, **state)

    metrics: dict[str, Any] = {"epochs": train["epochs"], "train_seconds": seconds,
                               "losses": losses}
    if evaluate and dataset.gallery:
        detector = PersonDetector(model, config, device=device, checkpoint=str(last.resolve()),
                                  batch_size=train["batch_size"])
        metrics["detection"] = evaluate_detector(detector, dataset, progress=progress)
    write_json_atomic(out_dir / METRICS_NAME, metrics)
    return metrics


def _train_epoch(model: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, train: dict[str, Any],
                 device: torch.device, epoch: int, progress: bool) -> dict[str, float]:
    """One pass over the data; returns the epoch's mean of each loss term."""
    model.train()
    sums: dict[str, float] = {}
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{train['epochs']}", disable=not progress,
               dynamic_ncols=True, leave=False)
    for n, (images, targets) in enumerate(bar, 1):
        images = [img.to(device, non_blocking=True).float().div_(255) for img in images]
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        loss_dict = model(images, targets)
        loss = sum(loss_dict.values())
        if not math.isfinite(loss.item()):
            raise PsearchError(f"training diverged (loss {loss.item()}) at epoch {epoch + 1}, "
                               f"iteration {n}; lower train.lr or raise train.warmup_iters")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train["clip_grad_norm"])
        optimizer.step()
        scheduler.step()
        for key, value in (("loss", loss), *loss_dict.items()):
            sums[key] = sums.get(key, 0.0) + value.item()
        bar.set_postfix({k.removeprefix("loss_"): f"{v / n:.3f}" for k, v in sums.items()},
                        lr=f"{scheduler.get_last_lr()[0]:.4f}")
    bar.close()
    return {k: v / max(1, len(loader)) for k, v in sums.items()}


def evaluate_detector(detector: Any, dataset: PersonSearchDataset, batch_size: int = 8,
                      progress: bool = True) -> dict[str, Any]:
    """Detect on every test image and run the detection protocol on all people and on labeled
    people only: ``{"all": {"ap", "recall", ...}, "labeled": {...}}`` (fractions in [0, 1])."""
    from psearch.evaluation.detection import DET_THRESH, evaluate_detection

    detections = {}
    records = dataset.gallery
    bar = tqdm(total=len(records), desc="evaluate", unit="img", disable=not progress, leave=False)
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        results = detector.detect([read_image(r.path) for r in chunk],
                                  score_thresh=DET_THRESH)
        detections.update({r.name: res for r, res in zip(chunk, results, strict=True)})
        bar.update(len(chunk))
    bar.close()
    return {"all": evaluate_detection(dataset, detections),
            "labeled": evaluate_detection(dataset, detections, labeled_only=True)}
