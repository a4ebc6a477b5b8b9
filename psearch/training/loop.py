"""The one training loop of psearch: the detector, the re-ID network and the joint models use it.

A trainer supplies what is its own (model, optimizer, data loader, a ``step`` that turns a batch
into named loss terms, a learning-rate schedule, an evaluation hook) and ``fit`` does the rest:

- each iteration: sum the loss terms, stop on a non-finite loss with a one-line error, backward,
  clip the gradient norm, optimizer and learning-rate steps;
- a progress bar per epoch with the running mean of each loss term and the learning rate;
- ``evaluate()`` every ``eval_every`` epochs and after the last one, recorded in the history;
- checkpoints: ``OUT/last.pt`` every ``checkpoint_every`` epochs and after the last one (config,
  model, optimizer and scheduler state, epoch, history, the trainer's extra modules and state);
  ``OUT/best.pt`` whenever ``evaluate()``'s ``best_metric`` improves; ``OUT/epoch_N.pt`` too
  only with ``keep_epochs``. All are written atomically;
- resume: ``prepare_run(out, kind, resume=True)`` returns the saved payload, the trainer checks
  that it fits its data, and ``fit(..., resume_payload=payload)`` continues after its epoch.

>>> payload = prepare_run(out, "reid", resume)
>>> history = fit(out_dir=out, kind="reid", config=cfg, model=net, optimizer=opt, loader=loader,
...               step=lambda batch: {"loss_oim": ...}, lr_lambda=warmup_cosine(...), epochs=20,
...               resume_payload=payload)
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from psearch.core.checkpoint import load_checkpoint, save_checkpoint
from psearch.core.errors import PsearchError
from psearch.core.progress import progress_bar

LAST_NAME = "last.pt"
BEST_NAME = "best.pt"

LrLambda = Callable[[int], float]
"""Multiplier of the base learning rates at a global iteration (``LambdaLR``'s function)."""


SGD_TRAIN_DEFAULTS: dict[str, Any] = {
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
    "checkpoint_every": 1,  # epochs between checkpoints (the last epoch always writes one)
    "keep_epochs": False,  # also keep DIR/epoch_N.pt of every checkpoint
}
"""The ``train`` keys of the detection-style trainers (detector, joint models): SGD with
momentum, warm-up and step decay (``sgd_optimizer``, ``step_decay_schedule``)."""


def prepare_run(out_dir: str | os.PathLike, kind: str, resume: bool,
                fingerprint: str | None = None, data: str = "this data"
                ) -> dict[str, Any] | None:
    """Check the run folder before training: the checkpoint to resume (``resume=True``), or None.

    A fresh run refuses a folder that already holds a run (it would be overwritten), a resumed
    one needs ``OUT/last.pt`` of the same ``kind`` and, given a ``fingerprint`` of the training
    data, the same one (a resume on other data would silently mix runs); each failure is a
    one-line ``PsearchError``.
    """
    last = Path(out_dir) / LAST_NAME
    if resume:
        if not last.is_file():
            raise PsearchError(f"{last}: nothing to resume (no checkpoint); drop --resume")
        payload = load_checkpoint(last, kind=kind)
        saved = payload.get("data_fingerprint")  # absent in older re-ID checkpoints
        if fingerprint is not None and saved is not None and saved != fingerprint:
            raise PsearchError(f"{last}: was trained on other data than {data} (fingerprint "
                               "differs); use another --out to start afresh")
        return payload
    if last.is_file():
        raise PsearchError(f"{last}: a training run is already here; pass --resume to continue "
                           "it or choose another --out")
    return None


def warmup_step_decay(iters_per_epoch: int, warmup_iters: int, warmup_factor: float,
                      lr_steps: Iterable[int], gamma: float) -> LrLambda:
    """Linear warm-up from ``warmup_factor`` over ``warmup_iters``, then x``gamma`` after each
    epoch listed in ``lr_steps`` (torchvision's detection recipe)."""
    steps = list(lr_steps)

    def factor(iteration: int) -> float:
        scale = 1.0
        if iteration < warmup_iters:
            alpha = iteration / warmup_iters
            scale = warmup_factor * (1 - alpha) + alpha
        epoch = iteration // max(1, iters_per_epoch)
        return scale * gamma ** sum(epoch >= step for step in steps)

    return factor


def sgd_optimizer(model: nn.Module, train: Mapping[str, Any]) -> torch.optim.SGD:
    """SGD with ``train``'s lr, momentum and weight decay over the trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=train["lr"], momentum=train["momentum"],
                           weight_decay=train["weight_decay"])


def step_decay_schedule(train: Mapping[str, Any], iters_per_epoch: int) -> LrLambda:
    """``warmup_step_decay`` with the warm-up and decay keys of a ``train`` section."""
    return warmup_step_decay(iters_per_epoch, train["warmup_iters"], train["warmup_factor"],
                             train["lr_steps"], train["gamma"])


def warmup_cosine(total_iters: int, warmup_iters: int) -> LrLambda:
    """Linear warm-up over ``warmup_iters`` (from 1/warmup), then cosine decay to 0 at
    ``total_iters``."""

    def factor(iteration: int) -> float:
        if iteration < warmup_iters:
            return (iteration + 1) / warmup_iters
        done = (iteration - warmup_iters) / max(1, total_iters - warmup_iters)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    return factor


def fit(*, out_dir: str | os.PathLike, kind: str, config: dict[str, Any], model: nn.Module,
        optimizer: torch.optim.Optimizer, loader: Iterable, step: Callable[[Any], Mapping],
        lr_lambda: LrLambda, epochs: int, clip_grad_norm: float | None = None,
        resume_payload: dict[str, Any] | None = None,
        extra_modules: Mapping[str, nn.Module] | None = None,
        extra_state: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
        evaluate: Callable[[], dict[str, Any]] | None = None, eval_every: int = 0,
        best_metric: str | None = None, on_epoch_start: Callable[[int], None] | None = None,
        on_epoch_end: Callable[[list[dict[str, Any]]], None] | None = None,
        checkpoint_every: int = 1, keep_epochs: bool = False, progress: bool = True,
        log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Train ``model`` for ``epochs`` epochs (in all, counting resumed ones); return the history.

    ``step(batch)`` runs the forward pass and returns the loss terms ``{name: scalar tensor}``;
    their sum is minimised. ``extra_modules`` (e.g. a loss with buffers) are switched to training
    mode with the model and saved under their own names; ``extra_state`` (a mapping, or a
    function returning one at save time) is saved as is. Each history record holds ``epoch``,
    ``loss`` (mean total), ``losses`` (mean of each term), ``lr``, ``seconds`` and, on evaluation
    epochs, ``eval``. ``on_epoch_start(epoch)`` (0-based) runs before each epoch, e.g. to seed a
    sampler; ``on_epoch_end(history)`` after each epoch's checkpoints.
    """
    out_dir = Path(out_dir)
    modules = dict(extra_modules or {})
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    start_epoch, seconds, history = 0, 0.0, []
    best = -math.inf
    if resume_payload is not None:
        start_epoch, seconds, history = _restore(resume_payload, model, modules, optimizer,
                                                 scheduler, kind)
        # The schedule may depend on ``epochs``, which a resume can extend: the next step's
        # learning rate comes from this run's schedule, not the saved one.
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
            group["lr"] = base * lr_lambda(scheduler.last_epoch)
        best = max((r["eval"][best_metric] for r in history
                    if best_metric and best_metric in r.get("eval", {})), default=-math.inf)

    def save(path: Path, epoch: int) -> None:
        state = extra_state() if callable(extra_state) else dict(extra_state or {})
        save_checkpoint(path, kind, config, model.state_dict(), **state,
                        **{name: m.state_dict() for name, m in modules.items()},
                        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                        epoch=epoch, train_seconds=seconds, history=history)

    for epoch in range(start_epoch, epochs):
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        tic = time.perf_counter()
        means = _train_epoch(model, modules.values(), optimizer, scheduler, loader, step,
                             clip_grad_norm, f"epoch {epoch + 1}/{epochs}", progress)
        seconds += time.perf_counter() - tic
        record: dict[str, Any] = {"epoch": epoch + 1, "loss": means.pop("loss"), "losses": means,
                                  "lr": scheduler.get_last_lr()[0],
                                  "seconds": round(time.perf_counter() - tic, 1)}
        last_epoch = epoch + 1 == epochs
        if evaluate is not None and eval_every and ((epoch + 1) % eval_every == 0 or last_epoch):
            record["eval"] = evaluate()
        history.append(record)
        if log is not None:
            log(format_record(record))
        if last_epoch or (epoch + 1) % max(1, checkpoint_every) == 0:
            save(out_dir / LAST_NAME, epoch + 1)
            if keep_epochs:
                save(out_dir / f"epoch_{epoch + 1}.pt", epoch + 1)
        score = record.get("eval", {}).get(best_metric) if best_metric else None
        if score is not None and score > best:
            best = score
            save(out_dir / BEST_NAME, epoch + 1)
        if on_epoch_end is not None:
            on_epoch_end(history)
    return history


def _train_epoch(model: nn.Module, extra: Iterable[nn.Module], optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LambdaLR, loader: Iterable,
                 step: Callable[[Any], Mapping], clip_grad_norm: float | None, desc: str,
                 progress: bool) -> dict[str, float]:
    """One pass over ``loader``; the mean of the total loss ("loss") and of each term."""
    model.train()
    for module in extra:
        module.train()
    sums: dict[str, float] = {}
    count = 0
    bar = progress_bar(loader, enabled=progress, desc=desc, unit="batch", leave=False)
    for batch in bar:
        terms = dict(step(batch))
        loss = sum(terms.values())
        if not torch.isfinite(loss):
            raise PsearchError(f"training diverged ({desc}, iteration {count + 1}: loss "
                               f"{loss.item()}); lower train.lr or lengthen the warm-up")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_grad_norm:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        optimizer.step()
        scheduler.step()
        count += 1
        for name, value in (("loss", loss), *terms.items()):
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        bar.set_postfix({k.removeprefix("loss_"): f"{v / count:.3f}" for k, v in sums.items()},
                        lr=f"{scheduler.get_last_lr()[0]:.2g}")
    bar.close()
    if count == 0:
        raise PsearchError("the training data gave no batch (too few images for one batch?)")
    return {name: total / count for name, total in sums.items()}


def _restore(payload: dict[str, Any], model: nn.Module, modules: dict[str, nn.Module],
             optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR,
             kind: str) -> tuple[int, float, list[dict[str, Any]]]:
    """Load a checkpoint's training state; (epochs done, seconds, history)."""
    try:
        model.load_state_dict(payload["model"])
        for name, module in modules.items():
            module.load_state_dict(payload[name])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
    except (KeyError, ValueError, RuntimeError) as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else repr(exc)
        raise PsearchError(f"the {kind} checkpoint to resume does not match this model and "
                           f"config ({detail})") from None
    return (int(payload["epoch"]), float(payload.get("train_seconds", 0.0)),
            list(payload.get("history", [])))


def format_record(record: dict[str, Any]) -> str:
    """One log line for an epoch record: losses, time and the evaluation's headline figures."""
    line = f"epoch {record['epoch']}: loss {record['loss']:.4f}"
    terms = record.get("losses", {})
    if len(terms) > 1:
        line += " (" + ", ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in terms.items())
        line += ")"
    line += f", {record['seconds']}s"
    ev = record.get("eval")
    if ev:
        shown = [f"{k} {v:.2%}" for k, v in ev.items()
                 if k in ("mAP", "top1", "ap", "recall") and isinstance(v, float)]
        label = f"test ({ev['protocol']}, gt boxes)" if "protocol" in ev else "test"
        line += f"; {label}: " + ", ".join(shown)
    return line
