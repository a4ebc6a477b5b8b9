"""The results .npz format (save, load, validation) and the ``psearch evaluate`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from psearch.cli.main import main
from psearch.core.errors import PsearchError
from psearch.evaluation import SearchResults, load_results, save_results

RNG = np.random.default_rng(0)


def unit(n, d=4):
    f = RNG.normal(size=(n, d)).astype(np.float32)
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def sample_results(n_queries=2):
    return SearchResults.from_per_image(
        {
            "a.jpg": (np.array([[0, 0, 10, 20], [5, 5, 15, 25]]), np.array([0.9, 0.4]), unit(2)),
            "b.jpg": (np.zeros((0, 4)), np.zeros(0), np.zeros((0, 4))),
            "c.jpg": (np.array([[1, 2, 3, 4]]), np.array([0.7]), unit(1)),
        },
        unit(n_queries),
    )


def test_save_and_load_round_trip(tmp_path):
    results = sample_results()
    save_results(tmp_path / "R.npz", results)
    loaded = load_results(tmp_path / "R.npz")
    assert loaded.image_names.tolist() == ["a.jpg", "b.jpg", "c.jpg"]
    assert loaded.det_image.tolist() == [0, 0, 2]
    for name in ("boxes", "scores", "features", "query_features"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(results, name))
    assert [p.name for p in tmp_path.iterdir()] == ["R.npz"]  # no temporary file left behind


def test_detection_only_results_round_trip(tmp_path):
    results = SearchResults.from_per_image({"a.jpg": ([[0, 0, 10, 20]], [0.9])})
    save_results(tmp_path / "R.npz", results)
    loaded = load_results(tmp_path / "R.npz")
    assert not loaded.has_features
    assert loaded.boxes.shape == (1, 4)


def corrupt(tmp_path, drop=(), **replace):
    results = sample_results()
    save_results(tmp_path / "R.npz", results)
    with np.load(tmp_path / "R.npz") as npz:
        arrays = {k: npz[k] for k in npz.files if k not in drop}
    arrays.update(replace)
    np.savez(tmp_path / "bad.npz", **arrays)
    return tmp_path / "bad.npz"


@pytest.mark.parametrize(
    "drop, replace, message",
    [
        (("boxes",), {}, "missing array 'boxes'"),
        (("features",), {}, "features and query_features must come together"),
        ((), {"query_features": unit(2, d=3)}, "dimension 3 but detection features have 4"),
        ((), {"features": np.full((3, 4), np.nan, np.float32)}, "features has non-finite"),
        ((), {"features": 2 * unit(3)}, "must be L2-normalized"),
        ((), {"det_image": np.array([0, 0, 7])}, "det_image points outside image_names"),
        ((), {"scores": np.zeros(2, np.float32)}, r"scores has shape \(2,\), expected \(3,\)"),
        ((), {"boxes": np.zeros((3, 5), np.float32)}, r"boxes has shape \(3, 5\)"),
    ],
)
def test_load_rejects_bad_files_with_one_line(tmp_path, drop, replace, message):
    with pytest.raises(PsearchError, match=message) as info:
        load_results(corrupt(tmp_path, drop, **replace))
    assert "\n" not in str(info.value)
    assert "bad.npz" in str(info.value)


def test_load_rejects_missing_and_garbage_files(tmp_path):
    with pytest.raises(PsearchError, match="no such results file"):
        load_results(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(PsearchError, match="not a readable .npz"):
        load_results(tmp_path / "junk.npz")


@pytest.mark.parametrize(
    "detections, message",
    [
        ({"a.jpg": ([[0, 0, 1, 1]],)}, "expected \\(boxes, scores\\[, features\\]\\)"),
        ({"a.jpg": ([[0, 0, 1, 1]], [0.9, 0.8])}, "boxes of shape \\(1, 4\\) for 2 scores"),
        ({"a.jpg": ([[0, 0, 1, 1]], [0.9], unit(2))}, "features of shape \\(2, 4\\) for 1 scores"),
        (
            {"a.jpg": ([[0, 0, 1, 1]], [0.9], unit(1)), "b.jpg": ([[0, 0, 1, 1]], [0.9])},
            "some images have features and others do not",
        ),
    ],
)
def test_per_image_detections_are_checked_per_image(detections, message):
    with pytest.raises(PsearchError, match=message):
        SearchResults.from_per_image(detections, unit(1))


# --- the command ------------------------------------------------------------------------------


@pytest.fixture
def folder_dataset(tmp_path):
    """Four test images from two cameras; person 7 is queried from a.jpg."""
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    images = [
        {"file": "a.jpg", "split": "test", "camera": 1, "boxes": [[0, 0, 50, 100]], "pids": [7]},
        {"file": "b.jpg", "split": "test", "camera": 2, "boxes": [[10, 0, 60, 100]], "pids": [7]},
        {"file": "c.jpg", "split": "test", "camera": 2, "boxes": [[0, 0, 50, 90]], "pids": [-1]},
        {"file": "d.jpg", "split": "test", "camera": 1, "boxes": [[0, 0, 40, 80]], "pids": [7]},
    ]
    for im in images:
        (root / "images" / im["file"]).write_bytes(b"")
    queries = [{"image": "a.jpg", "box": [0, 0, 50, 100], "pid": 7}]
    (root / "annotations.json").write_text(
        json.dumps({"name": "tiny", "image_dir": "images", "images": images, "queries": queries})
    )
    return root


def test_evaluate_command_prints_table_and_writes_json(tmp_path, folder_dataset, capsys):
    q = np.array([[1.0, 0.0]], np.float32)
    results = SearchResults.from_per_image(
        {
            "b.jpg": ([[10, 0, 60, 100]], [0.9], [[0.6, 0.8]]),  # the match, similarity 0.6
            "c.jpg": ([[0, 0, 50, 90]], [0.9], [[0.8, 0.6]]),  # a stranger, similarity 0.8
        },
        q,
    )
    save_results(tmp_path / "R.npz", results)
    main(["evaluate", "--data", str(folder_dataset), "--results", str(tmp_path / "R.npz"),
          "--out", str(tmp_path / "eval.json")])  # fmt: skip
    out, err = capsys.readouterr()
    # all cameras: ranking 0.8 (no), 0.6 (yes) with d.jpg undetected: AP = 1/2 * 1/2
    assert "| all-cameras | 25.0 | 0.0 | 100.0 | 100.0 | 1 |" in out
    # cross-camera keeps b and c only: same ranking, one person to find: AP 1/2
    assert "| cross-camera | 50.0 | 0.0 | 100.0 | 100.0 | 1 |" in out
    assert "2 test image(s) are not in" in err
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["search"]["all-cameras"]["mAP"] == pytest.approx(0.25)
    assert report["detection"]["all"]["recall"] == pytest.approx(2 / 4)


def test_evaluate_command_rejects_wrong_query_count(tmp_path, folder_dataset, capsys):
    save_results(tmp_path / "R.npz", sample_results(n_queries=3))
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--data", str(folder_dataset), "--results", str(tmp_path / "R.npz")])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
