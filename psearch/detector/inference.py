"""The detector API every stage uses: ``load_detector(...).detect(images) -> [(boxes, scores)]``.

>>> det = load_detector("runs/det/last.pt", device="cpu")   # or load_detector("hog")
>>> [(boxes, scores)] = det.detect([rgb_uint8_image], score_thresh=0.5)

Boxes are float32 [K, 4] (x1, y1, x2, y2) in pixels of the given image, scores float32 [K] in
[0, 1], sorted by descending score.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torchvision.ops import nms

from psearch.checkpoint import load_checkpoint
from psearch.detector.model import build_detector
from psearch.device import resolve_device
from psearch.errors import PsearchError
from psearch.models import HOG_NAME, Detections, Detector, load_detector

__all__ = ["Detections", "Detector", "HogDetector", "PersonDetector", "load_detector"]


def _check_images(images: list[np.ndarray]) -> None:
    for i, img in enumerate(images):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise PsearchError(f"image {i}: expected RGB uint8 [H, W, 3], got {img.dtype} "
                               f"{tuple(img.shape)}")


def image_tensors(images: list[np.ndarray], device: torch.device) -> list[torch.Tensor]:
    """RGB uint8 images [H, W, 3] (checked) -> float tensors [3, H, W] in [0, 1] on ``device``,
    the input torchvision's detection models take."""
    _check_images(images)
    return [torch.from_numpy(np.ascontiguousarray(img)).to(device).permute(2, 0, 1).float()
            .div_(255) for img in images]


@contextlib.contextmanager
def detection_limits(heads: torch.nn.Module, score_thresh: float,
                     max_detections: int | None) -> Iterator[None]:
    """Within the block, ``heads`` (a ``RoIHeads``) keeps detections scoring at least
    ``score_thresh`` and at most ``max_detections`` per image; its settings are restored after.
    Thresholding inside the model keeps low scores out of its NMS as well."""
    saved = heads.score_thresh, heads.detections_per_img
    heads.score_thresh = score_thresh
    if max_detections is not None:
        heads.detections_per_img = max_detections
    try:
        yield
    finally:
        heads.score_thresh, heads.detections_per_img = saved


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)


class PersonDetector:
    """A trained Faster R-CNN person detector (see ``psearch.detector.model``).

    ``config`` is the checkpoint's config (with its ``model`` section); ``batch_size`` bounds how
    many images one forward pass takes when ``detect`` is given more.
    """

    def __init__(self, model: torch.nn.Module, config: dict[str, Any],
                 device: str | torch.device | None = "cpu", checkpoint: str | None = None,
                 batch_size: int = 8) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.checkpoint = checkpoint
        self.batch_size = batch_size

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device | None = "cpu",
                        batch_size: int = 8, payload: dict[str, Any] | None = None
                        ) -> PersonDetector:
        """Rebuild the model from a ``psearch train-detector`` checkpoint (no weight files);
        ``payload``: the checkpoint already read by ``load_checkpoint``."""
        if payload is None:
            payload = load_checkpoint(path, kind="detector")
        config = payload["config"]
        model = build_detector(config.get("model"), load_weights=False)
        try:
            model.load_state_dict(payload["model"])
        except (RuntimeError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise PsearchError(f"{path}: weights do not fit the model of its config ({first})"
                               ) from None
        return cls(model, config, device=device, checkpoint=str(Path(path).resolve()),
                   batch_size=batch_size)

    @torch.inference_mode()
    def detect(self, images: list[np.ndarray], score_thresh: float = 0.5,
               max_detections: int | None = None) -> Detections:
        """Detect people in RGB uint8 [H, W, 3] images; see the module docstring."""
        results: Detections = []
        with detection_limits(self.model.roi_heads, score_thresh, max_detections):
            for start in range(0, len(images), self.batch_size):
                batch = image_tensors(images[start:start + self.batch_size], self.device)
                for out in self.model(batch):
                    results.append((out["boxes"].float().cpu().numpy(),
                                    out["scores"].float().cpu().numpy()))
        return results

    def describe(self) -> dict[str, Any]:
        return {"backend": "faster_rcnn", "checkpoint": self.checkpoint,
                "backbone": self.config.get("model", {}).get("backbone"),
                "device": str(self.device)}


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

    def detect(self, images: list[np.ndarray], score_thresh: float = HOG_SCORE_THRESH,
               max_detections: int | None = None) -> Detections:
        """Same contract as ``PersonDetector.detect`` (images are processed one by one)."""
        _check_images(images)
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
            return _empty()
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
