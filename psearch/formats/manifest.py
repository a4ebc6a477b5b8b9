"""The detection manifest: the file that joins the detector, re-ID and gallery stages.

A detect output directory holds::

    manifest.csv   one row per detection, columns MANIFEST_COLUMNS:
                   source  path of the image or video file, or of the folder of an image
                           sequence (absolute)
                   frame   video or sequence frame index (0-based), or -1 for an image
                   x1,y1,x2,y2  the box in pixels of the source picture
                   score   detector confidence in [0, 1]
                   crop    the crop JPEG, relative to the directory
                   time    video, sequence: the frame's time in seconds (frame / fps);
                           empty for an image or a video without a frame rate
    sources.csv    one row per *finished* input, columns SOURCE_COLUMNS:
                   source, kind (image|video|sequence), frames (pictures processed),
                   detections,
                   fps (the video's frame rate, empty if none), step (video frames between
                   two processed frames)
    crops/         the crop JPEGs

Manifests written before the ``time``/``fps``/``step`` columns existed are still read (times
unknown); appending to one first rewrites it with the new header.

Rows are appended input by input; an input's line in ``sources.csv`` is written only after all its
rows are flushed. Readers keep only rows of finished inputs, so a run that was interrupted still
leaves a valid manifest of what was done, and a resumed run skips the finished inputs.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psearch.core.errors import PsearchError
from psearch.core.io import atomic_path

MANIFEST_NAME = "manifest.csv"
SOURCES_NAME = "sources.csv"
MANIFEST_COLUMNS = ("source", "frame", "x1", "y1", "x2", "y2", "score", "crop", "time")
SOURCE_COLUMNS = ("source", "kind", "frames", "detections", "fps", "step")
_OLD_MANIFEST_COLUMNS = MANIFEST_COLUMNS[:-1]


@dataclass
class Manifest:
    """The detections of a detect directory, as arrays (row ``i`` is detection ``i``).

    sources: str [N]; frames: int64 [N]; boxes: float32 [N, 4]; scores: float32 [N];
    crops: str [N] relative to ``root``; times: float64 [N] seconds into the video (NaN for
    images and unknown). ``finished`` maps each finished input to its kind; ``videos`` maps
    each finished video to its (fps, step), NaN where unknown.
    """

    root: Path
    sources: np.ndarray
    frames: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    crops: np.ndarray
    finished: dict[str, str]
    times: np.ndarray
    videos: dict[str, tuple[float, float]]

    def __len__(self) -> int:
        return len(self.scores)

    def crop_path(self, i: int) -> Path:
        return self.root / self.crops[i]

    def digest(self, n: int | None = None) -> str:
        """sha256 of the first ``n`` rows (all by default): crop names and boxes. Rows are only
        ever appended, so an unchanged digest of a prefix means those rows are unchanged."""
        n = len(self) if n is None else n
        h = hashlib.sha256("\n".join(self.crops[:n].tolist()).encode())
        h.update(np.ascontiguousarray(self.boxes[:n], dtype=np.float32).tobytes())
        return h.hexdigest()


def manifest_dir(path: str | os.PathLike) -> Path:
    """The detect directory of ``path`` (the directory itself or its manifest.csv)."""
    path = Path(path)
    return path.parent if path.name == MANIFEST_NAME else path


def read_finished_sources(directory: str | os.PathLike) -> dict[str, dict[str, str]]:
    """Finished inputs of a detect directory: source -> its sources.csv row."""
    path = Path(directory) / SOURCES_NAME
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        last = (reader.fieldnames or ["detections"])[-1]
    # A torn last line (crash mid-write) lacks fields: it did not finish.
    return {r["source"]: r for r in rows
            if r.get("detections") not in (None, "") and r.get(last) is not None}


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read a detect directory (or its manifest.csv), keeping only rows of finished inputs."""
    root = manifest_dir(path)
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise PsearchError(f"{manifest_path}: manifest not found (run `psearch detect` first)")
    finished = read_finished_sources(root)
    with open(manifest_path, newline="") as f:
        reader = csv.reader(f)
        width = _header_width(manifest_path, next(reader, None))
        rows = [r for r in reader if len(r) == width and r[0] in finished]
    table = np.array(rows, dtype=object).reshape(-1, width)
    try:
        times = (np.array([float(t) if t else np.nan for t in table[:, 8]], np.float64)
                 if width == len(MANIFEST_COLUMNS) else np.full(len(table), np.nan))
        return Manifest(
            root=root,
            sources=table[:, 0].astype(str),
            frames=table[:, 1].astype(np.int64),
            boxes=table[:, 2:6].astype(np.float32),
            scores=table[:, 6].astype(np.float32),
            crops=table[:, 7].astype(str),
            finished={s: r["kind"] for s, r in finished.items()},
            times=times,
            videos={s: (_number(r.get("fps")), _number(r.get("step")))
                    for s, r in finished.items() if r["kind"] in ("video", "sequence")},
        )
    except ValueError as exc:
        raise PsearchError(f"{manifest_path}: malformed row ({exc})") from None


def _number(text: str | None) -> float:
    return float(text) if text else float("nan")


def _header_width(path: Path, header: list[str] | None) -> int:
    """Columns of a manifest with this header (the current one or the one before times)."""
    if header is not None and tuple(header) in (MANIFEST_COLUMNS, _OLD_MANIFEST_COLUMNS):
        return len(header)
    raise PsearchError(f"{path}: not a psearch manifest "
                       f"(expected header {','.join(MANIFEST_COLUMNS)})")


class ManifestWriter:
    """Appends detections input by input; see the module docstring for the guarantees."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.root = Path(directory)
        self.root.mkdir(parents=True, exist_ok=True)
        self._repair()
        self._manifest = open(self.root / MANIFEST_NAME, "a", newline="")
        self._sources = open(self.root / SOURCES_NAME, "a", newline="")
        if self._manifest.tell() == 0:
            csv.writer(self._manifest).writerow(MANIFEST_COLUMNS)
        if self._sources.tell() == 0:
            csv.writer(self._sources).writerow(SOURCE_COLUMNS)

    def _repair(self) -> None:
        """Drop rows of unfinished inputs left by an interrupted run (rewritten atomically)."""
        manifest_path = self.root / MANIFEST_NAME
        if not manifest_path.is_file():
            return
        finished = read_finished_sources(self.root)
        with open(manifest_path, newline="") as f:
            rows = list(csv.reader(f))
        width = _header_width(manifest_path, rows[0] if rows else None)
        keep = [r + [""] * (len(MANIFEST_COLUMNS) - width) for r in rows[1:]
                if len(r) == width and r[0] in finished]
        if len(keep) == len(rows) - 1 and width == len(MANIFEST_COLUMNS):
            return
        with atomic_path(manifest_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(MANIFEST_COLUMNS)
            writer.writerows(keep)
        self._upgrade_sources()

    def _upgrade_sources(self) -> None:
        """Give a sources.csv of the older layout the current header (fps, step unknown)."""
        path = self.root / SOURCES_NAME
        if not path.is_file():
            return
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if not rows or tuple(rows[0]) == SOURCE_COLUMNS:
            return
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(SOURCE_COLUMNS)
            writer.writerows(r + [""] * (len(SOURCE_COLUMNS) - len(r)) for r in rows[1:]
                             if len(r) == len(rows[0]))

    def finished_sources(self) -> set[str]:
        return set(read_finished_sources(self.root))

    def add_source(self, source: str, kind: str, n_pictures: int, frames: np.ndarray,
                   boxes: np.ndarray, scores: np.ndarray, crops: list[str],
                   fps: float | None = None, step: float | None = None) -> None:
        """Record one finished input: ``n_pictures`` images/frames processed, and its detections
        (frames int [K], boxes float [K, 4], scores float [K], crops K relative paths). A video
        gives its frame rate ``fps`` (rows get their time, frame / fps) and sampling ``step``."""
        rate = fps if fps is not None and fps > 0 else None
        writer = csv.writer(self._manifest)
        writer.writerows(
            (source, int(fr), *(f"{v:.2f}" for v in box), f"{sc:.5f}", crop,
             f"{fr / rate:.4f}" if rate is not None and fr >= 0 else "")
            for fr, box, sc, crop in zip(frames, boxes, scores, crops, strict=True)
        )
        self._manifest.flush()
        os.fsync(self._manifest.fileno())
        csv.writer(self._sources).writerow(
            (source, kind, int(n_pictures), len(crops), "" if rate is None else f"{rate:g}",
             "" if step is None else f"{step:g}"))
        self._sources.flush()

    def close(self) -> None:
        self._manifest.close()
        self._sources.close()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
