"""Scoring a gallery directory with the standard protocols (``psearch evaluate-gallery``)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from psearch.baselines import ColorHistogramEmbedder
from psearch.core.errors import PsearchError
from psearch.core.media import read_image, write_image
from psearch.data import load_dataset
from psearch.evaluation import evaluate
from psearch.gallery.rows import Rows
from psearch.gallery.store import Gallery
from psearch.search.evaluate import gallery_results

SLOTS = np.array([[10, 20, 40, 100], [60, 10, 95, 110], [110, 30, 150, 115]], np.float32)


@pytest.fixture()
def dataset(tmp_path):
    """A folder dataset: 4 test images, 3 people each, identity k always wears the same six
    coloured bands (scaled to its box)."""
    rng = np.random.default_rng(0)
    patterns = [rng.integers(0, 256, (6, 1, 3), dtype=np.uint8) for _ in range(5)]
    people = [[0, 1, 2], [1, 2, 3], [2, 3, 4], [0, 4, 1]]
    images = []
    for k, pids in enumerate(people):
        image = np.full((120, 160, 3), 90, np.uint8)
        for (x1, y1, x2, y2), pid in zip(SLOTS.astype(int), pids, strict=True):
            image[y1:y2, x1:x2] = cv2.resize(patterns[pid], (x2 - x1, y2 - y1),
                                             interpolation=cv2.INTER_NEAREST)
        write_image(tmp_path / "data" / f"t{k}.png", image)
        images.append({"file": f"t{k}.png", "split": "test", "boxes": SLOTS.tolist(),
                       "pids": pids})
    (tmp_path / "data" / "annotations.json").write_text(json.dumps({"images": images}))
    return load_dataset(tmp_path / "data", "folder")


def build(dataset, sources=None) -> Gallery:
    """A gallery of the ground-truth boxes of every test image, colour-histogram features."""
    embedder = ColorHistogramEmbedder()
    vectors = np.concatenate([embedder.embed_boxes(read_image(r.path), r.boxes)
                              for r in dataset.gallery])
    sources = sources or [str(r.path) for r in dataset.gallery for _ in r.boxes]
    rows = Rows.from_columns(sources, np.full(len(vectors), -1),
                             np.concatenate([r.boxes for r in dataset.gallery]),
                             np.full(len(vectors), 0.9), [""] * len(vectors))
    return Gallery.build(vectors, rows, index="flat")


def test_identical_appearances_score_perfectly(dataset):
    results, foreign = gallery_results(build(dataset), dataset, ColorHistogramEmbedder())
    assert foreign == 0 and len(dataset.queries) == 5
    assert results.det_image.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    report = evaluate(dataset, results)
    metrics = report["search"]["all-cameras"]
    assert metrics["mAP"] == pytest.approx(1.0) and metrics["top1"] == 1.0
    assert metrics["queries"] == 5


def test_query_features_are_the_query_boxes_embedded(dataset):
    embedder = ColorHistogramEmbedder()
    results, _ = gallery_results(build(dataset), dataset, embedder)
    q = dataset.queries[0]
    want = embedder.embed_boxes(read_image(dataset.image(q.image).path), q.box[None])
    np.testing.assert_allclose(results.query_features[0], want[0], atol=1e-6)


def test_a_gallery_of_other_images_is_refused(dataset):
    n = sum(len(r.boxes) for r in dataset.gallery)
    gallery = build(dataset, sources=[f"/elsewhere/x{i}.png" for i in range(n)])
    with pytest.raises(PsearchError, match="no detections of the test images"):
        gallery_results(gallery, dataset, ColorHistogramEmbedder())


def test_evaluate_gallery_command_writes_the_report(dataset, tmp_path, capsys):
    from support import detect_dir, embeddings_dir, tiny_checkpoint

    from psearch.cli.main import main

    images = [(r.path, r.boxes) for r in dataset.gallery]
    dets = detect_dir(tmp_path / "dets", images)
    emb = embeddings_dir(tmp_path / "emb", dets, tiny_checkpoint(tmp_path / "reid.pt"), images)
    main(["index", "--embeddings", str(emb), "--out", str(tmp_path / "g")])
    main(["evaluate-gallery", "--gallery", str(tmp_path / "g"), "--data", str(dataset.root),
          "--out", str(tmp_path / "eval.json"), "--save-results", str(tmp_path / "r.npz"),
          "--device", "cpu"])
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["search"]["all-cameras"]["queries"] == 5
    assert report["detection"]["all"]["recall"] == pytest.approx(1.0)
    assert "mAP" in capsys.readouterr().out and (tmp_path / "r.npz").is_file()
