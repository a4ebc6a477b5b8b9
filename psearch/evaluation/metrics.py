"""The two measures every protocol is built from: box IoU and step-wise average precision."""

from __future__ import annotations

import numpy as np

DET_THRESH = 0.5
"""Detection score below which both protocols drop a detection."""

SMALL_BOX_MARGIN = 10.0
"""Pixels added to a ground truth's width and height in the small-person IoU threshold."""


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` with every box of ``b``: float64 [N, M].

    a: [N, 4], b: [M, 4], (x1, y1, x2, y2); the continuous ``inter / union`` (no "+1" pixel),
    computed as ``torchvision.ops.box_iou`` does, in NumPy so that evaluating loads no torch.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    wh = np.clip(np.minimum(a[:, None, 2:], b[None, :, 2:])
                 - np.maximum(a[:, None, :2], b[None, :, :2]), 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def paired_box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box ``a[i]`` with box ``b[i]``: float64 [N] for a, b [N, 4] (x1, y1, x2, y2).

    The element-wise counterpart of ``box_iou``.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    wh = np.minimum(a[:, 2:], b[:, 2:]) - np.maximum(a[:, :2], b[:, :2])
    inter = np.prod(np.clip(wh, 0, None), axis=1)
    union = np.prod(a[:, 2:] - a[:, :2], axis=1) + np.prod(b[:, 2:] - b[:, :2], axis=1) - inter
    return inter / union


def search_iou_threshold(gt_boxes: np.ndarray) -> np.ndarray:
    """IoU a detection needs to match a ground truth in the search protocol: [...] for [..., 4].

    ``min(0.5, w*h / ((w+10)*(h+10)))``: small people get a looser threshold.
    """
    gt = np.asarray(gt_boxes, dtype=np.float64)
    w, h = gt[..., 2] - gt[..., 0], gt[..., 3] - gt[..., 1]
    return np.minimum(0.5, w * h / ((w + SMALL_BOX_MARGIN) * (h + SMALL_BOX_MARGIN)))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Step-wise average precision of ``scores`` [N] ranking the positives of ``labels`` [N].

    The definition of scikit-learn's ``average_precision_score``: sum over the distinct score
    thresholds, from high to low, of (recall gain) * (precision), with tied scores forming one
    threshold. 0.0 when there is no positive.
    """
    scores = np.asarray(scores).reshape(-1)
    order = np.argsort(scores, kind="stable")[::-1]
    return average_precision_sorted(np.asarray(labels).reshape(-1)[order], scores[order])


def average_precision_sorted(labels: np.ndarray, scores: np.ndarray) -> float:
    """``average_precision`` of ``labels`` [N] and ``scores`` [N] sorted by score, descending."""
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    if n_pos == 0:
        return 0.0
    # Last rank of every group of tied scores: one precision/recall point per distinct score.
    ends = np.append(np.flatnonzero(scores[1:] != scores[:-1]), scores.size - 1)
    tp = np.cumsum(labels)[ends]
    precision = tp / (ends + 1)
    recall_gain = np.diff(tp, prepend=0) / n_pos
    return float(np.sum(recall_gain * precision))
