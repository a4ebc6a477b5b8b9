"""``psearch train-reid``: train the re-ID embedding on ground-truth (and detected) train crops.

The output directory holds ``reid.pt`` (the checkpoint, rewritten atomically after every epoch:
config, network weights, the loss state, i.e. the OIM lookup table and queue or the softmax
classifier, optimizer and schedule state, the epoch and the history) and ``history.json``
(per-epoch loss and test-split evaluation with ground-truth boxes).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from psearch.checkpoint import load_checkpoint, save_checkpoint
from psearch.data.annotations import PersonSearchDataset
from psearch.device import resolve_device
from psearch.errors import PsearchError
from psearch.io import write_json_atomic
from psearch.losses import build_loss
from psearch.manifest import Manifest
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
    load_net_state,
    model_config,
)

CHECKPOINT_NAME = "reid.pt"
HISTORY_NAME = "history.json"


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_loader(dataset: CropDataset, cfg: dict[str, Any], seed: int,
                pin_memory: bool) -> DataLoader:
    """Training batches: identity-balanced (``data.sampler: pk``) or shuffled (``random``)."""
    workers = int(cfg.get("workers", 0))
    common = {"num_workers": workers, "pin_memory": pin_memory,
              "persistent_workers": workers > 0}
    sampler = cfg.get("sampler", "pk")
    if sampler == "pk":
        batches = IdentityBalancedSampler(dataset.store.samples.labels, int(cfg["p"]),
                                          int(cfg["k"]), int(cfg.get("unlabeled_per_batch", 0)),
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

    ``cfg`` has sections ``model`` (see ``DEFAULT_MODEL_CONFIG``), ``loss`` (``name``: oim or
    softmax, ``scale``, ``momentum``, ``queue_size``), ``data`` and ``train``; see
    ``psearch/configs/reid_cpu.yaml`` for every key.
    """
    cfg = copy.deepcopy(cfg)
    cfg["model"] = model_config(cfg.get("model"))
    data_cfg, train_cfg, loss_cfg = cfg["data"], cfg["train"], cfg["loss"]
    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    if ckpt_path.exists() and not resume:
        raise PsearchError(f"{ckpt_path}: a checkpoint exists already; pass --resume to continue "
                           f"it or choose another --out")
    if resume and not ckpt_path.exists():
        raise PsearchError(f"{ckpt_path}: nothing to resume (no checkpoint in {out_dir})")
    seed = int(train_cfg.get("seed", 0))
    torch.manual_seed(seed)
    dev = resolve_device(device)

    samples = build_samples(dataset.train, detections, float(data_cfg.get("detections_iou", 0.5)),
                            bool(data_cfg.get("use_unlabeled", True)))
    if samples.num_ids == 0:
        raise PsearchError(f"{dataset.root}: the train split has no labeled identity to learn from")
    log(f"train-reid: {len(samples)} crops ({int((samples.labels >= 0).sum())} labeled, "
        f"{samples.num_ids} identities) from {len(dataset.train)} train images")

    net = build_reid_net(cfg["model"]).to(dev)
    loss_fn = build_loss(loss_cfg["name"], net.dim, samples.num_ids, loss_cfg).to(dev)
    params = [*net.parameters(), *loss_fn.parameters()]
    optimizer = make_optimizer(params, train_cfg)
    history: list[dict] = []
    start_epoch = 0
    if resume:
        start_epoch, history = restore(ckpt_path, cfg, samples.pid_values, net, loss_fn, optimizer)
        log(f"train-reid: resuming {ckpt_path} after epoch {start_epoch}")

    input_size = tuple(int(v) for v in cfg["model"]["input_size"])
    cache = data_cfg.get("cache", "auto")
    if cache == "auto":
        cache = estimate_cache_mb(samples, input_size[0]) <= float(data_cfg.get("cache_max_mb",
                                                                                 4096))
    store = CropStore(samples, input_size[0], cache=bool(cache), progress=progress)
    crops = CropDataset(store, input_size, augment=True, jitter=float(data_cfg.get("jitter", 0.1)),
                        color_jitter=float(data_cfg.get("color_jitter", 0.2)),
                        erasing=float(data_cfg.get("erasing", 0.5)))
    loader = make_loader(crops, data_cfg, seed, pin_memory=dev.type == "cuda")
    if isinstance(loader.batch_sampler, IdentityBalancedSampler):
        loader.batch_sampler.epoch = start_epoch

    epochs = int(train_cfg["epochs"])
    total_steps = epochs * len(loader)
    warmup = int(float(train_cfg.get("warmup_epochs", 0)) * len(loader))
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    amp = bool(train_cfg.get("amp", True)) and dev.type == "cuda"
    eval_every = int(train_cfg.get("eval_every", 1) or 0)
    step = start_epoch * len(loader)
    for epoch in range(start_epoch, epochs):
        net.train()
        loss_fn.train()
        losses = []
        started = time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", disable=not progress)
        for images, labels in bar:
            for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base * lr_factor(step, total_steps, warmup)
            images = images.to(dev, non_blocking=True)
            labels = labels.to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                feats = net.neck_features(images)
            loss = loss_fn(feats.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            step += 1
        record: dict[str, Any] = {"epoch": epoch + 1, "loss": float(np.mean(losses)),
                                  "seconds": round(time.perf_counter() - started, 1)}
        if eval_every and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
            model = ReidModel(net, cfg, dev, batch_size=int(train_cfg.get("eval_batch_size", 128)))
            record["eval"] = evaluate_gt_boxes(model, dataset, progress=progress)
        history.append(record)
        log(format_record(record))
        save_checkpoint(ckpt_path, CHECKPOINT_KIND, cfg, net.state_dict(),
                        loss=loss_fn.state_dict(), optimizer=optimizer.state_dict(),
                        epoch=epoch + 1, pid_values=samples.pid_values.tolist(), history=history)
        write_json_atomic(out_dir / HISTORY_NAME, history)
    return history


def make_optimizer(params: list[torch.nn.Parameter], cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """``train.optimizer``: adamw or sgd (momentum 0.9), with ``train.lr``/``weight_decay``."""
    name, lr = cfg.get("optimizer", "adamw"), float(cfg["lr"])
    wd = float(cfg.get("weight_decay", 0))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd, nesterov=True)
    raise PsearchError(f"train.optimizer {name!r}: expected 'adamw' or 'sgd'")


def restore(path: Path, cfg: dict[str, Any], pid_values: np.ndarray, net: torch.nn.Module,
            loss_fn: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, list[dict]]:
    """Load a training checkpoint into the given objects; return (epochs done, history)."""
    payload = load_checkpoint(path, CHECKPOINT_KIND)
    saved = payload.get("config", {})
    for section in ("model", "loss"):
        if saved.get(section) != cfg[section]:
            raise PsearchError(f"{path}: its {section} config differs from this run's; resume "
                               f"with the same config (saved: {saved.get(section)})")
    if list(payload.get("pid_values", [])) != pid_values.tolist():
        raise PsearchError(f"{path}: trained on other identities than this dataset's train split")
    load_net_state(net, payload["model"], path)
    try:
        loss_fn.load_state_dict(payload["loss"])
        optimizer.load_state_dict(payload["optimizer"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise PsearchError(f"{path}: training state does not match ({exc})") from None
    return int(payload["epoch"]), list(payload.get("history", []))


def format_record(record: dict[str, Any]) -> str:
    """One log line for an epoch record."""
    line = f"epoch {record['epoch']}: loss {record['loss']:.4f} ({record['seconds']}s)"
    if "eval" in record:
        ev = record["eval"]
        line += f"; test ({ev['protocol']}, gt boxes): mAP {ev['mAP']:.2%}, top-1 {ev['top1']:.2%}"
    return line
