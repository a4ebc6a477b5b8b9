"""Training of the person detector (``psearch train-detector``).

Every box of the train split is a person, labeled identity or not. SGD with momentum, a linear
warm-up over the first iterations and step decay at given epochs, random horizontal flips,
gradient-norm clipping, all in the shared loop of ``psearch.training.loop``. After each epoch
``DIR/last.pt`` is written (model, optimizer and scheduler state, the config and a fingerprint of
the training data; ``train.keep_epochs: true`` keeps ``DIR/epoch_N.pt`` too), so ``resume=True``
continues exactly where the last finished epoch stopped.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from psearch.core.config import resolve_config as resolve_config_keys
from psearch.core.device import resolve_device
from psearch.core.errors import PsearchError
from psearch.core.io import write_json_atomic
from psearch.core.media import read_image
from psearch.core.progress import progress_bar
from psearch.data.annotations import ImageRecord, PersonSearchDataset
from psearch.detector.inference import PersonDetector
from psearch.detector.model import build_detector, resolve_model_config
from psearch.nn.targets import DetectionTrainSet
from psearch.nn.targets import collate as _collate
from psearch.training.loop import (
    LAST_NAME,
    SGD_TRAIN_DEFAULTS,
    fit,
    prepare_run,
    sgd_optimizer,
    step_decay_schedule,
)

CHECKPOINT_KIND = "detector"
METRICS_NAME = "metrics.json"

DEFAULT_TRAIN_CONFIG: dict[str, Any] = dict(SGD_TRAIN_DEFAULTS)


def resolve_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """A full detector config ``{"model": ..., "train": ...}`` with defaults filled in; unknown
    sections or keys are refused."""
    unknown = set(cfg) - {"model", "train"}
    if unknown:
        raise PsearchError(f"detector config: unknown section(s) {', '.join(sorted(unknown))} "
                           f"(expected model, train)")
    return {"model": resolve_model_config(cfg.get("model")),
            "train": resolve_config_keys(DEFAULT_TRAIN_CONFIG, cfg.get("train"), "train")}


def data_fingerprint(records: list[ImageRecord]) -> str:
    """SHA-256 of the training images' names and boxes (order-independent)."""
    digest = hashlib.sha256()
    for record in sorted(records, key=lambda r: r.name):
        digest.update(record.name.encode())
        digest.update(np.round(record.boxes, 2).astype(np.float32).tobytes())
    return digest.hexdigest()




def train_detector(dataset: PersonSearchDataset, config: dict[str, Any], out_dir: str | os.PathLike,
                   device: str | None = None, resume: bool = False, epochs: int | None = None,
                   evaluate: bool = True, progress: bool = True,
                   log: Callable[[str], None] | None = print) -> dict[str, Any]:
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

    payload = prepare_run(out_dir, CHECKPOINT_KIND, resume, fingerprint, str(dataset.root))
    if payload is not None:
        config = payload["config"]
    config = resolve_config(config)
    if epochs is not None:
        config["train"]["epochs"] = epochs
    train = config["train"]

    torch.manual_seed(train["seed"])
    model = build_detector(config["model"], load_weights=payload is None).to(device)
    optimizer = sgd_optimizer(model, train)
    loader = DataLoader(DetectionTrainSet(records, train["hflip"]), batch_size=train["batch_size"],
                        shuffle=True, num_workers=train["workers"], collate_fn=_collate,
                        drop_last=len(records) > train["batch_size"],
                        generator=torch.Generator().manual_seed(train["seed"]))
    if payload is not None:  # the data order of the remaining epochs, as an unbroken run
        torch.manual_seed(train["seed"] + payload["epoch"])
        loader.generator.manual_seed(train["seed"] + payload["epoch"])

    def step(batch: tuple[list, list]) -> dict[str, torch.Tensor]:
        images = [img.to(device, non_blocking=True).float().div_(255) for img in batch[0]]
        targets = [{k: v.to(device) for k, v in t.items()} for t in batch[1]]
        return model(images, targets)

    state = {"data_fingerprint": fingerprint,
             "data": {"root": str(dataset.root), "name": dataset.name,
                      "train_images": len(records)}}
    history = fit(out_dir=out_dir, kind=CHECKPOINT_KIND, config=config, model=model,
                  optimizer=optimizer, loader=loader, step=step,
                  lr_lambda=step_decay_schedule(train, len(loader)),
                  epochs=train["epochs"], clip_grad_norm=train["clip_grad_norm"],
                  resume_payload=payload, extra_state=state,
                  checkpoint_every=train["checkpoint_every"], keep_epochs=train["keep_epochs"],
                  progress=progress, log=log)
    final = history[-1] if history else {"loss": float("nan"), "losses": {}}
    losses = {"loss": final["loss"], **final.get("losses", {})}
    metrics: dict[str, Any] = {"epochs": train["epochs"],
                               "train_seconds": sum(r["seconds"] for r in history),
                               "losses": losses}
    if evaluate and dataset.gallery:
        detector = PersonDetector(model, config, device=device, checkpoint=str(last.resolve()),
                                  batch_size=train["batch_size"])
        metrics["detection"] = evaluate_detector(detector, dataset, progress=progress)
    write_json_atomic(out_dir / METRICS_NAME, metrics)
    return metrics


def evaluate_detector(detector: Any, dataset: PersonSearchDataset, batch_size: int = 8,
                      progress: bool = True) -> dict[str, Any]:
    """Detect on every test image and run the detection protocol on all people and on labeled
    people only: ``{"all": {"ap", "recall", ...}, "labeled": {...}}`` (fractions in [0, 1])."""
    from psearch.evaluation.detection import DET_THRESH, evaluate_detection

    detections = {}
    records = dataset.gallery
    bar = progress_bar(total=len(records), enabled=progress, desc="evaluate", unit="img",
                       leave=False)
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        results = detector.detect([read_image(r.path) for r in chunk],
                                  score_thresh=DET_THRESH)
        detections.update({r.name: res for r, res in zip(chunk, results, strict=True)})
        bar.update(len(chunk))
    bar.close()
    return {"all": evaluate_detection(dataset, detections),
            "labeled": evaluate_detection(dataset, detections, labeled_only=True)}
