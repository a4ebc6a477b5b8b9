"""OpenCV's HOG people detector, a baseline that needs no weights (``--weights hog``)."""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import torch
from torchvision.ops import nms

from psearch.nn.images import check_images, empty_detections
from psearch.roles import Detections

HOG_NAME = "hog"

HOG_CONTAIN = 0.8
"""HOG: a box is dropped when more than this fraction of the smaller of it and a higher-scoring
box lies inside the other (nested windows around one person, or around part of a group)."""
HOG_SHRINK = (0.15, 0.05)
"""HOG: fraction of a window's width / height cut from each side. The 64 x 128 window holds the
person with a margin of context around it (Dalal & Triggs); OpenCV's people-detection sample
trims its boxes by these fractions."""
HOG_SCORE_THRESH = 0.5
"""HOG's default score threshold: sigmoid(margin) >= 0.5, the SVM's own boundary (margin 0);
see ``benchmarks/hog_street.py`` for the measured alternatives."""


def containment_keep(boxes: torch.Tensor, thresh: float) -> torch.Tensor:
    """Greedy suppression by containment for boxes [K, 4] sorted by descending score.

    Box j is dropped when a kept higher-scoring box i covers more than ``thresh`` of the smaller
    of the two (intersection / min(area_i, area_j)), which IoU misses when one box is nested in
    a much larger one. Returns the kept indices (int64, in order). Vectorised: each pass settles
    the boxes whose suppressors are all settled, so it loops at most as deep as a chain of
    suppressions, not once per box.
    """
    k = len(boxes)
    if k < 2:
        return torch.arange(k)
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(-1)
    smaller = torch.minimum(area[:, None], area[None, :]).clamp(min=1e-9)
    # covers[i, j]: higher-scoring i (i < j) would suppress j if i is kept.
    covers = torch.triu(inter / smaller > thresh, diagonal=1)
    keep = torch.ones(k, dtype=torch.bool)
    while True:
        new = ~(covers & keep[:, None]).any(0)
        if torch.equal(new, keep):
            return torch.nonzero(keep).flatten()
        keep = new


class HogDetector:
    """OpenCV's HOG + linear SVM people detector (Dalal & Triggs), a baseline needing no weights.

    Scores: the SVM margin ``m`` of each window becomes ``sigmoid(m)``, so 0.5 is the SVM's own
    decision boundary and a larger margin is a more confident detection. Overlapping windows are
    merged by ``torchvision.ops.nms`` instead of OpenCV's grouping (which loses the margins),
    trimmed of the window's context margin (``shrink``: fractions of width and height per side),
    then windows nested in a higher-scoring one are dropped (``contain``; ``None`` turns that
    off). ``shrink=(0, 0), contain=None`` is the detector before both were added. The detection
    window is 64 x 128 pixels: ``upscale`` > 1 enlarges images first so that people shorter
    than about 100 pixels can be found (boxes are mapped back).
    """

    def __init__(self, upscale: float = 1.0, win_stride: int = 8, scale: float = 1.05,
                 nms_iou: float = 0.4, contain: float | None = HOG_CONTAIN,
                 shrink: tuple[float, float] = HOG_SHRINK) -> None:
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.upscale, self.win_stride = upscale, win_stride
        self.scale, self.nms_iou, self.contain = scale, nms_iou, contain
        self.shrink = (float(shrink[0]), float(shrink[1]))

    @classmethod
    def from_name(cls, device: Any = None, upscale: float = 1.0, contain: float | None = None,
                  **_options: Any) -> HogDetector:
        """The registry's loader for ``--weights hog``; ``contain``: the containment threshold
        (None: the default, >= 1: off). OpenCV runs on the CPU, one image at a time: ``device``
        and the network detectors' options (``batch_size``, ...) do not apply."""
        if contain is None:
            return cls(upscale=upscale)
        return cls(upscale=upscale, contain=None if contain >= 1 else contain)

    def detect(self, images: list[np.ndarray], score_thresh: float = HOG_SCORE_THRESH,
               max_detections: int | None = None) -> Detections:
        """Same contract as ``PersonDetector.detect`` (images are processed one by one)."""
        check_images(images)
        results = []
        for img in images:
            boxes, scores = self.windows(img, score_thresh)
            results.append(self.suppress(boxes, scores, img.shape[:2], max_detections))
        return results

    def windows(self, img: np.ndarray, score_thresh: float = HOG_SCORE_THRESH
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every window scoring >= ``score_thresh``, before any merging: boxes [K, 4] in pixels
        of ``img`` (not clipped: windows may reach past the border) and scores [K]."""
        p = min(max(score_thresh, 1e-4), 1 - 1e-4)
        hit_threshold = math.log(p / (1 - p))  # margin whose sigmoid is score_thresh
        if self.upscale != 1.0:
            img = cv2.resize(img, None, fx=self.upscale, fy=self.upscale,
                             interpolation=cv2.INTER_LINEAR)
        if img.shape[0] < 128 or img.shape[1] < 64:
            return torch.zeros(0, 4), torch.zeros(0)
        rects, margins = self.hog.detectMultiScale(
            img, hitThreshold=hit_threshold, winStride=(self.win_stride, self.win_stride),
            padding=(8, 8), scale=self.scale, groupThreshold=0)  # 0: no grouping, we run NMS
        if len(rects) == 0:
            return torch.zeros(0, 4), torch.zeros(0)
        xywh = torch.as_tensor(np.asarray(rects, np.float32).reshape(-1, 4))
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1) / self.upscale
        scores = torch.sigmoid(torch.as_tensor(np.asarray(margins, np.float32).reshape(-1)))
        return boxes, scores

    def suppress(self, boxes: torch.Tensor, scores: torch.Tensor, size: tuple[int, int],
                 max_detections: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """NMS, trimming, clipping to the image ``size`` (height, width), then containment
        suppression of ``windows``' output -> (boxes, scores) as NumPy, by descending score."""
        if len(boxes) == 0:
            return empty_detections()
        keep = nms(boxes, scores, self.nms_iou)  # sorted by descending score
        boxes = boxes[keep]
        if self.shrink != (0.0, 0.0):
            wh = boxes[:, 2:] - boxes[:, :2]
            cut = wh * torch.tensor(self.shrink)
            boxes = torch.cat([boxes[:, :2] + cut, boxes[:, 2:] - cut], 1)
        boxes = boxes.clamp_(min=0)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(max=size[1])
        boxes[:, 1::2] = boxes[:, 1::2].clamp(max=size[0])
        scores = scores[keep]
        if self.contain is not None:
            kept = containment_keep(boxes, self.contain)
            boxes, scores = boxes[kept], scores[kept]
        return boxes[:max_detections].numpy(), scores[:max_detections].numpy()

    def describe(self) -> dict[str, Any]:
        return {"backend": HOG_NAME, "checkpoint": None, "upscale": self.upscale,
                "win_stride": self.win_stride, "scale": self.scale, "nms_iou": self.nms_iou,
                "contain": self.contain, "shrink": list(self.shrink),
                "score": "sigmoid(SVM margin)"}
