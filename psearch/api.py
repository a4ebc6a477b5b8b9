"""The Python API: find a person in a gallery built by ``psearch index``.

>>> from psearch.api import PersonSearch
>>> ps = PersonSearch("gallery/", device="cpu")
>>> matches = ps.query("q.jpg", box=(x1, y1, x2, y2), top_k=10)    # list[Match]
>>> matches[0].score, matches[0].source, matches[0].frame, matches[0].box
>>> ps.draw("q.jpg", (x1, y1, x2, y2), matches, "sheet.png")      # or "sheet.html"
>>> sightings = ps.sightings("q.jpg", box=(x1, y1, x2, y2))          # videos: list[Sighting]
>>> sightings[0].start, sightings[0].end, sightings[0].frames, sightings[0].best.box

The re-ID model is the one recorded in the gallery (its checkpoint must still have the same
sha256); pass ``embedder=`` any object with ``dim`` and ``embed_boxes(image, boxes)`` /
``embed_crops(crops)`` to use another one of the same embedding size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from psearch.errors import PsearchError
from psearch.gallery.sightings import Sighting
from psearch.gallery.store import Gallery, Match
from psearch.io import file_sha256
from psearch.media import read_image

ImageLike = str | os.PathLike | np.ndarray
"""An image path or an RGB uint8 array [H, W, 3]."""

__all__ = ["Match", "PersonSearch", "Sighting", "load_embedder", "check_box"]


class PersonSearch:
    """A loaded gallery plus the re-ID model that embedded it; ``query`` returns ranked matches.

    gallery: a gallery directory or a ``Gallery``; device: "auto", "cpu", "cuda", ...;
    embedder: overrides the gallery's re-ID model; checkpoint: the gallery's re-ID checkpoint
    at another path (it must have the recorded sha256).
    """

    def __init__(self, gallery: str | os.PathLike | Gallery, device: str = "auto",
                 embedder: Any = None, checkpoint: str | os.PathLike | None = None) -> None:
        self.gallery = gallery if isinstance(gallery, Gallery) else Gallery.load(gallery)
        if len(self.gallery) == 0:
            raise PsearchError("the gallery is empty")
        self.embedder = embedder or load_embedder(self.gallery.header["reid"], device, checkpoint)
        if int(self.embedder.dim) != self.gallery.dim:
            raise PsearchError(f"the re-ID model embeds into {self.embedder.dim} dimensions but "
                               f"the gallery holds {self.gallery.dim}: it was built with another "
                               "model")

    def embed(self, image: ImageLike, boxes: np.ndarray | Sequence | None = None) -> np.ndarray:
        """Embed the people at ``boxes`` [N, 4] (x1, y1, x2, y2) of ``image`` -> float32 [N, D];
        ``boxes=None`` embeds the whole image as one already-cropped person -> [1, D]."""
        rgb = as_rgb(image)
        if boxes is None:
            return self.embedder.embed_crops([rgb])
        boxes = np.stack([check_box(b, rgb.shape[1], rgb.shape[0]) for b in _box_list(boxes)])
        return self.embedder.embed_boxes(rgb, boxes)

    def query(self, image: ImageLike, box: Sequence[float] | np.ndarray | None = None,
              top_k: int = 10) -> list[Match]:
        """The ``top_k`` gallery detections most similar to the person at ``box`` of ``image``
        (``box=None``: ``image`` is a crop of the person), best first."""
        return self.search(self.embed(image, None if box is None else [box]), top_k)[0]

    def query_boxes(self, image: ImageLike, boxes: np.ndarray | Sequence,
                    top_k: int = 10) -> list[list[Match]]:
        """One ranked list per box of ``boxes`` [N, 4] of ``image``, searched as one batch."""
        return self.search(self.embed(image, boxes), top_k)

    def search(self, embeddings: np.ndarray, top_k: int = 10) -> list[list[Match]]:
        """Ranked matches for precomputed query embeddings float32 [Q, D]."""
        if top_k < 1:
            raise PsearchError(f"top_k must be at least 1, got {top_k}")
        return self.gallery.matches(embeddings, top_k)

    def sightings(self, image: ImageLike, box: Sequence[float] | np.ndarray | None = None,
                  top_k: int = 10, gap: float | None = None) -> list[Sighting]:
        """The ``top_k`` best sightings of the person at ``box`` of ``image``: hits of nearby
        frames of one video grouped (at most ``gap`` seconds apart, default 2), best first."""
        return self.search_sightings(self.embed(image, None if box is None else [box]),
                                     top_k, gap)[0]

    def search_sightings(self, embeddings: np.ndarray, top_k: int = 10,
                         gap: float | None = None) -> list[list[Sighting]]:
        """Sightings for precomputed query embeddings float32 [Q, D]."""
        if top_k < 1:
            raise PsearchError(f"top_k must be at least 1, got {top_k}")
        return self.gallery.sightings(embeddings, top_k, gap)

    def draw(self, query_image: ImageLike, box: Sequence[float] | np.ndarray | None,
             matches: list[Match] | list[Sighting], out: str | os.PathLike) -> Path:
        """Write the result sheet (``.png``/``.jpg`` image or ``.html`` page) of matches or
        sightings to ``out``."""
        from psearch.gallery.sheet import write_sheet

        rgb = as_rgb(query_image)
        crop = rgb if box is None else crop_box(rgb, check_box(box, rgb.shape[1], rgb.shape[0]))
        return write_sheet(crop, matches, out)


def load_embedder(reid: dict, device: str = "auto",
                  checkpoint: str | os.PathLike | None = None) -> Any:
    """The ``ReidModel`` a gallery was built with (``reid``: its header entry).

    The checkpoint (recorded path, or ``checkpoint``) must have the recorded sha256: a retrained
    or different model embeds into an incomparable space, so a mismatch is an error.
    """
    path = checkpoint or reid.get("checkpoint")
    if not path:
        raise PsearchError("the gallery records no re-ID checkpoint; pass the model that made its "
                           "embeddings (--checkpoint PATH, or embedder= in Python)")
    path = Path(path)
    if not path.is_file():
        raise PsearchError(f"{path}: the gallery's re-ID checkpoint is missing; pass its new "
                           "location with --checkpoint PATH")
    expected = reid.get("checkpoint_sha256")
    if expected and file_sha256(path) != expected:
        raise PsearchError(f"{path}: sha256 differs from the checkpoint the gallery was built "
                           f"with ({expected[:12]}...); rebuild the gallery with `psearch embed` "
                           "and `psearch index`, or pass the original with --checkpoint")
    from psearch.reid import ReidModel

    return ReidModel.from_checkpoint(path, device)


def as_rgb(image: ImageLike) -> np.ndarray:
    """An RGB uint8 array [H, W, 3] from a path or an array."""
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


def crop_box(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The pixels of ``image`` inside a checked ``box`` [4] (rounded outwards)."""
    x1, y1 = int(np.floor(box[0])), int(np.floor(box[1]))
    x2, y2 = int(np.ceil(box[2])), int(np.ceil(box[3]))
    return image[y1:y2, x1:x2]


def _box_list(boxes: np.ndarray | Sequence) -> list[np.ndarray]:
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0 or array.size % 4:
        raise PsearchError(f"boxes: expected [N, 4] values x1,y1,x2,y2, got shape {array.shape}")
    return list(array.reshape(-1, 4))
