"""The detection protocol of person search: AP and recall over the test images.

Detections with score >= ``det_thresh`` are kept. In each test image a detection and a ground
truth match when their IoU >= ``iou_thresh`` and each is the other's best (highest IoU; the
first on ties), so every detection and every ground truth matches at most once. recall =
matched ground truths / ground truths; AP = step-wise AP of (matched?, score) over all kept
detections x recall.

``labeled_only`` keeps the ground truths with a known identity and skips images that have none,
with their detections (as the reference code does); detections of unlabeled people in the other
images count as false positives. Images without any ground truth (possible in folder datasets)
contribute their detections as false positives.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from psearch.data.annotations import UNLABELED_PID, PersonSearchDataset
from psearch.evaluation.metrics import DET_THRESH, average_precision, box_iou
from psearch.evaluation.results import SearchResults, as_results, group_by_gallery

IOU_THRESH = 0.5


def match_detections(
    gt_boxes: np.ndarray, det_boxes: np.ndarray, iou_thresh: float = IOU_THRESH
) -> np.ndarray:
    """Which detections match a ground truth: bool [D] for gt_boxes [G, 4] and det_boxes [D, 4].

    A pair matches when IoU >= ``iou_thresh`` and each is the other's highest-IoU partner.
    IoUs are rounded to float32 before comparing, as the reference implementation stores them.
    """
    if len(gt_boxes) == 0 or len(det_boxes) == 0:
        return np.zeros(len(det_boxes), dtype=bool)
    iou = box_iou(gt_boxes, det_boxes).astype(np.float32)  # [G, D]
    best_gt = iou.argmax(axis=0)  # [D]
    best_det = iou.argmax(axis=1)  # [G]
    mutual = best_det[best_gt] == np.arange(iou.shape[1])
    return mutual & (iou[best_gt, np.arange(iou.shape[1])] >= iou_thresh)


def evaluate_detection(
    dataset: PersonSearchDataset,
    detections: SearchResults | Mapping[str, tuple[np.ndarray, ...]],
    *,
    det_thresh: float = DET_THRESH,
    iou_thresh: float = IOU_THRESH,
    labeled_only: bool = False,
) -> dict:
    """Run the detection protocol on ``dataset.gallery``: ``{"ap", "recall", "gt", "detections"}``.

    detections: ``SearchResults`` or ``{test image name: (boxes [n, 4], scores [n][, features])}``;
    test images absent from it have no detection. ap and recall are fractions in [0, 1]; gt and
    detections count the ground truths and kept detections evaluated.
    """
    if isinstance(detections, Mapping):  # features play no part here
        detections = {name: tuple(value)[:2] for name, value in detections.items()}
    results = as_results(detections)
    dets = group_by_gallery(results, dataset, det_thresh)
    matched, scores = [], []
    count_gt = 0
    for m, record in enumerate(dataset.gallery):
        gt_boxes = record.boxes
        if labeled_only:
            gt_boxes = gt_boxes[record.pids != UNLABELED_PID]
            if len(gt_boxes) == 0:
                continue
        rows = dets.rows(m)
        matched.append(match_detections(gt_boxes, dets.boxes[rows], iou_thresh))
        scores.append(dets.scores[rows])
        count_gt += len(gt_boxes)
    matched_all = np.concatenate(matched) if matched else np.zeros(0, dtype=bool)
    scores_all = np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)
    recall = float(matched_all.sum() / count_gt) if count_gt else 0.0
    return {
        "ap": average_precision(matched_all, scores_all) * recall,
        "recall": recall,
        "gt": int(count_gt),
        "detections": int(len(scores_all)),
    }
