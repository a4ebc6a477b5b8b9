"""Resizing person crops for the re-ID network, in NumPy and OpenCV only (no torch: the ONNX
embedder uses them too). Cutting them out of images is ``psearch.core.boxes.crop_boxes``."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from psearch.core.boxes import crop_boxes
from psearch.core.errors import PsearchError


def resize_crop(crop: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB crop to ``size`` (height, width): area averaging when shrinking."""
    height, width = size
    shrink = crop.shape[0] >= height and crop.shape[1] >= width
    return cv2.resize(crop, (width, height),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def resize_crops(crops: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 crops of any size -> one uint8 batch [N, height, width, 3]."""
    out = np.empty((len(crops), size[0], size[1], 3), dtype=np.uint8)
    for i, crop in enumerate(crops):
        if crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] == 0 or crop.shape[1] == 0:
            raise PsearchError(f"crop {i}: expected an RGB array [H, W, 3], got shape {crop.shape}")
        out[i] = resize_crop(crop, size)
    return out


class CropEmbedder:
    """What every crop-based embedder (the PyTorch re-ID model, its ONNX export) shares: crops
    of any size resized and embedded in batches. A subclass sets ``dim``, ``batch_size`` and
    ``input_size`` (height, width) and implements ``embed_batch(uint8 [N, h, w, 3]) -> [N, D]``.
    """

    dim: int
    batch_size: int
    input_size: tuple[int, int]

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """uint8 crops [N, height, width, 3] already at ``input_size`` -> float32 [N, D]."""
        raise NotImplementedError

    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 crops [H_i, W_i, 3] of any size -> float32 [N, D], L2-normalised."""
        out = np.empty((len(crops), self.dim), dtype=np.float32)
        for start in range(0, len(crops), self.batch_size):
            chunk = crops[start:start + self.batch_size]
            out[start:start + len(chunk)] = self.embed_batch(resize_crops(chunk, self.input_size))
        return out

    def embed_boxes(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """The people at ``boxes`` float [N, 4] (x1, y1, x2, y2) of RGB ``image`` -> [N, D]."""
        return self.embed_crops(crop_boxes(image, boxes))
