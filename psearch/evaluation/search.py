"""The person-search protocol: average precision and top-k of each query over its gallery.

For one query (see ``psearch.evaluation.protocols`` for its gallery):

1. detections with score < ``det_thresh`` are dropped; similarity = dot product of the
   L2-normalized features (cosine);
2. in each gallery image containing the person (gt box w x h), the image's detections are
   ranked by similarity (``np.argsort(sim)[::-1]``, as the reference code) and the first with
   IoU >= min(0.5, w*h / ((w+10)*(h+10))) is the single true positive;
3. AP = step-wise average precision over all detections of the gallery x count_tp / count_gt,
   where count_gt counts the gallery images containing the person (detected or not); 0 when
   nothing matched;
4. top-k = 1 if a true positive is among the k most similar detections of the gallery, ranked
   with ``np.argsort(scores)[::-1]`` over the detections in gallery order (the reference's
   tie order).

A query whose gallery does not contain the person (possible in cross-camera or small folder
datasets) has no defined AP: it is left out of the means and counted as ``skipped_queries``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from psearch.core.errors import PsearchError
from psearch.core.progress import progress_bar
from psearch.data.annotations import PersonSearchDataset
from psearch.evaluation.metrics import (
    DET_THRESH,
    average_precision_sorted,
    paired_box_iou,
    search_iou_threshold,
)
from psearch.evaluation.protocols import QueryGallery, is_cuhk, iter_query_galleries
from psearch.evaluation.results import (
    GalleryDetections,
    SearchResults,
    as_results,
    group_by_gallery,
)

TOPK = (1, 5, 10)
QUERY_CHUNK = 256
"""Queries whose similarities to all detections are computed in one matrix product."""


def evaluate_search(
    dataset: PersonSearchDataset,
    detections: SearchResults | Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    query_features: np.ndarray | None = None,
    *,
    gallery_size: int | None = 100,
    cross_camera: bool = False,
    det_thresh: float = DET_THRESH,
    topk: Sequence[int] = TOPK,
    progress: bool = False,
) -> dict:
    """Run the search protocol: ``{"mAP", "top1", "top5", "top10", "queries", "skipped_queries"}``.

    detections: ``SearchResults``, or ``{test image name: (boxes [n, 4], scores [n], features
    [n, D])}`` with ``query_features`` [Q, D] (row q = ``dataset.queries[q]``).
    gallery_size: CUHK-SYSU protocol (50, 100, ...; None = full set); ignored by PRW and folder
    datasets, whose gallery is every test image. Metrics are fractions in [0, 1].
    """
    ap, hits, valid = search_scores(
        dataset,
        detections,
        query_features,
        gallery_size=gallery_size,
        cross_camera=cross_camera,
        det_thresh=det_thresh,
        topk=topk,
        progress=progress,
    )
    metrics = {"mAP": float(ap[valid].mean()) if valid.any() else 0.0}
    for i, k in enumerate(topk):
        metrics[f"top{k}"] = float(hits[valid, i].mean()) if valid.any() else 0.0
    metrics["queries"] = int(valid.sum())
    metrics["skipped_queries"] = int((~valid).sum())
    return metrics


def search_scores(
    dataset: PersonSearchDataset,
    detections: SearchResults | Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    query_features: np.ndarray | None = None,
    *,
    gallery_size: int | None = 100,
    cross_camera: bool = False,
    det_thresh: float = DET_THRESH,
    topk: Sequence[int] = TOPK,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-query results of the search protocol (arguments as ``evaluate_search``).

    Returns ap: float64 [Q]; hits: bool [Q, len(topk)] (a true positive among the top k);
    valid: bool [Q], False for queries whose gallery does not contain the person.
    """
    results = as_results(detections, query_features)
    if not results.has_features:
        raise PsearchError(
            "results have no features: the search protocol needs features and query_features"
        )
    results.check_dataset(dataset, "results")
    dets = group_by_gallery(results, dataset, det_thresh)
    n_queries = len(dataset.queries)
    ap = np.zeros(n_queries)
    hits = np.zeros((n_queries, len(topk)), dtype=bool)
    valid = np.zeros(n_queries, dtype=bool)
    galleries = iter_query_galleries(dataset, gallery_size, cross_camera)
    if is_cuhk(dataset):
        desc = f"search gallery {gallery_size or 'full set'}"
    else:
        desc = "search " + ("cross-camera" if cross_camera else "all cameras")
    for q, gallery in enumerate(
        progress_bar(galleries, total=n_queries, desc=desc, unit="query", enabled=progress)
    ):
        if q % QUERY_CHUNK == 0:
            sims = results.query_features[q : q + QUERY_CHUNK] @ dets.features.T
        ap[q], hits[q], valid[q] = score_query(sims[q % QUERY_CHUNK], gallery, dets, topk)
    return ap, hits, valid


def score_query(
    sim_all: np.ndarray, gallery: QueryGallery, dets: GalleryDetections, topk: Sequence[int]
) -> tuple[float, np.ndarray, bool]:
    """AP, top-k hits and evaluability of one query (also used by ``evaluation.pairs``).

    sim_all: [K] similarity of the query to every kept detection of ``dets``.
    """
    count_gt = len(gallery.positives)
    if count_gt == 0:
        return 0.0, np.zeros(len(topk), dtype=bool), False
    # Rows of the gallery's detections, image after image in gallery order.
    counts = dets.count[gallery.images]
    seg_start = np.cumsum(counts) - counts
    rows = np.repeat(dets.start[gallery.images] - seg_start, counts) + np.arange(counts.sum())
    sims = sim_all[rows]
    # Which detections of the images holding the person overlap it enough, in one pass.
    pos_counts = counts[gallery.positives]
    pos_rows = np.repeat(
        seg_start[gallery.positives] - (np.cumsum(pos_counts) - pos_counts), pos_counts
    )
    pos_rows += np.arange(pos_counts.sum())
    overlaps = np.zeros(len(rows), dtype=bool)
    overlaps[pos_rows] = paired_box_iou(
        dets.boxes[rows[pos_rows]], np.repeat(gallery.gt_boxes, pos_counts, axis=0)
    ) >= np.repeat(search_iou_threshold(gallery.gt_boxes), pos_counts)
    labels = np.zeros(len(rows), dtype=bool)
    count_tp = 0
    for pos in gallery.positives[pos_counts > 0].tolist():
        seg = slice(seg_start[pos], seg_start[pos] + counts[pos])
        # The reference reorders the image's detections by similarity, ties as np.argsort has them.
        by_sim = np.argsort(sims[seg])[::-1]
        sims[seg], overlaps[seg] = sims[seg][by_sim], overlaps[seg][by_sim]
        if overlaps[seg].any():
            labels[seg.start + np.argmax(overlaps[seg])] = True
            count_tp += 1
    order = np.argsort(sims)[::-1]
    ranked = labels[order]
    hits = np.array([ranked[:k].any() for k in topk])
    if count_tp == 0:
        return 0.0, hits, True
    return average_precision_sorted(ranked, sims[order]) * count_tp / count_gt, hits, True
