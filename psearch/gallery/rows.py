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

from psearch.core.errors import PsearchError
from psearch.core.io import atomic_path
from psearch.formats.manifest import Manifest

ROW_ARRAYS = ("sources", "source_ids", "frames", "boxes", "scores", "crops", "times", "source_fps",
              "source_steps")
TIME_ARRAYS = ("times", "source_fps", "source_steps")
"""Arrays added for video times; galleries saved before them load with these unknown (NaN)."""


@dataclass
class Rows:
    """Metadata of N gallery rows.

    sources: str [S] distinct source paths; source_ids: int32 [N] into ``sources``;
    frames: int64 [N] (-1 for images); boxes: float32 [N, 4] (x1, y1, x2, y2);
    scores: float32 [N] detector confidence; crops: bytes [N] UTF-8 crop paths ('' if none);
    times: float64 [N] seconds into the video (NaN for images or unknown); source_fps,
    source_steps: float64 [S] each video source's frame rate and the frames between two
    processed frames (NaN for images or unknown).
    """

    sources: np.ndarray
    source_ids: np.ndarray
    frames: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    crops: np.ndarray
    times: np.ndarray
    source_fps: np.ndarray
    source_steps: np.ndarray

    def __len__(self) -> int:
        return len(self.source_ids)

    @classmethod
    def from_columns(cls, sources: np.ndarray, frames: np.ndarray, boxes: np.ndarray,
                     scores: np.ndarray, crops: np.ndarray | list[str],
                     times: np.ndarray | None = None,
                     videos: dict[str, tuple[float, float]] | None = None) -> Rows:
        """Rows from per-row columns: sources str [N], frames [N], boxes [N, 4], scores [N],
        crops str [N] (absolute paths, or '' when there is no crop file), times [N] seconds
        (NaN: none); ``videos`` maps a video source to its (fps, step)."""
        table, codes = np.unique(np.asarray(sources, dtype=str), return_inverse=True)
        timing = np.array([(videos or {}).get(str(s), (np.nan, np.nan)) for s in table],
                          np.float64).reshape(-1, 2)
        n = len(codes)
        return cls(
            sources=table,
            source_ids=codes.astype(np.int32).reshape(-1),
            frames=np.asarray(frames, dtype=np.int64).reshape(-1),
            boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            scores=np.asarray(scores, dtype=np.float32).reshape(-1),
            crops=np.char.encode(np.asarray(crops, dtype=str), "utf-8"),
            times=(np.full(n, np.nan) if times is None
                   else np.asarray(times, dtype=np.float64).reshape(-1)),
            source_fps=timing[:, 0].copy(),
            source_steps=timing[:, 1].copy(),
        )

    def videos(self) -> dict[str, tuple[float, float]]:
        """Each source with a known frame rate -> (fps, step)."""
        return {str(s): (float(f), float(st)) for s, f, st in
                zip(self.sources, self.source_fps, self.source_steps, strict=True)
                if np.isfinite(f)}

    @property
    def has_video(self) -> bool:
        """True when any row is a video frame."""
        return bool((self.frames >= 0).any())

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> Rows:
        """The rows of a detect directory, crop paths made absolute."""
        root = manifest.root.resolve()
        crops = [str(root / c) if c else "" for c in manifest.crops]
        return cls.from_columns(manifest.sources, manifest.frames, manifest.boxes,
                                manifest.scores, crops, manifest.times, manifest.videos)

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
            np.concatenate([self.times, other.times]),
            {**self.videos(), **other.videos()},
        )

    def take(self, index: np.ndarray | slice) -> Rows:
        """The rows at ``index`` (an index array or a slice), in that order."""
        return Rows.from_columns(
            self.sources[self.source_ids[index]], self.frames[index], self.boxes[index],
            self.scores[index], np.char.decode(self.crops[index], "utf-8"), self.times[index],
            self.videos())

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
                arrays = {name: data[name] for name in ROW_ARRAYS
                          if name in data.files or name not in TIME_ARRAYS}
        except Exception as exc:  # zipfile, zlib, numpy and OS errors of a damaged file
            raise PsearchError(f"{path}: corrupt gallery metadata ({_reason(exc)})") from None
        n, s = len(arrays["source_ids"]), len(arrays["sources"])
        arrays.setdefault("times", np.full(n, np.nan))
        arrays.setdefault("source_fps", np.full(s, np.nan))
        arrays.setdefault("source_steps", np.full(s, np.nan))
        rows = cls(**arrays)
        if not (len(rows.frames) == len(rows.scores) == len(rows.crops) == len(rows.boxes)
                == len(rows.times) == n) or not len(rows.source_fps) == len(rows.source_steps) == s:
            raise PsearchError(f"{path}: corrupt gallery metadata (columns of unequal length)")
        if n and (rows.source_ids.min() < 0 or rows.source_ids.max() >= s):
            raise PsearchError(f"{path}: corrupt gallery metadata (source codes out of range)")
        return rows


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
