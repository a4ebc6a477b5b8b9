"""The one Trainer: every trainer kind writes the same run files and follows one resume rule."""

from __future__ import annotations

import json

import pytest
from support import TINY_MODEL, TINY_SETS

from psearch.core.checkpoint import load_checkpoint
from psearch.core.errors import PsearchError
from psearch.data import load_dataset
from psearch.detector.train import DEFAULTS, train_detector
from psearch.joint.train import train_joint
from psearch.reid.train import train_reid
from psearch.training.trainer import RUN_FILES

TINY_DET = {"model": TINY_MODEL,
            "train": {"epochs": 1, "batch_size": 4, "lr": 0.01, "warmup_iters": 2,
                      "lr_steps": []}}
TINY_REID = {"model": {"backbone": "test_resnet", "input_size": [64, 32]},
             "data": {"p": 4, "k": 2, "unlabeled_per_batch": 4},
             "train": {"epochs": 1, "eval_every": 1}}


def small(world):
    dataset = load_dataset(world, "cuhk")
    dataset.train = dataset.train[:8]  # 2 detector iterations
    return dataset


@pytest.mark.parametrize("kind", ["detector", "reid", "joint"])
def test_every_trainer_writes_the_same_run_files(kind, cuhk_world, tmp_path) -> None:
    out = tmp_path / kind
    dataset = small(cuhk_world)
    common = {"device": "cpu", "progress": False, "log": None}
    if kind == "detector":
        result = train_detector(dataset, TINY_DET, out, **common)
    elif kind == "reid":
        result = train_reid(dataset, TINY_REID, out, **common)
    else:
        result = train_joint(dataset, None, out, overrides=TINY_SETS, **common)
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)
    history = json.loads((out / "history.json").read_text())
    assert history == json.loads(json.dumps(result.history)) and len(history) == 1
    assert "eval" in history[0]  # evaluated after the last epoch
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and set(metrics["losses"]) >= {"loss"}
    assert result.out_dir == out and load_checkpoint(out / "best.pt", kind)["epoch"] == 1
    line = result.closing_line()
    assert line.startswith(f"train-{kind}: 1 epochs") and "last.pt, best.pt" in line
    assert "; test: " in line


def test_resume_uses_the_checkpoint_config_and_may_only_extend_epochs(cuhk_world,
                                                                      tmp_path) -> None:
    out, dataset = tmp_path / "run", small(cuhk_world)
    opts = {"device": "cpu", "progress": False, "log": None, "evaluate": False}
    train_detector(dataset, TINY_DET, out, **opts)
    with pytest.raises(PsearchError, match=r"train\.lr differs \(saved 0\.01, given 0\.5\)"):
        train_detector(dataset, None, out, resume=True, overrides=["train.lr=0.5"], **opts)
    with pytest.raises(PsearchError, match=r"model\.\w+ differs"):  # another config
        train_detector(dataset, DEFAULTS, out, resume=True, epochs=2, **opts)
    assert load_checkpoint(out / "last.pt")["epoch"] == 1  # refusals keep the run
    result = train_detector(dataset, TINY_DET, out, resume=True,
                            overrides=["train.epochs=2", "train.lr=0.01"], **opts)
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert load_checkpoint(out / "last.pt")["config"]["train"]["epochs"] == 2
    with pytest.raises(PsearchError, match="can only extend"):
        train_detector(dataset, None, out, resume=True, epochs=1, **opts)
