"""The detection manifest: the file that joins the detector, re-ID and gallery stages.

A detect output directory holds::

    manifest.csv   one row per detection, columns MANIFEST_COLUMNS:
                   source  path of the image or video file (absolute)
                   frame   video frame index (0-based), or -1 for an image
                   x1,y1,x2,y2  the box in pixels of the source picture
                   score   detector confidence in [0, 1]
                   crop    the crop JPEG, relative to the directory
    sources.csv    one row per *finished* input, columns SOURCE_COLUMNS:
                   source, kind (image|video), frames (pictures processed), detections
    crops/         the crop JPEGs

Rows are appended input by input; an input's line in ``sources.csv`` is written only after all its
rows are flushed. Readers keep only rows of finished inputs, so a run that was interrupted still
leaves a valid manifest of what was done, and a resumed run skips the finished inputs.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psearch.errors import PsearchError
from psearch.io import atomic_path

MANIFEST_NAME = "manifest.csv"
SOURCES_NAME = "sources.csv"
MANIFEST_COLUMNS = ("source", "frame", "x1", "y1", "x2", "y2", "score", "crop")
SOURCE_COLUMNS = ("source", "kind", "frames", "detections")


@dataclass
class Manifest:
    """The detections of a detect directory, as arrays (row ``i`` is detection ``i``).

    sources: str [N]; frames: int64 [N]; boxes: float32 [N, 4]; scores: float32 [N];
    crops: str [N] relative to ``root``. ``finished`` maps each finished input to its kind.
    """

    root: Path
    sources: np.ndarray
    frames: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    crops: np.ndarray
    finished: dict[str, str]

    def __len__(self) -> int:
        return len(self.scores)

    def crop_path(self, i: int) -> Path:
        return self.root / self.crops[i]


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
        rows = list(csv.DictReader(f))
    # A torn last line (crash mid-write) lacks fields: it did not finish.
    return {r["source"]: r for r in rows if r.get("detections") not in (None, "")}


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read a detect directory (or its manifest.csv), keeping only rows of finished inputs."""
    root = manifest_dir(path)
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise PsearchError(f"{manifest_path}: manifest not found (run `psearch detect` first)")
    finished = read_finished_sources(root)
    with open(manifest_path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(header) != MANIFEST_COLUMNS:
            raise PsearchError(f"{manifest_path}: not a psearch manifest "
                               f"(expected header {','.join(MANIFEST_COLUMNS)})")
        rows = [r for r in reader if len(r) == len(MANIFEST_COLUMNS) and r[0] in finished]
    table = np.array(rows, dtype=object).reshape(-1, len(MANIFEST_COLUMNS))
    try:
        return Manifest(
            root=root,
            sources=table[:, 0].astype(str),
            frames=table[:, 1].astype(np.int64),
            boxes=table[:, 2:6].astype(np.float32),
            scores=table[:, 6].astype(np.float32),
            crops=table[:, 7].astype(str),
            finished={s: r["kind"] for s, r in finished.items()},
        )
    except ValueError as exc:
        raise PsearchError(f"{manifest_path}: malformed row ({exc})") from None


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
        keep = [r for r in rows[1:] if len(r) == len(MANIFEST_COLUMNS) and r[0] in finished]
        if len(keep) == len(rows) - 1:
            return
        with atomic_path(manifest_path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(MANIFEST_COLUMNS)
            writer.writerows(keep)

    def finished_sources(self) -> set[str]:
        return set(read_finished_sources(self.root))

    def add_source(self, source: str, kind: str, n_pictures: int, frames: np.ndarray,
                   boxes: np.ndarray, scores: np.ndarray, crops: list[str]) -> None:
        """Record one finished input: ``n_pictures`` images/frames processed, and its detections
        (frames int [K], boxes float [K, 4], scores float [K], crops K relative paths)."""
        writer = csv.writer(self._manifest)
        writer.writerows(
            (source, int(fr), *(f"{v:.2f}" for v in box), f"{sc:.5f}", crop)
            for fr, box, sc, crop in zip(frames, boxes, scores, crops, strict=True)
        )
        self._manifest.flush()
        os.fsync(self._manifest.fileno())
        csv.writer(self._sources).writerow((source, kind, int(n_pictures), len(crops)))
        self._sources.flush()

    def close(self) -> None:
        self._manifest.close()
        self._sources.close()

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
