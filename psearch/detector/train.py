"""Training of the person detector (``psearch train-detector``).

Every box of the train split is a person, labeled identity or not. SGD with momentum, a linear
warm-up over the first iterations and step decay at given epochs, random horizontal flips,
gradient-norm clipping. ``DetectorTrainer`` is a ``psearch.training.trainer.Trainer``: the run
files (``last.pt``, ``best.pt``, ``history.json``, ``metrics.json``) and the resume rule are
the base's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader

from psearch.core.config import resolve_config as resolve_keys
from psearch.core.config import stage_config
from psearch.core.media import read_image
from psearch.core.progress import progress_bar
from psearch.data.annotations import PersonSearchDataset
from psearch.detector.inference import PersonDetector
from psearch.detector.model import DEFAULT_MODEL_CONFIG, build_detector, resolve_model_config
from psearch.nn.targets import DetectionTrainSet
from psearch.nn.targets import collate as _collate
from psearch.training.loop import LAST_NAME, SGD_TRAIN_DEFAULTS
from psearch.training.trainer import METRICS_NAME, Trainer, TrainResult, detection_batch

CHECKPOINT_KIND = "detector"
__all__ = ["DEFAULTS", "METRICS_NAME", "DetectorTrainer", "detector_config", "resolve_config",
           "train_detector", "evaluate_detector"]

DEFAULT_TRAIN_CONFIG: dict[str, Any] = dict(SGD_TRAIN_DEFAULTS)
DEFAULTS: dict[str, Any] = {"model": DEFAULT_MODEL_CONFIG, "train": DEFAULT_TRAIN_CONFIG}
"""Every key of a detector config and its default (presets: ``psearch/configs/detector_*``)."""


def resolve_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """A full detector config ``{"model": ..., "train": ...}``; unknown keys are refused."""
    out = resolve_keys(DEFAULTS, cfg)
    out["model"] = resolve_model_config(out["model"])  # checks the backbone
    return out


def detector_config(preset: str | os.PathLike | None = "detector_cpu",
                    overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The defaults, a preset (name or YAML file), then ``--set`` overrides."""
    return resolve_config(stage_config(DEFAULTS, preset, overrides))


class DetectorTrainer(Trainer):
    """Faster R-CNN on every box of the train split; evaluated by detection AP and recall."""

    kind = CHECKPOINT_KIND
    command = "train-detector"
    best_metric = "ap"

    def resolve(self, config: dict[str, Any]) -> dict[str, Any]:
        return resolve_config(config)

    def build_model(self, fresh: bool) -> torch.nn.Module:
        return build_detector(self.config["model"], load_weights=fresh)

    def build_loader(self) -> DataLoader:
        records, train = self.dataset.train, self.train
        return DataLoader(DetectionTrainSet(records, train["hflip"]),
                          batch_size=train["batch_size"], shuffle=True,
                          num_workers=train["workers"], collate_fn=_collate,
                          drop_last=len(records) > train["batch_size"],
                          generator=torch.Generator().manual_seed(train["seed"]))

    def step(self, batch: tuple[list, list]) -> dict[str, torch.Tensor]:
        return self.model(*detection_batch(batch, self.device))

    def evaluate(self) -> dict[str, Any]:
        detector = PersonDetector(self.model, self.config, device=self.device,
                                  checkpoint=str((self.out_dir / LAST_NAME).resolve()),
                                  batch_size=self.train["batch_size"])
        return evaluate_detector(detector, self.dataset, progress=self.progress)

    def headline(self, report: dict[str, Any]) -> dict[str, Any]:
        return {"ap": report["all"]["ap"], "recall": report["all"]["recall"]}

    def report_metrics(self, report: dict[str, Any]) -> dict[str, Any]:
        return {"detection": report}


def train_detector(dataset: PersonSearchDataset, config: dict[str, Any] | None,
                   out_dir: str | os.PathLike, device: str | None = None, resume: bool = False,
                   epochs: int | None = None, evaluate: bool = True, progress: bool = True,
                   log: Callable[[str], None] | None = print,
                   overrides: list[str] | tuple[str, ...] = ()) -> TrainResult:
    """Train (or resume) a detector on ``dataset.train`` (``DetectorTrainer``); the metrics
    (``result.metrics``: last losses and, with ``evaluate``, ``detection`` AP and recall on the
    test split) are also in ``DIR/metrics.json``. Resume rule: ``psearch.training.trainer``."""
    return DetectorTrainer(dataset, config, out_dir, device=device, resume=resume,
                           epochs=epochs, overrides=overrides, evaluate=evaluate,
                           progress=progress, log=log).run()


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
