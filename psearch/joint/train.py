"""Training of a joint model (``psearch train-joint``) through the shared loop
(``psearch.training.trainer``).

Every box of the train split is a person for the detector; labeled boxes are identities for the
identity loss (class ``k`` = the k-th labeled pid, sorted; OIM: unlabeled ones enter its queue).
I-Net and DC-I-Net (and OIM with ``train.sampler: pairs``) train on pairs of images sharing a
labeled person (``PairBatchSampler``, ``train.batch_size / 2`` pairs per batch, as many images
per epoch as the train split; ``train_loader``). SGD with momentum, linear warm-up and step
decay (``warmup_step_decay``), horizontal flips, gradient clipping. AlignPS (``reid.model:
alignps``) trains like OIM, on single images by default.
``JointTrainer`` is a ``psearch.training.trainer.Trainer``: the run files (``last.pt`` with the
OIM table and queue, ``best.pt``: best mAP on its detections, ``history.json``,
``metrics.json``) and the resume rule are the base's.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from psearch.core.errors import PsearchError
from psearch.data.annotations import PersonSearchDataset
from psearch.joint.config import CHECKPOINT_KIND, resolve_joint_config
from psearch.joint.evaluate import evaluate_joint
from psearch.joint.infer import JointSearcher
from psearch.joint.model import build_joint_model
from psearch.joint.pairs import PairBatchSampler
from psearch.nn.targets import DetectionTrainSet, collate, identity_table
from psearch.training.loop import LAST_NAME
from psearch.training.trainer import METRICS_NAME, Trainer, TrainResult, detection_batch

__all__ = ["METRICS_NAME", "JointTrainer", "check_training_data", "headline", "train_joint",
           "train_loader"]


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


class JointTrainer(Trainer):
    """A joint model (OIM, I-Net, DC-I-Net, AlignPS); evaluated by search mAP on its own
    detections and on ground-truth boxes, and detection AP/recall (``evaluate_joint``)."""

    kind = CHECKPOINT_KIND
    command = "train-joint"
    best_metric = "detected_mAP"

    def check_data(self) -> None:
        self.table = check_training_data(self.dataset)

    def resolve(self, config: dict[str, Any]) -> dict[str, Any]:
        out = resolve_joint_config(config)
        out["reid"]["num_ids"] = len(self.table)
        return out

    def build_model(self, fresh: bool) -> torch.nn.Module:
        return build_joint_model(self.config, load_weights=fresh)

    def build_loader(self) -> DataLoader:
        self.records = [r for r in self.dataset.train if len(r.boxes)]
        loader = train_loader(self.records, self.table, self.train)
        sampler = loader.batch_sampler
        self.pairs = sampler if isinstance(sampler, PairBatchSampler) else None
        return loader

    def on_epoch_start(self, epoch: int) -> None:
        if self.pairs is not None:
            self.pairs.epoch = epoch

    def step(self, batch: tuple[list, list]) -> dict[str, torch.Tensor]:
        return self.model(*detection_batch(batch, self.device))

    def evaluate(self) -> dict[str, Any]:
        searcher = JointSearcher(self.model, self.config, device=self.device,
                                 checkpoint=str((self.out_dir / LAST_NAME).resolve()))
        return evaluate_joint(searcher, self.dataset, progress=self.progress)

    def headline(self, report: dict[str, Any]) -> dict[str, Any]:
        return headline(report)

    def report_metrics(self, report: dict[str, Any]) -> dict[str, Any]:
        return report

    def extra_state(self) -> dict[str, Any]:
        return {"pid_values": self.table.tolist()}


def train_joint(dataset: PersonSearchDataset, config: dict[str, Any] | None,
                out_dir: str | os.PathLike, device: str | None = None, resume: bool = False,
                epochs: int | None = None, evaluate: bool = True, progress: bool = True,
                log: Callable[[str], None] | None = print,
                overrides: list[str] | tuple[str, ...] = ()) -> TrainResult:
    """Train (or resume) a joint model on ``dataset.train`` (``JointTrainer``); metrics (train
    time, last losses and, with ``evaluate``, the standard protocols on the model's detections
    and on ground-truth boxes of the test split) are in ``result.metrics`` and
    ``DIR/metrics.json``. Resume rule and run files: ``psearch.training.trainer``."""
    return JointTrainer(dataset, config, out_dir, device=device, resume=resume, epochs=epochs,
                        overrides=overrides, evaluate=evaluate, progress=progress,
                        log=log).run()


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
