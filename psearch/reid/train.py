"""``psearch train-reid``: train the re-ID embedding on ground-truth (and detected) train crops.

The output directory holds ``last.pt`` (the checkpoint, rewritten atomically after every epoch
by the shared loop of ``psearch.training.loop``: config, network weights, the loss state, i.e. the
OIM lookup table and queue or the softmax classifier, optimizer and schedule state, the epoch and
the history), ``best.pt`` (the epoch with the best test mAP so far) and ``history.json``
(per-epoch loss and test-split evaluation with ground-truth boxes).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from psearch.core.device import resolve_device
from psearch.core.errors import PsearchError
from psearch.core.io import write_json_atomic
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
from psearch.training.loop import LAST_NAME, fit, prepare_run, warmup_cosine

HISTORY_NAME = "history.json"


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


def train_reid(dataset: PersonSearchDataset, cfg: dict[str, Any], out_dir: str | Path,
               device: str = "auto", resume: bool = False, detections: Manifest | None = None,
               progress: bool = True, log: Callable[[str], None] = print) -> list[dict]:
    """Train (or, with ``resume``, continue training) a re-ID model; return the history.

    ``cfg`` has sections ``model``, ``loss`` (``name``: oim or softmax, ``scale``, ``momentum``,
    ``queue_size``), ``data`` and ``train``; missing keys take the defaults of
    ``psearch/configs/reid_cpu.yaml`` and unknown ones are refused (``resolve_reid_config``).
    """
    cfg = resolve_reid_config(cfg)
    data_cfg, train_cfg, loss_cfg = cfg["data"], cfg["train"], cfg["loss"]
    out_dir = Path(out_dir)
    payload = prepare_run(out_dir, CHECKPOINT_KIND, resume)
    seed = int(train_cfg["seed"])
    torch.manual_seed(seed)
    dev = resolve_device(device)

    samples = build_samples(dataset.train, detections, float(data_cfg["detections_iou"]),
                            bool(data_cfg["use_unlabeled"]))
    if samples.num_ids == 0:
        raise PsearchError(f"{dataset.root}: the train split has no labeled identity to learn from")
    log(f"train-reid: {len(samples)} crops ({int((samples.labels >= 0).sum())} labeled, "
        f"{samples.num_ids} identities) from {len(dataset.train)} train images")

    net = build_reid_net(cfg["model"]).to(dev)
    loss_fn = build_loss(loss_cfg["name"], net.dim, samples.num_ids, loss_cfg).to(dev)
    optimizer = make_optimizer([*net.parameters(), *loss_fn.parameters()], train_cfg)
    start_epoch = 0
    if payload is not None:
        check_resumable(out_dir / LAST_NAME, payload, cfg, samples.pid_values)
        start_epoch = int(payload["epoch"])
        log(f"train-reid: resuming {out_dir / LAST_NAME} after epoch {start_epoch}")

    input_size = tuple(int(v) for v in cfg["model"]["input_size"])
    cache = data_cfg["cache"]
    if cache == "auto":
        cache = estimate_cache_mb(samples, input_size[0]) <= float(data_cfg["cache_max_mb"])
    store = CropStore(samples, input_size[0], cache=bool(cache), progress=progress)
    crops = CropDataset(store, input_size, augment=True, jitter=float(data_cfg["jitter"]),
                        color_jitter=float(data_cfg["color_jitter"]),
                        erasing=float(data_cfg["erasing"]))
    loader = make_loader(crops, data_cfg, seed, pin_memory=dev.type == "cuda")
    if isinstance(loader.batch_sampler, IdentityBalancedSampler):
        loader.batch_sampler.epoch = start_epoch

    epochs = int(train_cfg["epochs"])
    warmup = int(float(train_cfg["warmup_epochs"]) * len(loader))
    amp = bool(train_cfg["amp"]) and dev.type == "cuda"

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        images, labels = (t.to(dev, non_blocking=True) for t in batch)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            feats = net.neck_features(images)
        return {f"loss_{loss_cfg['name']}": loss_fn(feats.float(), labels)}

    def evaluate() -> dict[str, Any]:
        model = ReidModel(net, cfg, dev, batch_size=int(train_cfg["eval_batch_size"]))
        return evaluate_gt_boxes(model, dataset, progress=progress)

    def identities() -> dict[str, Any]:
        return {"pid_values": samples.pid_values.tolist()}

    history = fit(out_dir=out_dir, kind=CHECKPOINT_KIND, config=cfg, model=net,
                  optimizer=optimizer, loader=loader, step=step,
                  lr_lambda=warmup_cosine(epochs * len(loader), warmup), epochs=epochs,
                  resume_payload=payload, extra_modules={"loss": loss_fn},
                  extra_state=identities, evaluate=evaluate,
                  eval_every=int(train_cfg["eval_every"] or 0), best_metric="mAP",
                  progress=progress, log=log)
    write_json_atomic(out_dir / HISTORY_NAME, history)
    return history


def make_optimizer(params: list[torch.nn.Parameter], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """``train.optimizer``: adamw or sgd (momentum 0.9), with ``train.lr``/``weight_decay``."""
    name, lr, wd = cfg["optimizer"], float(cfg["lr"]), float(cfg["weight_decay"])
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd, nesterov=True)
    raise PsearchError(f"train.optimizer {name!r}: expected 'adamw' or 'sgd'")


def check_resumable(path: Path, payload: dict[str, Any], cfg: dict[str, Any],
                    pid_values: np.ndarray) -> None:
    """Refuse to resume a checkpoint of another model or loss config or other identities."""
    saved = payload.get("config", {})
    for section in ("model", "loss"):
        if saved.get(section) != cfg[section]:
            raise PsearchError(f"{path}: its {section} config differs from this run's; resume "
                               f"with the same config (saved: {saved.get(section)})")
    if list(payload.get("pid_values", [])) != pid_values.tolist():
        raise PsearchError(f"{path}: trained on other identities than this dataset's train split")
