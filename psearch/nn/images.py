"""Images as the torchvision detection models take them, and the empty detection result."""

from __future__ import annotations

import numpy as np
import torch

from psearch.core.errors import PsearchError


def check_images(images: list[np.ndarray]) -> None:
    for i, img in enumerate(images):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise PsearchError(f"image {i}: expected RGB uint8 [H, W, 3], got {img.dtype} "
                               f"{tuple(img.shape)}")


def image_tensors(images: list[np.ndarray], device: torch.device) -> list[torch.Tensor]:
    """RGB uint8 images [H, W, 3] (checked) -> float tensors [3, H, W] in [0, 1] on ``device``,
    the input torchvision's detection models take."""
    check_images(images)
    return [torch.from_numpy(np.ascontiguousarray(img)).to(device).permute(2, 0, 1).float()
            .div_(255) for img in images]


def empty_detections() -> tuple[np.ndarray, np.ndarray]:
    """No box: boxes float32 [0, 4] and scores float32 [0]."""
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
