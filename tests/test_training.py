"""The shared training loop (psearch.training.loop) and the strict config resolver
(psearch.core.config)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from psearch.core.checkpoint import load_checkpoint
from psearch.core.config import resolve_config, stage_config
from psearch.core.errors import PsearchError
from psearch.training.loop import fit, prepare_run, warmup_cosine, warmup_step_decay


def test_lr_warms_up_linearly_then_steps_down() -> None:
    factor = warmup_step_decay(100, warmup_iters=10, warmup_factor=0.1, lr_steps=[2], gamma=0.1)
    assert factor(0) == pytest.approx(0.1)
    assert factor(5) == pytest.approx(0.55)
    assert factor(150) == pytest.approx(1.0)
    assert factor(200) == pytest.approx(0.1)


def test_cosine_warms_up_then_decays_to_zero() -> None:
    factor = warmup_cosine(total_iters=110, warmup_iters=10)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0) and factor(60) == pytest.approx(0.5)
    assert factor(110) == pytest.approx(0.0, abs=1e-12)


class Counter(nn.Module):
    """A module with a buffer, standing in for a loss with a memory (OIM's lookup table)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros(()))


def regression_run(tmp_path, epochs, payload=None, evaluate=None, **kwargs):
    torch.manual_seed(0)
    model, counter = nn.Linear(3, 1), Counter()
    x = torch.randn(32, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 32, 8)]

    def step(batch):
        counter.seen += 1
        return {"loss_mse": ((model(batch[0]) - batch[1]) ** 2).mean()}

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    history = fit(out_dir=tmp_path, kind="toy", config={"toy": True}, model=model,
                  optimizer=optimizer, loader=batches, step=step,
                  lr_lambda=lambda it: 1.0, epochs=epochs, resume_payload=payload,
                  extra_modules={"counter": counter}, extra_state={"note": "kept"},
                  evaluate=evaluate, progress=False, **kwargs)
    return history, model, counter


def test_fit_trains_checkpoints_and_resumes_exactly(tmp_path) -> None:
    full, full_model, _ = regression_run(tmp_path / "full", epochs=3)
    assert full[-1]["loss"] < 0.5 * full[0]["loss"]
    assert set(full[0]) >= {"epoch", "loss", "losses", "lr", "seconds"}

    regression_run(tmp_path / "part", epochs=2)
    with pytest.raises(PsearchError, match="--resume"):
        prepare_run(tmp_path / "part", "toy", resume=False)
    payload = prepare_run(tmp_path / "part", "toy", resume=True)
    assert payload["epoch"] == 2 and payload["note"] == "kept" and payload["counter"]["seen"] == 8
    resumed, model, counter = regression_run(tmp_path / "part", epochs=3, payload=payload)
    assert [r["epoch"] for r in resumed] == [1, 2, 3] and counter.seen == 12
    assert torch.allclose(model.weight, full_model.weight)  # same as an unbroken run
    assert not (tmp_path / "part" / "epoch_1.pt").exists()


def test_fit_keeps_the_best_evaluation_and_epoch_files_on_request(tmp_path) -> None:
    scores = iter([0.3, 0.7, 0.5])
    history, _, _ = regression_run(tmp_path, epochs=3, evaluate=lambda: {"mAP": next(scores)},
                                   eval_every=1, best_metric="mAP", keep_epochs=True)
    assert [r["eval"]["mAP"] for r in history] == [0.3, 0.7, 0.5]
    assert load_checkpoint(tmp_path / "best.pt", "toy")["epoch"] == 2
    assert load_checkpoint(tmp_path / "last.pt", "toy")["epoch"] == 3
    assert all((tmp_path / f"epoch_{n}.pt").is_file() for n in (1, 2, 3))


def test_fit_stops_on_a_diverging_loss_with_one_line(tmp_path) -> None:
    model = nn.Linear(2, 1)
    with pytest.raises(PsearchError, match="diverged"):
        fit(out_dir=tmp_path, kind="toy", config={}, model=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loader=[torch.ones(1, 2)],
            step=lambda b: {"loss": model(b).sum() * math.inf}, lr_lambda=lambda it: 1.0,
            epochs=1, progress=False)
    assert not (tmp_path / "last.pt").exists()


def test_resume_of_another_kind_or_nothing_is_refused(tmp_path) -> None:
    with pytest.raises(PsearchError, match="nothing to resume"):
        prepare_run(tmp_path, "toy", resume=True)
    regression_run(tmp_path, epochs=1)
    with pytest.raises(PsearchError, match="expected a 'reid' checkpoint"):
        prepare_run(tmp_path, "reid", resume=True)


DEFAULTS = {"model": {"backbone": "resnet18", "timm_kwargs": {}}, "train": {"epochs": 2}}


def test_resolver_fills_defaults_and_names_unknown_keys() -> None:
    cfg = resolve_config(DEFAULTS, {"train": {"epochs": 5}, "model": {"timm_kwargs": {"x": 1}}})
    assert cfg == {"model": {"backbone": "resnet18", "timm_kwargs": {"x": 1}},
                   "train": {"epochs": 5}}
    with pytest.raises(PsearchError, match=r"^train\.epoch: unknown config key"):
        resolve_config(DEFAULTS, {"train": {"epoch": 5}})
    with pytest.raises(PsearchError, match=r"^optim: unknown config key"):
        resolve_config(DEFAULTS, {"optim": {}})
    with pytest.raises(PsearchError, match="expected a mapping"):
        resolve_config(DEFAULTS, {"model": 3})


def test_stage_config_reads_preset_then_overrides(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  epochs: 7\n")
    assert stage_config(DEFAULTS, path, ["model.backbone=resnet50"]) == {
        "model": {"backbone": "resnet50", "timm_kwargs": {}}, "train": {"epochs": 7}}
    with pytest.raises(PsearchError, match="model.backbon"):
        stage_config(DEFAULTS, path, ["model.backbon=resnet50"])
