"""QEEPS fine-tuning (``psearch train-joint --model qeeps --init OIM.pt``) through the shared
loop (``psearch.training.loop.fit``).

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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from psearch.core.checkpoint import load_checkpoint
from psearch.core.config import resolve_config
from psearch.core.device import resolve_device
from psearch.core.errors import PsearchError
from psearch.core.io import write_json_atomic
from psearch.core.media import read_image
from psearch.data.annotations import UNLABELED_PID, ImageRecord, PersonSearchDataset
from psearch.detector.train import data_fingerprint
from psearch.joint.config import CHECKPOINT_KIND as JOINT_KIND
from psearch.joint.config import resolve_joint_config
from psearch.joint.model import JointSearchModel
from psearch.joint.qeeps import DEFAULT_QEEPS_CONFIG, QEEPSModel
from psearch.joint.train import check_training_data
from psearch.nn.targets import DetectionTrainSet, pid_classes
from psearch.training.loop import LAST_NAME, fit, prepare_run, sgd_optimizer, step_decay_schedule

CHECKPOINT_KIND = "qeeps"
METRICS_NAME = "metrics.json"

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
    return {"model": joint["model"], "reid": joint["reid"],
            "qeeps": resolve_config(DEFAULT_QEEPS_CONFIG, cfg.get("qeeps"), "qeeps"),
            "train": resolve_config(DEFAULT_QEEPS_TRAIN, cfg.get("train"), "train")}


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


def train_qeeps(dataset: PersonSearchDataset, config: dict[str, Any] | None,
                out_dir: str | os.PathLike, init: str | os.PathLike | None = None,
                device: str | None = None, resume: bool = False, epochs: int | None = None,
                progress: bool = True, log: Callable[[str], None] | None = print
                ) -> dict[str, Any]:
    """Fine-tune QEEPS from the OIM checkpoint ``init`` (or resume ``out_dir``); write
    ``DIR/last.pt`` (kind ``qeeps``) and ``DIR/metrics.json`` (train time, last losses)."""
    out_dir = Path(out_dir)
    device = resolve_device(device)
    table = check_training_data(dataset)
    fingerprint = data_fingerprint(dataset.train)
    payload = prepare_run(out_dir, CHECKPOINT_KIND, resume, fingerprint, str(dataset.root))
    if payload is not None:
        config = resolve_qeeps_config(payload["config"])
        config["reid"]["num_ids"] = len(table)
        model = build_qeeps(config)
    else:
        if init is None:
            raise PsearchError("--model qeeps needs --init OIM.pt (a train-joint --model oim "
                               "checkpoint with a ResNet C4 backbone)")
        model, config = qeeps_from_oim(init, config)
        if int(config["reid"]["num_ids"] or -1) != len(table):
            raise PsearchError(f"{init}: trained on {config['reid']['num_ids']} identities, "
                               f"{dataset.root} has {len(table)}: fine-tune on the OIM "
                               f"model's training data")
    if epochs is not None:
        config["train"]["epochs"] = epochs
    train = config["train"]
    torch.manual_seed(train["seed"])
    model = model.to(device)
    optimizer = sgd_optimizer(model, train)
    records = [r for r in dataset.train if len(r.boxes)]
    pairs = PairSet(records, table, train)
    loader = DataLoader(pairs, batch_size=train["batch_size"], shuffle=False,
                        num_workers=train["workers"], collate_fn=collate_pairs)

    def step(batch: tuple[list, list, list, list]) -> dict[str, torch.Tensor]:
        queries, qboxes, galleries, targets = batch
        return model([q.to(device).float().div_(255) for q in queries],
                     [b.to(device) for b in qboxes],
                     [g.to(device).float().div_(255) for g in galleries],
                     [{k: v.to(device) for k, v in t.items()} for t in targets])

    history = fit(out_dir=out_dir, kind=CHECKPOINT_KIND, config=config, model=model,
                  optimizer=optimizer, loader=loader, step=step,
                  lr_lambda=step_decay_schedule(train, len(loader)),
                  epochs=train["epochs"], clip_grad_norm=train["clip_grad_norm"],
                  resume_payload=payload, on_epoch_start=pairs.set_epoch,
                  extra_state={"data_fingerprint": fingerprint, "pid_values": table.tolist(),
                               "init": None if init is None else str(init)},
                  checkpoint_every=train["checkpoint_every"], keep_epochs=train["keep_epochs"],
                  progress=progress, log=log)
    final = history[-1] if history else {}
    metrics = {"epochs": train["epochs"], "pairs_per_epoch": len(pairs),
               "train_seconds": float(load_checkpoint(out_dir / LAST_NAME)
                                      .get("train_seconds", 0.0)),
               "losses": {"loss": final.get("loss"), **final.get("losses", {})}}
    write_json_atomic(out_dir / METRICS_NAME, metrics)
    return metrics
