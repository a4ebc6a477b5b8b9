"""End to end on the generated worlds: perfect results score 100%, and ``psearch evaluate``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from psearch.cli.main import main
from psearch.data import UNLABELED_PID, load_dataset
from psearch.evaluation import SearchResults, evaluate, save_results


def perfect_results(dataset):
    """Every person detected exactly, with a one-hot feature per identity.

    Labeled people score 1.0; unlabeled ones 0.9 with one-hot features of their own, orthogonal
    to every identity.
    """
    pids = sorted({int(p) for r in dataset.gallery for p in r.pids if p != UNLABELED_PID})
    n_unlabeled = sum(int((r.pids == UNLABELED_PID).sum()) for r in dataset.gallery)
    eye = np.eye(len(pids) + n_unlabeled, dtype=np.float32)
    column = {pid: i for i, pid in enumerate(pids)}
    next_free = len(pids)
    detections = {}
    for record in dataset.gallery:
        feats = []
        for pid in record.pids.tolist():
            if pid == UNLABELED_PID:
                feats.append(eye[next_free])
                next_free += 1
            else:
                feats.append(eye[column[pid]])
        feats = np.array(feats, np.float32).reshape(-1, eye.shape[1])
        scores = np.where(record.pids == UNLABELED_PID, 0.9, 1.0)
        detections[record.name] = (record.boxes, scores, feats)
    query_feats = np.stack([eye[column[q.pid]] for q in dataset.queries])
    return SearchResults.from_per_image(detections, query_feats)


@pytest.mark.parametrize("world, fmt", [("cuhk_world", "cuhk"), ("prw_world", "prw")])
def test_perfect_results_score_100_percent(world, fmt, request):
    dataset = load_dataset(request.getfixturevalue(world), fmt)
    report = evaluate(dataset, perfect_results(dataset))
    expected = ["gallery-10", "gallery-20"] if fmt == "cuhk" else ["all-cameras", "cross-camera"]
    assert list(report["search"]) == expected
    for metrics in report["search"].values():
        assert metrics["queries"] > 0
        assert (metrics["mAP"], metrics["top1"], metrics["top10"]) == (1.0, 1.0, 1.0)
    for metrics in report["detection"].values():
        assert (metrics["ap"], metrics["recall"]) == (1.0, 1.0)


def test_evaluate_command_on_the_cuhk_world(cuhk_world, tmp_path, capsys):
    dataset = load_dataset(cuhk_world, "cuhk")
    results = perfect_results(dataset)
    # the detector misses the first query's identity everywhere: its queries score 0
    pid = dataset.queries[0].pid
    results.scores[results.features @ results.query_features[0] > 0.5] = 0.0
    save_results(tmp_path / "R.npz", results)
    main(["evaluate", "--data", str(cuhk_world), "--results", str(tmp_path / "R.npz"),
          "--gallery-sizes", "20", "--out", str(tmp_path / "eval.json")])  # fmt: skip
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "eval.json").read_text())
    n = len(dataset.queries)
    queries_of_pid = sum(q.pid == pid for q in dataset.queries)
    assert list(report["search"]) == ["gallery-20"]
    assert report["search"]["gallery-20"]["mAP"] == pytest.approx((n - queries_of_pid) / n)
    assert f"| gallery-20 | {100 * (n - queries_of_pid) / n:.1f} |" in out
