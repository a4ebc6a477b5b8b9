"""Resizing person crops for the re-ID network, in NumPy and OpenCV only (no torch: the ONNX
embedder uses them too). Cutting them out of images is ``psearch.core.boxes.crop_boxes``."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

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
