"""Re-ID upper bound: the search protocol on the test split with ground-truth boxes as detections.

Every gallery image's ground-truth boxes enter with score 1.0 and the model's features, so the
figures measure the embedding alone (a perfect detector). Crop datasets (Market-1501) are scored
with their own re-ID protocol instead (``psearch.evaluation.market``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from psearch.data.annotations import PersonSearchDataset
from psearch.evaluation.results import SearchResults
from psearch.evaluation.runners import embed_image_boxes, embed_query_boxes, ground_truth_results
from psearch.roles import Embedder

__all__ = ["evaluate_crops", "evaluate_gt_boxes", "ground_truth_results", "reembed_results"]


def evaluate_gt_boxes(embedder: Embedder, dataset: PersonSearchDataset, progress: bool = False,
                      **protocol: Any) -> dict[str, float]:
    """mAP and top-k (fractions) of ``embedder`` on ``dataset``'s test split with ground-truth
    boxes as detections: ``{"protocol", "mAP", "top1", "top5", "top10", "queries", ...}``.

    ``protocol``: ``psearch.evaluation.evaluate_search`` options (default: the headline protocol,
    CUHK-SYSU gallery 100, or the largest it has, or every test image for PRW/folder datasets).
    A crop dataset gives ``{"protocol": "market", ...}`` (``evaluate_crops``).
    """
    from psearch.evaluation import evaluate_search, search_protocols
    from psearch.evaluation.protocols import is_cuhk

    if dataset.crops:
        return {"protocol": "market", **evaluate_crops(embedder, dataset, progress, **protocol)}
    results = ground_truth_results(embedder, dataset, progress)
    if not protocol:  # the headline protocol: CUHK-SYSU's largest standard gallery, else all
        protocols = search_protocols(dataset)
        name = list(protocols)[-1] if is_cuhk(dataset) else next(iter(protocols))
        protocol = {"protocol": name, **protocols[name]}
    name = protocol.pop("protocol", "custom")
    return {"protocol": name, **evaluate_search(dataset, results, **protocol)}


def evaluate_crops(embedder: Embedder, dataset: PersonSearchDataset, progress: bool = False,
                   **options: Any) -> dict[str, float]:
    """The Market-1501 re-ID protocol of a crop dataset: every gallery and query crop embedded
    whole. ``options``: ``psearch.evaluation.market.evaluate_market``'s (``topk``, ``average``).
    """
    from psearch.evaluation.market import evaluate_market_dataset

    gallery = dataset.gallery
    feats = embed_image_boxes(embedder, [r.path for r in gallery], [r.boxes for r in gallery],
                                  progress, "eval gallery")
    dim = int(feats[0].shape[1]) if feats else 0
    gallery_features = np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)
    query_features = embed_query_boxes(embedder, dataset, progress)
    return evaluate_market_dataset(dataset, gallery_features, query_features, **options)


def reembed_results(embedder: Embedder, dataset: PersonSearchDataset, results: SearchResults,
                    progress: bool = False) -> SearchResults:
    """``results``' detections (same boxes, scores and order) with ``embedder``'s features."""
    order = np.argsort(results.det_image, kind="stable")
    images = np.unique(results.det_image[order])
    starts = np.searchsorted(results.det_image[order], images)
    groups = np.split(order, starts[1:])
    feats = embed_image_boxes(
        embedder, [dataset.image(str(results.image_names[i])).path for i in images],
        [results.boxes[g] for g in groups], progress, "embed detections")
    features = np.zeros((len(results.boxes), int(feats[0].shape[1]) if feats else 0), np.float32)
    if feats:
        features[order] = np.concatenate(feats)  # the groups, concatenated, are ``order``
    return dataclasses.replace(results, features=features,
                               query_features=embed_query_boxes(embedder, dataset, progress))
