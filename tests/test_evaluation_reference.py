"""The vectorized protocols agree with a plain loop transliteration of the reference protocols.

The ``reference_*`` functions below follow the protocol text of docs (datasets.md) step by step,
one detection at a time, with scikit-learn's ``average_precision_score``, the way the OIM and
SeqNet evaluation code does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from psearch.data import load_dataset
from psearch.data.annotations import UNLABELED_PID, ImageRecord, PersonSearchDataset, QueryRecord
from psearch.evaluation import SearchResults, evaluate_detection, search_scores

sklearn_metrics = pytest.importorskip("sklearn.metrics")

TOPK = (1, 5, 10)


def reference_iou(a, b):
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def reference_galleries(dataset, query_index, gallery_size, cross_camera):
    query = dataset.queries[query_index]
    if dataset.cuhk_protocols:
        entries = list(
            dataset.cuhk_protocols[50 if gallery_size is None else gallery_size][query_index]
        )
        if gallery_size is None:
            listed = {name for name, _ in entries} | {query.image}
            entries += [(r.name, None) for r in dataset.gallery if r.name not in listed]
        return entries
    entries = []
    for record in dataset.gallery:
        if record.name == query.image or (cross_camera and record.camera == query.camera):
            continue
        gt = record.boxes[record.pids == query.pid]
        entries.append((record.name, gt[0] if len(gt) else None))
    return entries


def reference_search(
    dataset, dets, query_feats, gallery_size=100, cross_camera=False, det_thresh=0.5
):
    """Per query: AP, [top-1, top-5, top-10] and whether the gallery contains the person."""
    name_to_det = {}
    for name, (boxes, scores, feats) in dets.items():
        keep = np.where(scores >= det_thresh)[0]
        if len(keep):
            name_to_det[name] = (boxes[keep], feats[keep])
    out = []
    for i in range(len(dataset.queries)):
        y_true, y_score = [], []
        count_gt = count_tp = 0
        for name, gt in reference_galleries(dataset, i, gallery_size, cross_camera):
            count_gt += gt is not None
            if name not in name_to_det:
                continue
            boxes, feats = name_to_det[name]
            sim = feats.dot(query_feats[i]).ravel()
            label = np.zeros(len(sim), dtype=np.int32)
            if gt is not None:
                w, h = gt[2] - gt[0], gt[3] - gt[1]
                iou_thresh = min(0.5, w * h / ((w + 10) * (h + 10)))
                inds = np.argsort(sim)[::-1]
                sim, boxes = sim[inds], boxes[inds]
                for j, roi in enumerate(boxes):
                    if reference_iou(roi, gt) >= iou_thresh:
                        label[j] = 1
                        count_tp += 1
                        break
            y_true.extend(list(label))
            y_score.extend(list(sim))
        if count_gt == 0:
            out.append((0.0, [0, 0, 0], False))
            continue
        y_score, y_true = np.asarray(y_score), np.asarray(y_true)
        recall = count_tp / count_gt
        ap = (
            0
            if count_tp == 0
            else sklearn_metrics.average_precision_score(y_true, y_score) * recall
        )
        inds = np.argsort(y_score)[::-1]
        y_true = y_true[inds]
        out.append((ap, [min(1, sum(y_true[:k])) for k in TOPK], True))
    return out


def reference_detection(dataset, dets, det_thresh=0.5, iou_thresh=0.5, labeled_only=False):
    y_true, y_score = [], []
    count_gt = count_tp = 0
    for record in dataset.gallery:
        gt_boxes = record.boxes
        if labeled_only:
            inds = np.where(record.pids != UNLABELED_PID)[0]
            if len(inds) == 0:
                continue
            gt_boxes = gt_boxes[inds]
        num_gt = len(gt_boxes)
        boxes, scores = dets.get(record.name, (np.zeros((0, 4)), np.zeros(0)))[:2]
        keep = np.where(scores >= det_thresh)[0]
        boxes, scores = boxes[keep], scores[keep]
        num_det = len(boxes)
        if num_det == 0:
            count_gt += num_gt
            continue
        if num_gt == 0:  # the reference code cannot run here; every detection is a false positive
            y_true.extend([False] * num_det)
            y_score.extend(list(scores))
            continue
        ious = np.zeros((num_gt, num_det), dtype=np.float32)
        for i in range(num_gt):
            for j in range(num_det):
                ious[i, j] = reference_iou(gt_boxes[i], boxes[j])
        tfmat = ious >= iou_thresh
        for j in range(num_det):
            largest = np.argmax(ious[:, j])
            for i in range(num_gt):
                if i != largest:
                    tfmat[i, j] = False
        for i in range(num_gt):
            largest = np.argmax(ious[i, :])
            for j in range(num_det):
                if j != largest:
                    tfmat[i, j] = False
        for j in range(num_det):
            y_score.append(scores[j])
            y_true.append(tfmat[:, j].any())
        count_tp += tfmat.sum()
        count_gt += num_gt
    recall = count_tp / count_gt
    ap = sklearn_metrics.average_precision_score(y_true, y_score) * recall if count_tp else 0.0
    return ap, recall


# --- random worlds -------------------------------------------------------------------------

DISCRETE_FEATURES = np.array(
    [
        [1, 0, 0, 0, 0, 0, 0, 0],
        [0, 1, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 1, 0, 0, 0, 0],
        [0.5, 0.5, 0.5, 0.5, 0, 0, 0, 0],
        [0.5, -0.5, 0, 0, 0.5, 0.5, 0, 0],
        [0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5],
        [0.5, 0, 0.5, 0, 0.5, 0, 0.5, 0],
    ],
    dtype=np.float32,
)
"""Unit features whose dot products are exact multiples of 0.25: many exactly tied similarities."""


def random_features(rng, n, discrete):
    if discrete:
        return DISCRETE_FEATURES[rng.integers(len(DISCRETE_FEATURES), size=n)]
    f = rng.normal(size=(n, 8)).astype(np.float32)
    return (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)


def random_world(rng, cuhk, n_images=24, n_pids=5, n_queries=14):
    gallery = []
    for m in range(n_images):
        k = int(rng.integers(0, 5))
        xy = rng.uniform(0, 150, (k, 2))
        wh = rng.uniform(3, 60, (k, 2))  # small people exercise the loose IoU threshold
        pids = rng.choice(np.r_[UNLABELED_PID, np.arange(n_pids)], size=k)
        gallery.append(
            ImageRecord(
                f"g{m}.jpg",
                Path("."),
                np.hstack([xy, xy + wh]),
                pids,
                int(rng.integers(1, 4)),
                "test",
            )
        )
    labeled = [
        (m, j) for m, r in enumerate(gallery) for j, p in enumerate(r.pids) if p != UNLABELED_PID
    ]
    picks = rng.choice(len(labeled), size=min(n_queries, len(labeled)), replace=False)
    queries = []
    for p in picks:
        m, j = labeled[p]
        r = gallery[m]
        queries.append(QueryRecord(r.name, r.boxes[j], int(r.pids[j]), r.camera))
    protocols = {}
    if cuhk:
        for size, n_neg in ((2, 2), (4, 5), (50, 3)):
            lists = []
            for q in queries:
                pos, neg = [], []
                for r in gallery:
                    if r.name == q.image:
                        continue
                    hit = np.flatnonzero(r.pids == q.pid)
                    (pos if len(hit) else neg).append(
                        (r.name, r.boxes[hit[0]] if len(hit) else None)
                    )
                chosen = rng.choice(len(neg), size=min(n_neg, len(neg)), replace=False)
                lists.append(pos + [neg[c] for c in chosen])
            protocols[size] = lists
    return PersonSearchDataset("random", Path("."), [], gallery, queries, protocols)


def random_detections(rng, dataset, discrete):
    dets = {}
    for record in dataset.gallery:
        if rng.random() < 0.15:
            continue  # an image the detector never reported
        gt = record.boxes[rng.random(len(record.boxes)) < 0.8]
        size = np.repeat(gt[:, 2:] - gt[:, :2], 2, axis=0).reshape(-1, 4)
        jittered = gt + rng.uniform(-0.3, 0.3, gt.shape) * size
        extra_xy = rng.uniform(0, 150, (int(rng.integers(0, 3)), 2))
        extra = np.hstack([extra_xy, extra_xy + rng.uniform(5, 60, extra_xy.shape)])
        boxes = np.vstack([jittered, extra]).astype(np.float32)
        boxes = boxes[rng.permutation(len(boxes))]
        scores = rng.uniform(0.2, 1.0, len(boxes)).astype(np.float32)
        dets[record.name] = (boxes, scores, random_features(rng, len(boxes), discrete))
    return dets


def assert_search_agrees(dataset, dets, query_feats, **kwargs):
    ap, hits, valid = search_scores(
        dataset, SearchResults.from_per_image(dets, query_feats), **kwargs
    )
    expected = reference_search(dataset, dets, query_feats, **kwargs)
    np.testing.assert_allclose(ap, [e[0] for e in expected], atol=1e-6)
    np.testing.assert_array_equal(hits, [e[1] for e in expected])
    np.testing.assert_array_equal(valid, [e[2] for e in expected])


@pytest.mark.parametrize("discrete", [True, False], ids=["tied-features", "continuous-features"])
def test_search_agrees_with_reference_on_random_prw_like_worlds(discrete):
    rng = np.random.default_rng(1 + discrete)
    for _ in range(6):
        dataset = random_world(rng, cuhk=False)
        dets = random_detections(rng, dataset, discrete)
        query_feats = random_features(rng, len(dataset.queries), discrete)
        for cross_camera in (False, True):
            assert_search_agrees(dataset, dets, query_feats, cross_camera=cross_camera)


@pytest.mark.parametrize("discrete", [True, False], ids=["tied-features", "continuous-features"])
def test_search_agrees_with_reference_on_random_cuhk_like_worlds(discrete):
    rng = np.random.default_rng(11 + discrete)
    for _ in range(6):
        dataset = random_world(rng, cuhk=True)
        dets = random_detections(rng, dataset, discrete)
        query_feats = random_features(rng, len(dataset.queries), discrete)
        for gallery_size in (2, 4, None):
            assert_search_agrees(dataset, dets, query_feats, gallery_size=gallery_size)


@pytest.mark.parametrize("labeled_only", [False, True], ids=["all", "labeled"])
def test_detection_agrees_with_reference_on_random_worlds(labeled_only):
    rng = np.random.default_rng(21 + labeled_only)
    for _ in range(10):
        dataset = random_world(rng, cuhk=False)
        dets = random_detections(rng, dataset, discrete=True)
        got = evaluate_detection(dataset, dets, labeled_only=labeled_only)
        ap, recall = reference_detection(dataset, dets, labeled_only=labeled_only)
        assert got["recall"] == pytest.approx(recall, abs=1e-9)
        assert got["ap"] == pytest.approx(ap, abs=1e-6)


# --- the generated worlds -------------------------------------------------------------------


@pytest.mark.parametrize("discrete", [True, False], ids=["tied-features", "continuous-features"])
def test_search_agrees_with_reference_on_the_cuhk_world(cuhk_world, discrete):
    dataset = load_dataset(cuhk_world, "cuhk")
    rng = np.random.default_rng(31 + discrete)
    dets = random_detections(rng, dataset, discrete)
    query_feats = random_features(rng, len(dataset.queries), discrete)
    for gallery_size in sorted(dataset.cuhk_protocols):
        assert_search_agrees(dataset, dets, query_feats, gallery_size=gallery_size)


@pytest.mark.parametrize("discrete", [True, False], ids=["tied-features", "continuous-features"])
def test_search_agrees_with_reference_on_the_prw_world(prw_world, discrete):
    dataset = load_dataset(prw_world, "prw")
    rng = np.random.default_rng(41 + discrete)
    dets = random_detections(rng, dataset, discrete)
    query_feats = random_features(rng, len(dataset.queries), discrete)
    for cross_camera in (False, True):
        assert_search_agrees(dataset, dets, query_feats, cross_camera=cross_camera)


@pytest.mark.parametrize("world, fmt", [("cuhk_world", "cuhk"), ("prw_world", "prw")])
def test_detection_agrees_with_reference_on_the_worlds(world, fmt, request):
    dataset = load_dataset(request.getfixturevalue(world), fmt)
    dets = random_detections(np.random.default_rng(51), dataset, discrete=True)
    for labeled_only in (False, True):
        got = evaluate_detection(dataset, dets, labeled_only=labeled_only)
        ap, recall = reference_detection(dataset, dets, labeled_only=labeled_only)
        assert got["recall"] == pytest.approx(recall, abs=1e-9)
        assert got["ap"] == pytest.approx(ap, abs=1e-6)
