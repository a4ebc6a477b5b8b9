"""Colour-histogram re-ID: HSV histograms in horizontal stripes, the classical baseline.

Each person crop is resized to a fixed size, split into ``stripes`` horizontal bands, and every
band gets a joint HSV histogram (``h_bins x s_bins x v_bins``). Histograms are square-rooted
(Hellinger kernel) and the concatenation is L2-normalized, so the dot product of two features is a
similarity in [0, 1]. Same interface as ``psearch.reid.ReidModel``: ``embed_crops``/``embed_boxes``.
"""

from __future__ import annotations

import cv2
import numpy as np

CROP_HEIGHT, CROP_WIDTH = 64, 32


class ColorHistogramEmbedder:
    """Striped HSV histogram features; ``dim = stripes * h_bins * s_bins * v_bins``."""

    source = "crops"

    def __init__(self, stripes: int = 6, h_bins: int = 8, s_bins: int = 4, v_bins: int = 4) -> None:
        self.stripes, self.h_bins, self.s_bins, self.v_bins = stripes, h_bins, s_bins, v_bins
        self.dim = stripes * h_bins * s_bins * v_bins

    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        """RGB uint8 crops of any size -> float32 [N, dim], L2-normalized."""
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        stack = np.stack([cv2.resize(c, (CROP_WIDTH, CROP_HEIGHT), interpolation=cv2.INTER_AREA)
                          for c in crops])
        return self._histograms(stack)

    def embed_boxes(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Crop ``boxes`` (float [N, 4] x1 y1 x2 y2) from an RGB image and embed them."""
        h, w = image.shape[:2]
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).round().astype(int)
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
        b[:, 2:] = np.maximum(b[:, 2:], b[:, :2] + 1)  # at least one pixel
        return self.embed_crops([image[y1:y2, x1:x2] for x1, y1, x2, y2 in b])

    def _histograms(self, stack: np.ndarray) -> np.ndarray:
        """[N, H, W, 3] RGB uint8 -> [N, dim]: one bincount over all crops and stripes at once."""
        n = len(stack)
        hsv = cv2.cvtColor(stack.reshape(-1, CROP_WIDTH, 3), cv2.COLOR_RGB2HSV)
        hsv = hsv.reshape(n, CROP_HEIGHT, CROP_WIDTH, 3).astype(np.int64)
        h = hsv[..., 0] * self.h_bins // 180  # OpenCV hue is 0..179
        s = hsv[..., 1] * self.s_bins // 256
        v = hsv[..., 2] * self.v_bins // 256
        colour_bin = (h * self.s_bins + s) * self.v_bins + v
        stripe = np.arange(CROP_HEIGHT) * self.stripes // CROP_HEIGHT
        bins_per_stripe = self.h_bins * self.s_bins * self.v_bins
        band = np.arange(n)[:, None, None] * self.stripes + stripe[None, :, None]
        flat = band * bins_per_stripe
        counts = np.bincount((flat + colour_bin).ravel(), minlength=n * self.dim)
        feats = np.sqrt(counts.reshape(n, self.dim).astype(np.float32))
        return feats / np.linalg.norm(feats, axis=1, keepdims=True).clip(min=1e-12)
