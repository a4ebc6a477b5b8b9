"""Search results of a joint model on a dataset's test split, for the shared evaluator.

``detected_results``: every test image through ``detect_and_embed`` (one pass: boxes, scores,
embeddings) and the queries embedded on their frames; ``ground_truth_results``
(``psearch.evaluation.runners``): the test images' ground-truth boxes embedded on their frames
with score 1 (the upper bound the detector allows).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from psearch.data.annotations import PersonSearchDataset
from psearch.evaluation import evaluate
from psearch.evaluation.detection import DET_THRESH
from psearch.evaluation.results import SearchResults
from psearch.evaluation.runners import (
    FRAME_IMAGES_PER_CHUNK,
    decoded_chunks,
    embed_query_boxes,
    ground_truth_results,
)
from psearch.joint.infer import JointSearcher

__all__ = ["detected_results", "evaluate_joint", "ground_truth_results"]


def detected_results(searcher: JointSearcher, dataset: PersonSearchDataset,
                     score_thresh: float = DET_THRESH, progress: bool = False) -> SearchResults:
    """The joint model's own detections and embeddings on every test image."""
    records = dataset.gallery
    detections: dict[str, tuple[np.ndarray, ...]] = {}
    for start, images in decoded_chunks([r.path for r in records], FRAME_IMAGES_PER_CHUNK, 2,
                                        progress, "eval gallery"):
        found = searcher.detect_and_embed(images, score_thresh=score_thresh)
        detections.update((r.name, d) for r, d in zip(records[start:start + len(images)], found,
                                                      strict=True))
    return SearchResults.from_per_image(detections, embed_query_boxes(searcher, dataset,
                                                                      progress))


def evaluate_joint(searcher: JointSearcher, dataset: PersonSearchDataset,
                   progress: bool = False) -> dict[str, Any]:
    """``{"detected": report, "ground_truth": report}``: the standard protocols
    (``psearch.evaluation.evaluate``) on the model's detections and on ground-truth boxes."""
    return {"detected": evaluate(dataset, detected_results(searcher, dataset,
                                                           progress=progress)),
            "ground_truth": evaluate(dataset, ground_truth_results(searcher, dataset, progress))}
