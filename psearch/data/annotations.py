"""The annotation model every stage reads: images with person boxes, identities and queries.

Boxes are float ``(x1, y1, x2, y2)`` in pixels everywhere in psearch; the ``[x y w h]`` of the
dataset files is converted once, in the loaders.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

UNLABELED_PID = -1
"""Person id of a box whose identity is not annotated (CUHK-SYSU's unnamed people, PRW's -2)."""

SPLITS = ("train", "test")


@dataclass
class ImageRecord:
    """One scene image and every person box in it.

    boxes: float32 [N, 4] (x1, y1, x2, y2); pids: int64 [N], ``UNLABELED_PID`` if unknown.
    """

    name: str
    path: Path
    boxes: np.ndarray
    pids: np.ndarray
    camera: int = 0
    split: str = "train"

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.pids = np.asarray(self.pids, dtype=np.int64).reshape(-1)
        if len(self.boxes) != len(self.pids):
            raise ValueError(f"{self.name}: {len(self.boxes)} boxes but {len(self.pids)} pids")


@dataclass
class QueryRecord:
    """A query: the person ``pid`` at ``box`` (float32 [4], x1 y1 x2 y2) in image ``image``."""

    image: str
    box: np.ndarray
    pid: int
    camera: int = 0

    def __post_init__(self) -> None:
        self.box = np.asarray(self.box, dtype=np.float32).reshape(4)


GalleryList = list[tuple[str, "np.ndarray | None"]]
"""A query's gallery: (image name, ground-truth box [4] of the query person there, or None)."""


@dataclass
class PersonSearchDataset:
    """A person-search dataset: training images, gallery (test) images and queries.

    ``cuhk_protocols`` maps a CUHK-SYSU gallery size (50, 100, ...) to one ``GalleryList`` per
    query, in query order, exactly as the TestG{N}.mat files list them. It is empty for PRW and
    folder datasets, whose gallery is every test image (see ``psearch.evaluation``).

    ``crops``: every image is one person crop whose single box covers it (Market-1501 layout);
    such a dataset is scored with the re-ID protocol (``psearch.evaluation.market``), its
    queries' images are ``query_images`` (in neither split), and in its gallery pid 0 marks a
    distractor and ``UNLABELED_PID`` a junk crop.
    """

    name: str
    root: Path
    train: list[ImageRecord]
    gallery: list[ImageRecord]
    queries: list[QueryRecord]
    cuhk_protocols: dict[int, list[GalleryList]] = field(default_factory=dict)
    crops: bool = False
    query_images: list[ImageRecord] = field(default_factory=list)

    def split(self, split: str) -> list[ImageRecord]:
        """Images of ``split``: "train" or "test" (the gallery)."""
        if split == "train":
            return self.train
        if split in ("test", "gallery"):
            return self.gallery
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")

    def image(self, name: str) -> ImageRecord:
        """The record of image ``name`` from either split (or ``query_images``)."""
        if not hasattr(self, "_by_name"):
            self._by_name = {r.name: r for r in (*self.train, *self.gallery, *self.query_images)}
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"image {name!r} is not in dataset {self.root}") from None


def data_fingerprint(records: list[ImageRecord]) -> str:
    """SHA-256 of images' names and boxes (order-independent): every trainer's resume check."""
    digest = hashlib.sha256()
    for record in sorted(records, key=lambda r: r.name):
        digest.update(record.name.encode())
        digest.update(np.round(record.boxes, 2).astype(np.float32).tobytes())
    return digest.hexdigest()
