"""The detector API every stage uses: ``load_detector(...).detect(images) -> [(boxes, scores)]``.

>>> det = load_detector("runs/det/last.pt", device="cpu")   # or load_detector("hog")
>>> [(boxes, scores)] = det.detect([rgb_uint8_image], score_thresh=0.5)

Boxes are float32 [K, 4] (x1, y1, x2, y2) in pixels of the given image, scores float32 [K] in
[0, 1], sorted by descending score.
"""

from __future__ import annotations

import math
import os
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
            raise ValueError(f"image {i}: expected RGB uint8 [H, W, 3], got {img.dtype} "
                             f"{tuple(img.shape)}")


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
        _check_images(images)
        heads = self.model.roi_heads
        saved = heads.score_thresh, heads.detections_per_img
        # Thresholding inside the model keeps low scores out of its NMS as well.
        heads.score_thresh = score_thresh
        if max_detections is not None:
            heads.detections_per_img = max_detections
        try:
            results: Detections = []
            for start in range(0, len(images), self.batch_size):
                batch = [torch.from_numpy(np.ascontiguousarray(img)).to(self.device)
                         .permute(2, 0, 1).float().div_(255)
                         for img in images[start:start + self.batch_size]]
                for out in self.model(batch):
                    results.append((out["boxes"].float().cpu().numpy(),
                                    out["scores"].float().cpu().numpy()))
            return results
        finally:
            heads.score_thresh, heads.detections_per_img = saved

    def describe(self) -> dict[str, Any]:
        return {"backend": "faster_rcnn", "checkpoint": self.checkpoint,
                "backbone": self.config.get("model", {}).get("backbone"),
                "device": str(self.device)}


class HogDetector:
    """OpenCV's HOG + linear SVM people detector (Dalal & Triggs), a baseline needing no weights.

    Scores: the SVM margin ``m`` of each window becomes ``sigmoid(m)``, so 0.5 is the SVM's own
    decision boundary and a larger margin is a more confident detection. Overlapping windows are
    merged by ``torchvision.ops.nms`` instead of OpenCV's grouping (which loses the margins).
    The detection window is 64 x 128 pixels: ``upscale`` > 1 enlarges images first so that
    people shorter than about 100 pixels can be found (boxes are mapped back).
    """

    def __init__(self, upscale: float = 1.0, win_stride: int = 8, scale: float = 1.05,
                 nms_iou: float = 0.4) -> None:
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.upscale, self.win_stride = upscale, win_stride
        self.scale, self.nms_iou = scale, nms_iou

    def detect(self, images: list[np.ndarray], score_thresh: float = 0.5,
               max_detections: int | None = None) -> Detections:
        """Same contract as ``PersonDetector.detect`` (images are processed one by one)."""
        _check_images(images)
        p = min(max(score_thresh, 1e-4), 1 - 1e-4)
        hit_threshold = math.log(p / (1 - p))  # margin whose sigmoid is score_thresh
        return [self._detect_one(img, hit_threshold, max_detections) for img in images]

    def _detect_one(self, img: np.ndarray, hit_threshold: float,
                    max_detections: int | None) -> tuple[np.ndarray, np.ndarray]:
        if self.upscale != 1.0:
            img = cv2.resize(img, None, fx=self.upscale, fy=self.upscale,
                             interpolation=cv2.INTER_LINEAR)
        if img.shape[0] < 128 or img.shape[1] < 64:
            return _empty()
        rects, margins = self.hog.detectMultiScale(
            img, hitThreshold=hit_threshold, winStride=(self.win_stride, self.win_stride),
            padding=(8, 8), scale=self.scale, groupThreshold=0)  # 0: no grouping, we run NMS
        if len(rects) == 0:
            return _empty()
        xywh = torch.as_tensor(np.asarray(rects, np.float32).reshape(-1, 4))
        boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1) / self.upscale
        scores = torch.sigmoid(torch.as_tensor(np.asarray(margins, np.float32).reshape(-1)))
        keep = nms(boxes, scores, self.nms_iou)[:max_detections]
        h, w = img.shape[0] / self.upscale, img.shape[1] / self.upscale
        boxes = boxes[keep].clamp_(min=0)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(max=w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(max=h)
        return boxes.numpy(), scores[keep].numpy()

    def describe(self) -> dict[str, Any]:
        return {"backend": HOG_NAME, "checkpoint": None, "upscale": self.upscale,
                "win_stride": self.win_stride, "scale": self.scale, "nms_iou": self.nms_iou,
                "score": "sigmoid(SVM margin)"}
