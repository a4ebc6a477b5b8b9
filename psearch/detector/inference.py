"""The detector API every stage uses: ``load_detector(...).detect(images) -> [(boxes, scores)]``.

>>> det = load_detector("runs/det/last.pt", device="cpu")   # or load_detector("hog")
>>> [(boxes, scores)] = det.detect([rgb_uint8_image], score_thresh=0.5)

Boxes are float32 [K, 4] (x1, y1, x2, y2) in pixels of the given image, scores float32 [K] in
[0, 1], sorted by descending score.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psearch.core.checkpoint import checkpoint_of_kind, load_model_state
from psearch.core.device import resolve_device
from psearch.detector.model import build_detector
from psearch.nn.images import image_tensors
from psearch.roles import Detections

__all__ = ["PersonDetector", "detection_limits"]


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
        payload = checkpoint_of_kind(path, "detector", payload)
        config = payload["config"]
        model = build_detector(config.get("model"), load_weights=False)
        load_model_state(model, payload["model"], path)
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
