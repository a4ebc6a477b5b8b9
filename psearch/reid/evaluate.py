"""Re-ID upper bound: the search protocol on the test split with ground-truth boxes as detections.

Every gallery image's ground-truth boxes enter with score 1.0 and the model's features, so the
figures measure the embedding alone (a perfect detector). Crop datasets (Market-1501) are scored
with their own re-ID protocol instead (``psearch.evaluation.market``).
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from psearch.core.boxes import crop_boxes
from psearch.core.media import read_image
from psearch.core.progress import progress_bar
from psearch.data.annotations import PersonSearchDataset
from psearch.evaluation.results import SearchResults

IMAGES_PER_CHUNK = 32
"""Images decoded per step: their crops are embedded together in one batched call."""


class Embedder(Protocol):
    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray: ...


def embed_boxes_of_images(embedder: Embedder, paths: list, boxes: list[np.ndarray],
                          progress: bool = False, desc: str = "embedding") -> list[np.ndarray]:
    """Features [n_i, D] of ``boxes[i]`` float [n_i, 4] in image ``paths[i]``, for every i.

    Images are decoded by a thread pool and their crops embedded in chunks of
    ``IMAGES_PER_CHUNK`` images.
    """
    out: list[np.ndarray] = []
    bar = progress_bar(total=len(paths), desc=desc, unit="img", enabled=progress)
    with ThreadPoolExecutor(4) as pool:
        for start in range(0, len(paths), IMAGES_PER_CHUNK):
            chunk = slice(start, start + IMAGES_PER_CHUNK)
            images = pool.map(read_image, paths[chunk])
            crops = [c for image, b in zip(images, boxes[chunk], strict=True)
                     for c in crop_boxes(image, b)]
            feats = embedder.embed_crops(crops)
            counts = np.cumsum([len(b) for b in boxes[chunk]])[:-1]
            out.extend(np.split(feats, counts))
            bar.update(len(boxes[chunk]))
    bar.close()
    return out


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
    feats = embed_boxes_of_images(embedder, [r.path for r in gallery], [r.boxes for r in gallery],
                                  progress, "eval gallery")
    dim = int(feats[0].shape[1]) if feats else 0
    gallery_features = np.concatenate(feats) if feats else np.zeros((0, dim), np.float32)
    query_features = embed_query_boxes(embedder, dataset, progress)
    if query_features is None:
        query_features = np.zeros((0, dim), np.float32)
    return evaluate_market_dataset(dataset, gallery_features, query_features, **options)


def ground_truth_results(embedder: Embedder, dataset: PersonSearchDataset,
                         progress: bool = False) -> SearchResults:
    """Every ground-truth box of the test images as a detection of score 1.0, with features."""
    gallery = dataset.gallery
    feats = embed_boxes_of_images(embedder, [r.path for r in gallery], [r.boxes for r in gallery],
                                  progress, "eval gallery")
    detections = {r.name: (r.boxes, np.ones(len(r.boxes), np.float32), f)
                  for r, f in zip(gallery, feats, strict=True)}
    return SearchResults.from_per_image(detections, embed_query_boxes(embedder, dataset, progress))


def embed_query_boxes(embedder: Embedder, dataset: PersonSearchDataset,
                      progress: bool = False) -> np.ndarray | None:
    """Features [Q, D] of the dataset's query boxes (row q = ``dataset.queries[q]``)."""
    queries = dataset.queries
    feats = embed_boxes_of_images(
        embedder, [dataset.image(q.image).path for q in queries], [q.box[None] for q in queries],
        progress, "eval queries")
    return np.concatenate(feats) if feats else None


def reembed_results(embedder: Embedder, dataset: PersonSearchDataset, results: SearchResults,
                    progress: bool = False) -> SearchResults:
    """``results``' detections (same boxes, scores and order) with ``embedder``'s features."""
    order = np.argsort(results.det_image, kind="stable")
    images = np.unique(results.det_image[order])
    starts = np.searchsorted(results.det_image[order], images)
    groups = np.split(order, starts[1:])
    feats = embed_boxes_of_images(
        embedder, [dataset.image(str(results.image_names[i])).path for i in images],
        [results.boxes[g] for g in groups], progress, "embed detections")
    features = np.zeros((len(results.boxes), int(feats[0].shape[1]) if feats else 0), np.float32)
    if feats:
        features[order] = np.concatenate(feats)  # the groups, concatenated, are ``order``
    return dataclasses.replace(results, features=features,
                               query_features=embed_query_boxes(embedder, dataset, progress))
