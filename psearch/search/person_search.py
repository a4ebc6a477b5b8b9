"""Search a gallery built by ``psearch index``: ``PersonSearch`` (re-exported by ``psearch.api``).

>>> ps = PersonSearch("gallery/", device="cpu")
>>> matches = ps.query("q.jpg", box=(x1, y1, x2, y2), top_k=10)    # list[Match]
>>> ps.draw("q.jpg", (x1, y1, x2, y2), matches, "sheet.png")      # or "sheet.html"
>>> sightings = ps.sightings("q.jpg", box=(x1, y1, x2, y2))          # videos: list[Sighting]

The embedder is the one recorded in the gallery (its checkpoint must still have the same
sha256); pass ``embedder=`` any ``psearch.roles.Embedder`` of the same embedding size to use
another one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from psearch.core.boxes import ImageLike, as_rgb, check_box, check_boxes, crop_box
from psearch.core.errors import PsearchError
from psearch.core.io import file_sha256
from psearch.gallery.sightings import Sighting
from psearch.gallery.store import Gallery, Match
from psearch.registry import load_embedder as load_model_embedder

__all__ = ["PersonSearch", "load_gallery_embedder"]


class PersonSearch:
    """A loaded gallery plus the re-ID model that embedded it; ``query`` returns ranked matches.

    gallery: a gallery directory or a ``Gallery``; device: "auto", "cpu", "cuda", ...;
    embedder: overrides the gallery's re-ID model; checkpoint: the gallery's re-ID checkpoint
    at another path (it must have the recorded sha256).
    """

    def __init__(self, gallery: str | os.PathLike | Gallery, device: str = "auto",
                 embedder: Any = None, checkpoint: str | os.PathLike | None = None) -> None:
        self.gallery = (gallery if isinstance(gallery, Gallery)
                        else Gallery.load(gallery, mmap=True))  # read-only: memory-mapped
        if len(self.gallery) == 0:
            raise PsearchError("the gallery is empty")
        self.embedder = embedder or load_gallery_embedder(
            self.gallery.header["reid"], device, checkpoint)
        if int(self.embedder.dim) != self.gallery.dim:
            raise PsearchError(f"the re-ID model embeds into {self.embedder.dim} dimensions but "
                               f"the gallery holds {self.gallery.dim}: it was built with another "
                               "model")

    def embed(self, image: ImageLike, boxes: np.ndarray | Sequence | None = None) -> np.ndarray:
        """Embed the people at ``boxes`` [N, 4] (x1, y1, x2, y2) of ``image`` -> float32 [N, D];
        ``boxes=None`` embeds the whole image as one already-cropped person -> [1, D] (with
        ``embed_crops`` when the embedder has it, else as one box covering the image)."""
        rgb = as_rgb(image)
        if boxes is None:
            if hasattr(self.embedder, "embed_crops"):
                return self.embedder.embed_crops([rgb])
            h, w = rgb.shape[:2]
            return self.embedder.embed_boxes(rgb, np.array([[0, 0, w, h]], dtype=np.float32))
        return self.embedder.embed_boxes(rgb, check_boxes(boxes, rgb.shape[1], rgb.shape[0]))

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


def load_gallery_embedder(reid: dict, device: str = "auto",
                  checkpoint: str | os.PathLike | None = None) -> Any:
    """The embedder a gallery was built with (``reid``: its header entry), any kind that embeds.

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
        # an .onnx exported from the gallery's checkpoint records that checkpoint's sha256
        exported = path.suffix.lower() == ".onnx" and load_model_embedder(path, device)
        if exported and exported.describe().get("checkpoint_sha256") == expected:
            return exported
        raise PsearchError(f"{path}: sha256 differs from the checkpoint the gallery was built "
                           f"with ({expected[:12]}...); rebuild the gallery with `psearch embed` "
                           "and `psearch index`, or pass the original with --checkpoint")
    return load_model_embedder(path, device)
