"""Uploaded query pictures, decoded defensively: size-limited bytes, raster formats only, pixel
count checked from the header before any decoding (a decompression bomb never expands)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from psearch.core.errors import PsearchError

MAX_UPLOAD_BYTES = 16 * 1024 * 1024
MAX_PIXELS = 40_000_000
FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "GIF", "TIFF")


def decode_upload(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """RGB uint8 [H, W, 3] from uploaded bytes; ``PsearchError`` (one line) for anything else."""
    if not data:
        raise PsearchError("the upload is empty")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise PsearchError(f"image of {width}x{height} pixels is larger than the "
                                   f"{max_pixels} pixels allowed")
            if width < 2 or height < 2:
                raise PsearchError(f"image of {width}x{height} pixels is too small")
            rgb = np.asarray(image.convert("RGB"))
    except PsearchError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise PsearchError("not a supported image (JPEG, PNG, BMP, WebP, GIF or TIFF)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise PsearchError(f"cannot decode the image ({str(exc).splitlines()[0][:120]})") from None
    return np.ascontiguousarray(rgb)
