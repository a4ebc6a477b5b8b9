"""QEEPS fine-tuning (``psearch train-joint --model qeeps --init OIM.pt``): ``QEEPSTrainer``,
a ``psearch.training.trainer.Trainer``.

A QEEPS config is the OIM checkpoint's ``model`` and ``reid`` sections (the architecture it
extends) plus its own ``qeeps`` (``DEFAULT_QEEPS_CONFIG``) and ``train`` sections
(``DEFAULT_QEEPS_TRAIN``: the paper's 2 epochs, lr 1e-3 then 1e-4, one pair per step).

Pairs (``PairSet``): a query (a labeled person's box in one train image) and a gallery train
image that shows the same person (positive pair) or not (negative pair, a fraction
``train.negative_fraction`` = 0.25: ours, so that QRPN and QSimNet also learn query-absent
galleries, which is what most test pairs are). Each epoch draws ``train.pairs_per_epoch`` pairs
(0: one positive pair per (query box, other image of that person), as the paper's "all pairs"),
seeded by epoch. Both images are flipped together; the query box is jittered.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from psearch.core.checkpoint import load_checkpoint
from psearch.core.config import resolve_config
from psearch.core.errors import PsearchError
from psearch.core.media import read_image
from psearch.data.annotations import UNLABELED_PID, ImageRecord, PersonSearchDataset
from psearch.joint.config import CHECKPOINT_KIND as JOINT_KIND
from psearch.joint.config import resolve_joint_config
from psearch.joint.model import JointSearchModel
from psearch.joint.qeeps import DEFAULT_QEEPS_CONFIG, QEEPSModel
from psearch.joint.train import check_training_data
from psearch.nn.targets import DetectionTrainSet, pid_classes
from psearch.training.trainer import METRICS_NAME, Trainer, TrainResult

CHECKPOINT_KIND = "qeeps"
__all__ = ["METRICS_NAME", "QEEPSTrainer", "draw_pairs", "resolve_qeeps_config", "train_qeeps"]

DEFAULT_QEEPS_TRAIN: dict[str, Any] = {
    "epochs": 2,
    "pairs_per_epoch": 0,  # 0: every positive (query box, other image) pair, + negatives
    "negative_fraction": 0.25,  # of the pairs: gallery image without the query person (ours)
    "batch_size": 1,  # pairs per step (the paper: 1)
    "lr": 0.001,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "warmup_iters": 0,
    "warmup_factor": 0.001,
    "lr_steps": [1],
    "gamma": 0.1,
    "clip_grad_norm": 10.0,
    "hflip": 0.5,
    "box_jitter": 0.05,  # query box corners moved by up to this fraction of its size
    "workers": 0,
    "seed": 0,
    "checkpoint_every": 1,
    "keep_epochs": False,
}


DEFAULTS: dict[str, Any] = {"qeeps": DEFAULT_QEEPS_CONFIG, "train": DEFAULT_QEEPS_TRAIN}
"""QEEPS's own keys and their defaults (``model``/``reid``: the --init checkpoint's)."""


def resolve_qeeps_config(cfg: dict[str, Any] | None, base: dict[str, Any] | None = None
                         ) -> dict[str, Any]:
    """A full QEEPS config: ``model``/``reid`` of ``base`` (the OIM checkpoint's config) or of
    ``cfg``, ``qeeps`` and ``train`` resolved strictly against their defaults."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - {"model", "reid", "train", "qeeps"})
    if unknown:
        raise PsearchError(f"{unknown[0]}: unknown config section (known: qeeps, train; "
                           f"model and reid come from the --init checkpoint)")
    source = base if base is not None else cfg
    joint = resolve_joint_config({k: source[k] for k in ("model", "reid") if k in source})
    if not str(joint["model"]["backbone"]).endswith("_c4"):
        raise PsearchError(f"QEEPS extends a ResNet C4 joint model; this one has "
                           f"{joint['model']['backbone']} (train it with model.backbone "
                           f"resnet18_c4 or resnet50_c4)")
    own = resolve_config(DEFAULTS, {k: v for k, v in cfg.items() if k in DEFAULTS})
    return {"model": joint["model"], "reid": joint["reid"], **own}


def build_qeeps(config: dict[str, Any], with_loss: bool = True) -> QEEPSModel:
    """An untrained QEEPS of a resolved config (weights come from a checkpoint)."""
    base = JointSearchModel.from_config({"model": config["model"], "reid": config["reid"]},
                                        load_weights=False, with_loss=with_loss)
    return QEEPSModel(base, config["qeeps"])


def qeeps_from_oim(init: str | os.PathLike, cfg: dict[str, Any] | None
                   ) -> tuple[QEEPSModel, dict[str, Any]]:
    """QEEPS around the trained OIM model of checkpoint ``init`` (with its OIM memory)."""
    payload = load_checkpoint(init, kind=JOINT_KIND)
    config = resolve_qeeps_config(cfg, payload["config"])
    base = JointSearchModel.from_config({"model": config["model"], "reid": config["reid"]},
                                        load_weights=False)
    try:
        base.load_state_dict(payload["model"])
    except (RuntimeError, TypeError) as exc:
        raise PsearchError(f"{init}: weights do not fit its config "
                           f"({str(exc).strip().splitlines()[0]})") from None
    return QEEPSModel(base, config["qeeps"]), config


def query_boxes_by_pid(records: list[ImageRecord]) -> dict[int, list[tuple[int, int]]]:
    """pid -> [(image row, box row), ...] of every labeled box in ``records``."""
    out: dict[int, list[tuple[int, int]]] = {}
    for i, r in enumerate(records):
        for j, pid in enumerate(r.pids.tolist()):
            if pid != UNLABELED_PID:
                out.setdefault(int(pid), []).append((i, j))
    return out


def draw_pairs(records: list[ImageRecord], count: int, negative_fraction: float,
               seed: int) -> np.ndarray:
    """Pairs int64 [P, 3]: (query image row, query box row, gallery image row).

    Positives: the query's person is in the gallery image (another image than the query's);
    negatives (``negative_fraction`` of the pairs): it is not. ``count`` 0: every positive
    pair once, plus negatives in proportion. Seeded, so every epoch can draw its own.
    """
    rng = np.random.default_rng(seed)
    positives = [(i, j, g) for occ in query_boxes_by_pid(records).values()
                 for i, j in occ for g, _ in occ if g != i]
    if not positives:
        raise PsearchError("no labeled identity appears in two train images: QEEPS needs "
                           "query/gallery pairs of the same person")
    positives = np.array(positives, dtype=np.int64)
    if count <= 0:
        n_pos = len(positives)
        pos = positives[rng.permutation(n_pos)]
    else:
        n_pos = max(1, round(count * (1 - negative_fraction)))
        pos = positives[rng.integers(0, len(positives), n_pos)]
    n_neg = round(n_pos * negative_fraction / max(1e-9, 1 - negative_fraction))
    pid_sets = [set(r.pids.tolist()) for r in records]
    neg = []
    while len(neg) < n_neg:
        i, j, _ = positives[rng.integers(0, len(positives))]
        g = int(rng.integers(0, len(records)))
        if g != i and int(records[i].pids[j]) not in pid_sets[g]:
            neg.append((i, j, g))
    pairs = np.concatenate([pos, np.array(neg, np.int64).reshape(-1, 3)])
    return pairs[rng.permutation(len(pairs))]


class PairSet(Dataset):
    """Training pairs as (query uint8 [3, h, w], query box [1, 4], gallery uint8 [3, H, W],
    gallery target with ``query_pid``); call ``set_epoch`` to draw the epoch's pairs."""

    def __init__(self, records: list[ImageRecord], pid_values: np.ndarray,
                 train: dict[str, Any]) -> None:
        self.records, self.train = records, train
        self.gallery = DetectionTrainSet(records, hflip=0.0, pid_values=pid_values)
        self.pid_values = pid_values
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        t = self.train
        self.pairs = draw_pairs(self.records, int(t["pairs_per_epoch"]),
                                float(t["negative_fraction"]), int(t["seed"]) + epoch)
        self.rng = np.random.default_rng(int(t["seed"]) + 1000 + epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, k: int):
        qi, qj, gi = (int(v) for v in self.pairs[k])
        record = self.records[qi]
        query = torch.from_numpy(read_image(record.path)).permute(2, 0, 1)
        h, w = query.shape[1:]
        box = record.boxes[qj].astype(np.float32).copy()
        size = np.array([box[2] - box[0], box[3] - box[1]] * 2, np.float32)
        jitter = float(self.train["box_jitter"])
        box += self.rng.uniform(-1, 1, 4).astype(np.float32) * jitter * size
        box = np.clip(box, 0, [w, h, w, h]).astype(np.float32)
        if box[2] - box[0] < 2 or box[3] - box[1] < 2:
            box = record.boxes[qj].astype(np.float32).copy()
        gallery, target = self.gallery[gi]
        target["query_pid"] = torch.tensor(int(pid_classes(record.pids[qj:qj + 1],
                                                           self.pid_values)[0]))
        if self.rng.random() < float(self.train["hflip"]):  # both images together
            query, gallery = query.flip(-1), gallery.flip(-1)
            box = np.array([w - box[2], box[1], w - box[0], box[3]], np.float32)
            gw = gallery.shape[-1]
            b = target["boxes"]
            target["boxes"] = torch.stack([gw - b[:, 2], b[:, 1], gw - b[:, 0], b[:, 3]], 1)
        return query, torch.from_numpy(box)[None], gallery, target


def collate_pairs(batch: list) -> tuple[list, list, list, list]:
    return tuple(list(items) for items in zip(*batch, strict=True))


class QEEPSTrainer(Trainer):
    """QEEPS fine-tuned from an OIM C4 checkpoint (``init``) on (query box, gallery image)
    pairs; it searches pair by pair, so a run has no test-split evaluation."""

    kind = CHECKPOINT_KIND
    command = "train-joint --model qeeps"

    def __init__(self, *args: Any, init: str | os.PathLike | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.init = init
        self.base_model: QEEPSModel | None = None  # a fresh run's, built by resolve

    def check_data(self) -> None:
        self.table = check_training_data(self.dataset)
        if not self.resume and self.init is None:
            raise PsearchError("--model qeeps needs --init OIM.pt (a train-joint --model oim "
                               "checkpoint with a ResNet C4 backbone)")

    def resolve(self, config: dict[str, Any]) -> dict[str, Any]:
        if self.resume:
            out = resolve_qeeps_config(config)
            out["reid"]["num_ids"] = len(self.table)
            return out
        self.base_model, out = qeeps_from_oim(self.init, config)  # the --init architecture
        if int(out["reid"]["num_ids"] or -1) != len(self.table):
            raise PsearchError(f"{self.init}: trained on {out['reid']['num_ids']} identities, "
                               f"{self.dataset.root} has {len(self.table)}: fine-tune on the "
                               f"OIM model's training data")
        return out

    def build_model(self, fresh: bool) -> torch.nn.Module:
        return build_qeeps(self.config) if not fresh else self.base_model

    def build_loader(self) -> DataLoader:
        records = [r for r in self.dataset.train if len(r.boxes)]
        self.pairs = PairSet(records, self.table, self.train)
        return DataLoader(self.pairs, batch_size=self.train["batch_size"], shuffle=False,
                          num_workers=self.train["workers"], collate_fn=collate_pairs)

    def on_epoch_start(self, epoch: int) -> None:
        self.pairs.set_epoch(epoch)

    def step(self, batch: tuple[list, list, list, list]) -> dict[str, torch.Tensor]:
        queries, qboxes, galleries, targets = batch
        dev = self.device
        return self.model([q.to(dev).float().div_(255) for q in queries],
                          [b.to(dev) for b in qboxes],
                          [g.to(dev).float().div_(255) for g in galleries],
                          [{k: v.to(dev) for k, v in t.items()} for t in targets])

    def extra_state(self) -> dict[str, Any]:
        return {"pid_values": self.table.tolist(),
                "init": None if self.init is None else str(self.init)}

    def final_metrics(self) -> dict[str, Any]:
        return {"pairs_per_epoch": len(self.pairs)}


def train_qeeps(dataset: PersonSearchDataset, config: dict[str, Any] | None,
                out_dir: str | os.PathLike, init: str | os.PathLike | None = None,
                device: str | None = None, resume: bool = False, epochs: int | None = None,
                progress: bool = True, log: Callable[[str], None] | None = print,
                overrides: list[str] | tuple[str, ...] = ()) -> TrainResult:
    """Fine-tune QEEPS from the OIM checkpoint ``init`` (or resume ``out_dir``) with
    ``QEEPSTrainer``: kind ``qeeps`` checkpoints; run files and resume rule of
    ``psearch.training.trainer``."""
    return QEEPSTrainer(dataset, config, out_dir, device=device, resume=resume, epochs=epochs,
                        overrides=overrides, progress=progress, log=log, init=init).run()
