"""``psearch train-reid``: train the re-ID embedding on ground-truth (and detected) train crops.

``ReidTrainer`` is a ``psearch.training.trainer.Trainer``: the run folder (``last.pt`` with the
loss state, i.e. the OIM lookup table and queue or the softmax classifier; ``best.pt``: best test
mAP with ground-truth boxes; ``history.json``, ``metrics.json``) and the resume rule are the
base's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from psearch.core.errors import PsearchError
from psearch.data.annotations import PersonSearchDataset
from psearch.formats.manifest import Manifest
from psearch.nn.losses import build_loss
from psearch.reid.config import resolve_reid_config
from psearch.reid.data import (
    CropDataset,
    CropStore,
    IdentityBalancedSampler,
    build_samples,
    estimate_cache_mb,
)
from psearch.reid.evaluate import evaluate_gt_boxes
from psearch.reid.model import (
    CHECKPOINT_KIND,
    ReidModel,
    build_reid_net,
)
from psearch.training.loop import LAST_NAME, LrLambda, warmup_cosine
from psearch.training.trainer import HISTORY_NAME, Trainer, TrainResult

__all__ = ["HISTORY_NAME", "ReidTrainer", "make_loader", "make_optimizer", "train_reid"]


def make_loader(dataset: CropDataset, cfg: dict[str, Any], seed: int,
                pin_memory: bool) -> DataLoader:
    """Training batches: identity-balanced (``data.sampler: pk``) or shuffled (``random``)."""
    workers = int(cfg["workers"])
    common = {"num_workers": workers, "pin_memory": pin_memory,
              "persistent_workers": workers > 0}
    sampler = cfg["sampler"]
    if sampler == "pk":
        batches = IdentityBalancedSampler(dataset.store.samples.labels, int(cfg["p"]),
                                          int(cfg["k"]), int(cfg["unlabeled_per_batch"]),
                                          seed)
        return DataLoader(dataset, batch_sampler=batches, **common)
    if sampler == "random":
        generator = torch.Generator().manual_seed(seed)
        batch_size = min(int(cfg["batch_size"]), len(dataset))
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                          generator=generator, **common)
    raise PsearchError(f"data.sampler {sampler!r}: expected 'pk' or 'random'")


class ReidTrainer(Trainer):
    """The re-ID embedding (timm backbone + OIM or softmax loss) on train crops."""

    kind = CHECKPOINT_KIND
    command = "train-reid"
    best_metric = "mAP"

    def __init__(self, *args: Any, detections: Manifest | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.detections = detections

    def resolve(self, config: dict[str, Any]) -> dict[str, Any]:
        return resolve_reid_config(config)

    def build_model(self, fresh: bool) -> torch.nn.Module:
        data_cfg = self.config["data"]
        self.samples = build_samples(self.dataset.train, self.detections,
                                     float(data_cfg["detections_iou"]),
                                     bool(data_cfg["use_unlabeled"]))
        samples = self.samples
        if samples.num_ids == 0:
            raise PsearchError(f"{self.dataset.root}: the train split has no labeled identity "
                               f"to learn from")
        self.log(f"train-reid: {len(samples)} crops ({int((samples.labels >= 0).sum())} "
                 f"labeled, {samples.num_ids} identities) from {len(self.dataset.train)} "
                 f"train images")
        self.net = build_reid_net(self.config["model"])
        return self.net

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        loss_cfg = self.config["loss"]
        self.loss_fn = build_loss(loss_cfg["name"], self.net.dim, self.samples.num_ids,
                                  loss_cfg).to(self.device)
        return {"loss": self.loss_fn}

    def build_optimizer(self) -> torch.optim.Optimizer:
        return make_optimizer([*self.net.parameters(), *self.loss_fn.parameters()], self.train)

    def build_loader(self) -> DataLoader:
        cfg, data_cfg = self.config, self.config["data"]
        input_size = tuple(int(v) for v in cfg["model"]["input_size"])
        cache = data_cfg["cache"]
        if cache == "auto":
            cache = (estimate_cache_mb(self.samples, input_size[0])
                     <= float(data_cfg["cache_max_mb"]))
        store = CropStore(self.samples, input_size[0], cache=bool(cache), progress=self.progress)
        crops = CropDataset(store, input_size, augment=True, jitter=float(data_cfg["jitter"]),
                            color_jitter=float(data_cfg["color_jitter"]),
                            erasing=float(data_cfg["erasing"]))
        self.amp = bool(self.train["amp"]) and self.device.type == "cuda"
        return make_loader(crops, data_cfg, int(self.train["seed"]),
                           pin_memory=self.device.type == "cuda")

    def resume_order(self, loader: Any, epoch: int) -> None:
        if isinstance(loader.batch_sampler, IdentityBalancedSampler):
            loader.batch_sampler.epoch = epoch
        else:
            super().resume_order(loader, epoch)

    def schedule(self, iters_per_epoch: int) -> LrLambda:
        warmup = int(float(self.train["warmup_epochs"]) * iters_per_epoch)
        return warmup_cosine(int(self.train["epochs"]) * iters_per_epoch, warmup)

    def step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, labels = (t.to(self.device, non_blocking=True) for t in batch)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            feats = self.net.neck_features(images)
        return {f"loss_{self.config['loss']['name']}": self.loss_fn(feats.float(), labels)}

    def evaluate(self) -> dict[str, Any]:
        model = ReidModel(self.net, self.config, self.device,
                          batch_size=int(self.train["eval_batch_size"]))
        return evaluate_gt_boxes(model, self.dataset, progress=self.progress)

    def extra_state(self) -> dict[str, Any]:
        return {"pid_values": self.samples.pid_values.tolist()}

    def check_resume(self, payload: dict[str, Any]) -> None:
        if list(payload.get("pid_values", [])) != self.samples.pid_values.tolist():
            raise PsearchError(f"{self.out_dir / LAST_NAME}: trained on other identities than "
                               f"this dataset's train split")


def train_reid(dataset: PersonSearchDataset, cfg: dict[str, Any] | None, out_dir: str | Path,
               device: str = "auto", resume: bool = False, detections: Manifest | None = None,
               progress: bool = True, log: Callable[[str], None] | None = print,
               epochs: int | None = None, evaluate: bool = True,
               overrides: list[str] | tuple[str, ...] = ()) -> TrainResult:
    """Train (or, with ``resume``, continue training) a re-ID model (``ReidTrainer``).

    ``cfg`` has sections ``model``, ``loss`` (``name``: oim or softmax, ``scale``, ``momentum``,
    ``queue_size``), ``data`` and ``train``; missing keys take the defaults of
    ``psearch/configs/reid_cpu.yaml`` and unknown ones are refused (``resolve_reid_config``).
    Resume rule and run files: ``psearch.training.trainer``.
    """
    return ReidTrainer(dataset, cfg, out_dir, device=device, resume=resume, epochs=epochs,
                       overrides=overrides, evaluate=evaluate, progress=progress, log=log,
                       detections=detections).run()


def make_optimizer(params: list[torch.nn.Parameter], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """``train.optimizer``: adamw or sgd (momentum 0.9), with ``train.lr``/``weight_decay``."""
    name, lr, wd = cfg["optimizer"], float(cfg["lr"]), float(cfg["weight_decay"])
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd, nesterov=True)
    raise PsearchError(f"train.optimizer {name!r}: expected 'adamw' or 'sgd'")
