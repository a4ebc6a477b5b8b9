"""The one training set-up of psearch: a ``Trainer`` base class that every stage subclasses.

A subclass says what is its own: ``resolve`` (its config, strictly), ``build_model``,
``extra_modules`` (e.g. a loss with state), ``build_loader``, ``step`` (a batch -> named loss
terms), and optionally ``build_optimizer``, ``schedule``, ``evaluate`` / ``headline`` and
``extra_state``. The base owns everything else, the same for the detector, re-ID, joint and
QEEPS trainers:

- the run folder ``OUT``: ``last.pt`` (every ``train.checkpoint_every`` epochs and the last),
  ``best.pt`` (the best ``best_metric`` so far, only when the run is evaluated),
  ``history.json`` (one record per epoch, rewritten atomically after each) and ``metrics.json``
  (at the end: epochs, training time, last losses and the last evaluation);
- evaluation on the test split every ``train.eval_every`` epochs (0 or absent: after the last
  one only), unless ``evaluate=False``, the dataset has no test split or the trainer has none;
- the resume rule: ``resume=True`` continues ``OUT/last.pt`` with the checkpoint's config, on the
  same training data (the fingerprint of its images and boxes, ``data_fingerprint``). A config
  or ``--set`` given with it must agree with the saved config on every key but
  ``train.epochs`` (``--epochs``), which may only extend the run; any other difference is a
  one-line ``PsearchError`` naming the key;
- the result (``TrainResult``) and the closing line that every train command prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from psearch.core.config import apply_overrides
from psearch.core.device import resolve_device
from psearch.core.errors import PsearchError
from psearch.core.io import write_json_atomic
from psearch.data.annotations import PersonSearchDataset, data_fingerprint
from psearch.training.loop import (
    BEST_NAME,
    LAST_NAME,
    LrLambda,
    fit,
    prepare_run,
    sgd_optimizer,
    step_decay_schedule,
)

HISTORY_NAME = "history.json"
METRICS_NAME = "metrics.json"
RUN_FILES = (LAST_NAME, BEST_NAME, HISTORY_NAME, METRICS_NAME)
HEADLINE_KEYS = ("mAP", "top1", "detected_mAP", "detected_top1", "ap", "recall")


@dataclass
class TrainResult:
    """What a training run returns: its folder, per-epoch history and final metrics."""

    command: str
    out_dir: Path
    history: list[dict[str, Any]]
    metrics: dict[str, Any]

    def closing_line(self) -> str:
        """The one line every train command ends with: epochs, time, run files, test figures."""
        files = ", ".join(n for n in RUN_FILES if (self.out_dir / n).is_file())
        line = (f"{self.command}: {self.metrics.get('epochs')} epochs, "
                f"{self.metrics.get('train_seconds', 0.0):.0f} s of training; {self.out_dir}: "
                f"{files}")
        ev = next((r["eval"] for r in reversed(self.history) if r.get("eval")), None)
        shown = [f"{k} {v:.1%}" for k, v in (ev or {}).items()
                 if k in HEADLINE_KEYS and isinstance(v, float)]
        return line + (f"; test: {', '.join(shown)}" if shown else "")


class Trainer:
    """Base of every psearch trainer; see the module docstring for what it owns.

    Subclasses set ``kind`` (the checkpoint kind), ``command`` (for messages) and, when they
    evaluate, ``best_metric`` (a key of ``headline``'s result, higher is better).
    """

    kind: ClassVar[str]
    command: ClassVar[str]
    best_metric: ClassVar[str | None] = None

    def __init__(self, dataset: PersonSearchDataset, config: dict[str, Any] | None,
                 out_dir: str | os.PathLike, *, device: str | None = None, resume: bool = False,
                 epochs: int | None = None, overrides: Sequence[str] = (),
                 evaluate: bool = True, progress: bool = True,
                 log: Callable[[str], None] | None = print) -> None:
        self.dataset, self.given, self.out_dir = dataset, config, Path(out_dir)
        self.resume, self.epochs, self.overrides = resume, epochs, tuple(overrides)
        self.evaluating, self.progress = evaluate, progress
        self.log = log or (lambda line: None)
        self.device = resolve_device(device)
        self.config: dict[str, Any] = {}
        self.train: dict[str, Any] = {}
        self.model: nn.Module = nn.Module()

    # ---- what a subclass supplies --------------------------------------------------------

    def resolve(self, config: dict[str, Any]) -> dict[str, Any]:
        """The full config of ``config`` (defaults filled in, unknown keys refused)."""
        raise NotImplementedError

    def check_data(self) -> None:
        """Refuse training data this trainer cannot learn from (one-line ``PsearchError``)."""
        if not self.dataset.train:
            raise PsearchError(f"{self.dataset.root}: the train split has no images")

    def build_model(self, fresh: bool) -> nn.Module:
        """The model to train (``fresh``: not resumed, so pretrained weights may be loaded)."""
        raise NotImplementedError

    def extra_modules(self) -> dict[str, nn.Module]:
        """Modules trained and saved beside the model under their names (e.g. a loss)."""
        return {}

    def build_optimizer(self) -> torch.optim.Optimizer:
        return sgd_optimizer(self.model, self.train)

    def build_loader(self) -> Iterable:
        raise NotImplementedError

    def schedule(self, iters_per_epoch: int) -> LrLambda:
        return step_decay_schedule(self.train, iters_per_epoch)

    def step(self, batch: Any) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def evaluate(self) -> dict[str, Any] | None:
        """The full test-split report, or None for a trainer that does not evaluate."""
        return None

    def headline(self, report: dict[str, Any]) -> dict[str, Any]:
        """The figures of ``report`` kept in the history (``best_metric`` among them)."""
        return report

    def report_metrics(self, report: dict[str, Any]) -> dict[str, Any]:
        """How the last report enters ``metrics.json``."""
        return {"eval": report}

    def extra_state(self) -> dict[str, Any]:
        """Plain values saved in every checkpoint beside the data fingerprint."""
        return {}

    def check_resume(self, payload: dict[str, Any]) -> None:
        """Further checks of the checkpoint to resume (after the model is built)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Runs before each epoch (0-based), e.g. to reseed a sampler."""

    def resume_order(self, loader: Any, epoch: int) -> None:
        """Continue the data order after ``epoch`` epochs as an unbroken run would."""
        torch.manual_seed(int(self.train["seed"]) + epoch)
        generator = getattr(loader, "generator", None)
        if generator is not None:
            generator.manual_seed(int(self.train["seed"]) + epoch)

    # ---- what the base owns --------------------------------------------------------------

    def resume_config(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint's config; a given config or ``--set`` may only extend train.epochs."""
        saved = self.resolve(payload["config"])
        given = self.given if self.given is not None else payload["config"]
        given = self.resolve(apply_overrides(given, self.overrides))
        if self.epochs is not None:
            given["train"]["epochs"] = self.epochs
        last = self.out_dir / LAST_NAME
        for key, old, new in _differences(saved, given):
            if key != "train.epochs":
                raise PsearchError(f"{last}: --resume continues the saved run with its config; "
                                   f"{key} differs (saved {old!r}, given {new!r}); only "
                                   f"train.epochs (--epochs) may change")
        epochs, done = int(given["train"]["epochs"]), int(payload["epoch"])
        if epochs < done:
            raise PsearchError(f"{last}: train.epochs {epochs}: the run already has {done} "
                               f"epochs; --resume can only extend it")
        saved["train"]["epochs"] = epochs
        return saved

    def run(self) -> TrainResult:
        """Train (or resume) and write the run files; return the ``TrainResult``."""
        self.check_data()
        fingerprint = data_fingerprint(self.dataset.train)
        payload = prepare_run(self.out_dir, self.kind, self.resume, fingerprint,
                              str(self.dataset.root))
        if payload is not None:
            self.config = self.resume_config(payload)
        else:
            self.config = self.resolve(apply_overrides(self.given or {}, self.overrides))
            if self.epochs is not None:
                self.config["train"]["epochs"] = self.epochs
        train = self.train = self.config["train"]
        torch.manual_seed(int(train["seed"]))
        self.model = self.build_model(payload is None).to(self.device)
        modules = {name: m.to(self.device) for name, m in self.extra_modules().items()}
        optimizer = self.build_optimizer()
        loader = self.build_loader()
        if payload is not None:
            self.check_resume(payload)
            self.resume_order(loader, int(payload["epoch"]))
            self.log(f"{self.command}: resuming {self.out_dir / LAST_NAME} after epoch "
                     f"{payload['epoch']}")
        reports: list[dict[str, Any]] = []

        def evaluate_now() -> dict[str, Any]:
            self.model.eval()  # fit puts it back in training mode for the next epoch
            reports.append(self.evaluate() or {})
            return self.headline(reports[-1])

        evaluating = (self.evaluating and bool(self.dataset.gallery)
                      and type(self).evaluate is not Trainer.evaluate)
        state = {"data_fingerprint": fingerprint,
                 "data": {"root": str(self.dataset.root), "name": self.dataset.name,
                          "train_images": len(self.dataset.train)}}
        history = fit(out_dir=self.out_dir, kind=self.kind, config=self.config, model=self.model,
                      optimizer=optimizer, loader=loader, step=self.step,
                      lr_lambda=self.schedule(len(loader)), epochs=int(train["epochs"]),
                      clip_grad_norm=train.get("clip_grad_norm"), resume_payload=payload,
                      extra_modules=modules, extra_state=lambda: {**state, **self.extra_state()},
                      evaluate=evaluate_now if evaluating else None,
                      eval_every=int(train.get("eval_every") or 0) or int(train["epochs"]),
                      best_metric=self.best_metric, on_epoch_start=self.on_epoch_start,
                      on_epoch_end=self._write_history,
                      checkpoint_every=int(train.get("checkpoint_every", 1)),
                      keep_epochs=bool(train.get("keep_epochs", False)),
                      progress=self.progress, log=self.log)
        self._write_history(history)
        final = history[-1] if history else {}
        metrics: dict[str, Any] = {
            "epochs": int(train["epochs"]),
            "train_seconds": round(sum(r.get("seconds", 0.0) for r in history), 1),
            "losses": {"loss": final.get("loss"), **final.get("losses", {})},
            **self.final_metrics()}
        if evaluating:
            if not reports:  # a resume with no epoch left to train
                evaluate_now()
            metrics.update(self.report_metrics(reports[-1]))
        write_json_atomic(self.out_dir / METRICS_NAME, metrics)
        return TrainResult(self.command, self.out_dir, history, metrics)

    def final_metrics(self) -> dict[str, Any]:
        """Extra facts of the run for ``metrics.json`` (e.g. pairs per epoch)."""
        return {}

    def _write_history(self, history: list[dict[str, Any]]) -> None:
        write_json_atomic(self.out_dir / HISTORY_NAME, history)


def detection_batch(batch: tuple[list, list], device: torch.device
                    ) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """A detection batch (uint8 images, targets) on ``device``, images as floats in [0, 1]."""
    images = [img.to(device, non_blocking=True).float().div_(255) for img in batch[0]]
    return images, [{k: v.to(device) for k, v in t.items()} for t in batch[1]]


def _differences(a: Any, b: Any, where: str = "") -> Iterable[tuple[str, Any, Any]]:
    """(dotted key, a's value, b's value) of every leaf where two configs differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            yield from _differences(a.get(key), b.get(key), f"{where}.{key}" if where else key)
    elif _plain(a) != _plain(b):
        yield where, a, b


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
