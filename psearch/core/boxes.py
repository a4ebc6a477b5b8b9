"""Box and image helpers shared by every stage (NumPy only).

Boxes are ``x1, y1, x2, y2`` in pixels; images are RGB uint8 arrays [H, W, 3].
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from psearch.core.errors import PsearchError
from psearch.core.media import read_image

ImageLike = str | os.PathLike | np.ndarray
"""An image path or an RGB uint8 array [H, W, 3]."""


def as_rgb(image: ImageLike) -> np.ndarray:
    """An RGB uint8 array [H, W, 3] from a path or an array (checked)."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
            raise PsearchError(f"query image: expected RGB uint8 [H, W, 3], got {image.dtype} "
                               f"{image.shape}")
        return image
    return read_image(image)


def check_box(box: Sequence[float] | np.ndarray, width: int, height: int) -> np.ndarray:
    """A query box (x1, y1, x2, y2) clipped to a ``width`` x ``height`` image -> float32 [4].

    ``PsearchError`` if it is not 4 finite numbers, has zero area, or lies outside the image.
    """
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    text = ",".join(f"{v:g}" for v in b)
    if b.shape != (4,) or not np.isfinite(b).all():
        raise PsearchError(f"box {text}: expected 4 finite numbers x1,y1,x2,y2")
    if b[2] <= b[0] or b[3] <= b[1]:
        raise PsearchError(f"box {text}: zero area (need x2 > x1 and y2 > y1)")
    clipped = np.array([max(b[0], 0), max(b[1], 0), min(b[2], width), min(b[3], height)])
    if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
        raise PsearchError(f"box {text}: outside the {width}x{height} image")
    return clipped.astype(np.float32)


def parse_box(text: str, what: str = "--box") -> tuple[float, ...]:
    """``"x1,y1,x2,y2"`` -> 4 floats; a one-line ``PsearchError`` naming ``what`` otherwise."""
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise PsearchError(f"{what} {text[:40]!r}: expected x1,y1,x2,y2 (4 numbers)")
    return values


def check_boxes(boxes: np.ndarray | Sequence, width: int, height: int) -> np.ndarray:
    """Several query boxes [N, 4] checked and clipped like ``check_box`` -> float32 [N, 4]."""
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0 or array.size % 4:
        raise PsearchError(f"boxes: expected [N, 4] values x1,y1,x2,y2, got shape {array.shape}")
    return np.stack([check_box(b, width, height) for b in array.reshape(-1, 4)])


def crop_box(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The pixels of ``image`` inside a checked ``box`` [4] (rounded outwards)."""
    x1, y1 = int(np.floor(box[0])), int(np.floor(box[1]))
    x2, y2 = int(np.ceil(box[2])), int(np.ceil(box[3]))
    return image[y1:y2, x1:x2]


def crop_boxes(image: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    """Views of ``image`` [H, W, 3] inside ``boxes`` float [N, 4] (x1, y1, x2, y2).

    Boxes are rounded outwards and clipped to the image; every crop is at least 1x1 pixel.
    """
    height, width = image.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    x1 = np.clip(np.floor(boxes[:, 0]), 0, width - 1).astype(np.int64)
    y1 = np.clip(np.floor(boxes[:, 1]), 0, height - 1).astype(np.int64)
    x2 = np.clip(np.ceil(boxes[:, 2]), x1 + 1, width).astype(np.int64)
    y2 = np.clip(np.ceil(boxes[:, 3]), y1 + 1, height).astype(np.int64)
    return [image[b:d, a:c] for a, b, c, d in zip(x1, y1, x2, y2, strict=True)]
