"""Re-ID on Market-1501 crop sets: the protocol behind evaluate_gt_boxes, train-reid end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from psearch.baselines import ColorHistogramEmbedder
from psearch.cli.main import main
from psearch.core.media import read_image
from psearch.data import load_dataset
from psearch.data.synth import generate_world
from psearch.evaluation.market import evaluate_market_dataset
from psearch.reid.evaluate import evaluate_gt_boxes
from psearch.training.loop import LAST_NAME


@pytest.fixture(scope="module")
def market_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("market_world")
    generate_world(root, "market", seed=3, preset="tiny")
    return root


def test_gt_box_evaluation_of_a_crop_set_is_the_market_protocol(market_world):
    dataset = load_dataset(market_world, "market")
    colour = ColorHistogramEmbedder()
    report = evaluate_gt_boxes(colour, dataset)
    assert report["protocol"] == "market"
    # the same figures from every crop embedded whole, straight through the protocol
    gallery = colour.embed_crops([read_image(r.path) for r in dataset.gallery])
    queries = colour.embed_crops([read_image(dataset.image(q.image).path)
                                  for q in dataset.queries])
    direct = evaluate_market_dataset(dataset, gallery, queries)
    assert {k: report[k] for k in direct} == pytest.approx(direct)
    assert direct["queries"] + direct["skipped_queries"] == len(dataset.queries)
    assert 0 < report["mAP"] < 1


def test_train_reid_on_market_crops(market_world, tmp_path, capsys):
    out = tmp_path / "reid"
    main(["train-reid", "--data", str(market_world), "--format", "market", "--out", str(out),
          "--epochs", "2", "--set", "model.backbone=test_resnet", "--set", "data.p=4",
          "--set", "data.k=2", "--set", "train.eval_every=1", "--device", "cpu", "--quiet"])
    printed = capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 2 and (out / LAST_NAME).is_file()
    assert all(h["eval"]["protocol"] == "market" for h in history)
    assert np.isfinite(history[-1]["loss"]) and 0 <= history[-1]["eval"]["mAP"] <= 1
    assert "test (market, gt boxes)" in printed
    n_train = len(load_dataset(market_world, "market").train)
    assert f"train-reid: {n_train} crops ({n_train} labeled" in printed  # crops as they are


def test_the_search_protocols_refuse_a_crop_set(market_world):
    from psearch.core.errors import PsearchError
    from psearch.evaluation import search_protocols

    with pytest.raises(PsearchError, match="crop dataset"):
        search_protocols(load_dataset(market_world, "market"))
