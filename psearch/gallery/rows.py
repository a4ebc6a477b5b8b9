"""Row metadata of a gallery: where each indexed detection comes from, as columnar NumPy arrays.

Row ``i`` describes FAISS id ``i``. Arrays are loaded once, so looking up the rows of a result
costs a few fancy-indexing operations, microseconds even at a million rows. Strings are stored
without pickling: the (few) distinct sources as a table plus an int32 code per row, the crop
paths as UTF-8 bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psearch.errors import PsearchError
from psearch.io import atomic_path
from psearch.manifest import Manifest

ROW_ARRAYS = ("sources", "source_ids", "frames", "boxes", "scores", "crops")


@dataclass
class Rows:
    """Metadata of N gallery rows.

    sources: str [S] distinct source paths; source_ids: int32 [N] into ``sources``;
    frames: int64 [N] (-1 for images); boxes: float32 [N, 4] (x1, y1, x2, y2);
    scores: float32 [N] detector confidence; crops: bytes [N] UTF-8 crop paths ('' if none).
    """

    sources: np.ndarray
    source_ids: np.ndarray
    frames: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    crops: np.ndarray

    def __len__(self) -> int:
        return len(self.source_ids)

    @classmethod
    def from_columns(cls, sources: np.ndarray, frames: np.ndarray, boxes: np.ndarray,
                     scores: np.ndarray, crops: np.ndarray | list[str]) -> Rows:
        """Rows from per-row columns: sources str [N], frames [N], boxes [N, 4], scores [N],
        crops str [N] (absolute paths, or '' when there is no crop file)."""
        table, codes = np.unique(np.asarray(sources, dtype=str), return_inverse=True)
        return cls(
            sources=table,
            source_ids=codes.astype(np.int32).reshape(-1),
            frames=np.asarray(frames, dtype=np.int64).reshape(-1),
            boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            scores=np.asarray(scores, dtype=np.float32).reshape(-1),
            crops=np.char.encode(np.asarray(crops, dtype=str), "utf-8"),
        )

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> Rows:
        """The rows of a detect directory, crop paths made absolute."""
        root = manifest.root.resolve()
        crops = [str(root / c) if c else "" for c in manifest.crops]
        return cls.from_columns(manifest.sources, manifest.frames, manifest.boxes,
                                manifest.scores, crops)

    @classmethod
    def empty(cls) -> Rows:
        return cls.from_columns(np.zeros(0, str), np.zeros(0), np.zeros((0, 4)), np.zeros(0),
                                np.zeros(0, str))

    def concat(self, other: Rows) -> Rows:
        """These rows followed by ``other`` (the source tables are merged)."""
        return Rows.from_columns(
            np.concatenate([self.sources[self.source_ids], other.sources[other.source_ids]]),
            np.concatenate([self.frames, other.frames]),
            np.concatenate([self.boxes, other.boxes]),
            np.concatenate([self.scores, other.scores]),
            np.char.decode(np.concatenate([self.crops, other.crops]), "utf-8"),
        )

    def crop(self, row: int) -> str:
        return self.crops[row].decode("utf-8")

    def source(self, row: int) -> str:
        return str(self.sources[self.source_ids[row]])

    def nbytes(self) -> int:
        return sum(getattr(self, name).nbytes for name in ROW_ARRAYS)

    def save(self, path: str | os.PathLike) -> None:
        """Write the arrays to one uncompressed ``.npz`` atomically."""
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **{name: getattr(self, name) for name in ROW_ARRAYS})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Rows:
        path = Path(path)
        if not path.is_file():
            raise PsearchError(f"{path}: gallery metadata file missing")
        try:
            with np.load(path, allow_pickle=False) as data:
                rows = cls(**{name: data[name] for name in ROW_ARRAYS})
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise PsearchError(f"{path}: corrupt gallery metadata ({exc})") from None
        n = len(rows.source_ids)
        if not (len(rows.frames) == len(rows.scores) == len(rows.crops) == len(rows.boxes) == n):
            raise PsearchError(f"{path}: corrupt gallery metadata (columns of unequal length)")
        return rows
