"""Search results of a joint model on a dataset's test split, for the shared evaluator.

``detected_results``: every test image through ``detect_and_embed`` (one pass: boxes, scores,
embeddings) and the queries embedded on their frames; ``ground_truth_results``: the test images'
ground-truth boxes embedded on their frames with score 1 (the upper bound the detector allows).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from psearch.core.media import read_image
from psearch.core.progress import progress_bar
from psearch.data.annotations import PersonSearchDataset
from psearch.evaluation import evaluate
from psearch.evaluation.detection import DET_THRESH
from psearch.evaluation.results import SearchResults
from psearch.joint.infer import JointSearcher

IMAGES_PER_CHUNK = 16


def _chunks(paths: list, progress: bool, desc: str):
    """(start, decoded images) of consecutive chunks, decoded by a thread pool."""
    bar = progress_bar(total=len(paths), enabled=progress, desc=desc, unit="img", leave=False)
    with ThreadPoolExecutor(2) as pool:
        for start in range(0, len(paths), IMAGES_PER_CHUNK):
            images = list(pool.map(read_image, paths[start:start + IMAGES_PER_CHUNK]))
            yield start, images
            bar.update(len(images))
    bar.close()


def embed_query_boxes(searcher: JointSearcher, dataset: PersonSearchDataset,
                      progress: bool = False) -> np.ndarray:
    """Features [Q, D] of the query boxes, row q = ``dataset.queries[q]``."""
    queries = dataset.queries
    paths = [dataset.image(q.image).path for q in queries]
    feats = []
    for start, images in _chunks(paths, progress, "eval queries"):
        boxes = [q.box[None] for q in queries[start:start + len(images)]]
        feats.extend(searcher.embed_images_boxes(images, boxes))
    return np.concatenate(feats) if feats else np.zeros((0, searcher.dim), np.float32)


def detected_results(searcher: JointSearcher, dataset: PersonSearchDataset,
                     score_thresh: float = DET_THRESH, progress: bool = False) -> SearchResults:
    """The joint model's own detections and embeddings on every test image."""
    records = dataset.gallery
    detections: dict[str, tuple[np.ndarray, ...]] = {}
    for start, images in _chunks([r.path for r in records], progress, "eval gallery"):
        found = searcher.detect_and_embed(images, score_thresh=score_thresh)
        detections.update((r.name, d) for r, d in zip(records[start:start + len(images)], found,
                                                      strict=True))
    return SearchResults.from_per_image(detections, embed_query_boxes(searcher, dataset,
                                                                      progress))


def ground_truth_results(searcher: JointSearcher, dataset: PersonSearchDataset,
                         progress: bool = False) -> SearchResults:
    """Every ground-truth test box as a detection of score 1, embedded on its frame."""
    records = dataset.gallery
    detections: dict[str, tuple[np.ndarray, ...]] = {}
    for start, images in _chunks([r.path for r in records], progress, "eval gt boxes"):
        chunk = records[start:start + len(images)]
        feats = searcher.embed_images_boxes(images, [r.boxes for r in chunk])
        detections.update((r.name, (r.boxes, np.ones(len(r.boxes), np.float32), f))
                          for r, f in zip(chunk, feats, strict=True))
    return SearchResults.from_per_image(detections, embed_query_boxes(searcher, dataset,
                                                                      progress))


def evaluate_joint(searcher: JointSearcher, dataset: PersonSearchDataset,
                   progress: bool = False) -> dict[str, Any]:
    """``{"detected": report, "ground_truth": report}``: the standard protocols
    (``psearch.evaluation.evaluate``) on the model's detections and on ground-truth boxes."""
    return {"detected": evaluate(dataset, detected_results(searcher, dataset,
                                                           progress=progress)),
            "ground_truth": evaluate(dataset, ground_truth_results(searcher, dataset, progress))}
