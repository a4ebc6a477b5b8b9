"""Embeddings of a joint model for the gallery, in ``psearch embed``'s output format
(``embeddings.npy`` float32 [N, D] row-aligned with a detect manifest, plus ``embeddings.json``
``{"manifest", "rows", "dim", "checkpoint", "checkpoint_sha256", "model"}``), made two ways:

- ``EmbeddingSink``: ``psearch detect --embed`` appends each finished input's detection
  embeddings (from the same forward pass as its boxes) next to its manifest rows, so the detect
  directory is also an embeddings directory for ``psearch index``;
- ``embed_manifest_frames``: ``psearch embed --weights joint.pt`` embeds a manifest's boxes by
  RoI pooling on their full frames (not on the crops).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from psearch.core.errors import PsearchError
from psearch.core.io import file_sha256, save_npy_atomic, write_json_atomic
from psearch.core.progress import progress_bar
from psearch.detector.inputs import IMAGE, FrameSampling, Source, iter_pictures
from psearch.formats.manifest import (
    MANIFEST_NAME,
    Manifest,
    manifest_dir,
    read_finished_sources,
    read_manifest,
)

EMBEDDINGS_NAME = "embeddings.npy"
META_NAME = "embeddings.json"
ROWS_NAME = "embeddings.rows.f32"
"""Raw float32 rows appended by ``EmbeddingSink`` while a detect run goes on."""


def embeddings_meta(searcher: Any, manifest_root: Path, rows: int) -> dict[str, Any]:
    """The ``embeddings.json`` of ``rows`` embeddings of ``manifest_root`` by ``searcher``."""
    if searcher.checkpoint_path is None:
        raise PsearchError("embed: the model was not loaded from a checkpoint file")
    return {"manifest": str((manifest_root / MANIFEST_NAME).resolve()), "rows": rows,
            "dim": int(searcher.dim), "checkpoint": str(searcher.checkpoint_path.resolve()),
            "checkpoint_sha256": file_sha256(searcher.checkpoint_path),
            "model": searcher.describe().get("backbone")}


def manifest_rows(root: Path) -> int:
    """Rows of a detect directory's manifest: the detections of its finished inputs."""
    return sum(int(r["detections"]) for r in read_finished_sources(root).values())


class EmbeddingSink:
    """Row-aligned embeddings of a detect directory, appended input by input.

    ``append`` (before the input's manifest rows are written) adds raw rows to
    ``embeddings.rows.f32``; on opening, rows beyond the manifest's (an input interrupted
    between the two writes) are cut off; ``finish`` writes ``embeddings.npy`` and then
    ``embeddings.json``.
    """

    def __init__(self, out_dir: str | os.PathLike, searcher: Any) -> None:
        self.root, self.searcher, self.dim = Path(out_dir), searcher, int(searcher.dim)
        self.path = self.root / ROWS_NAME
        rows = manifest_rows(self.root)
        have = self.path.stat().st_size // (4 * self.dim) if self.path.is_file() else 0
        if have < rows:
            raise PsearchError(f"{self.root}: holds {rows} detections without embeddings (a run "
                               f"without --embed); use another --out")
        with open(self.path, "ab") as f:
            f.truncate(rows * 4 * self.dim)

    def append(self, features: np.ndarray) -> None:
        """Add float [K, D] rows (durably: flushed and synced)."""
        with open(self.path, "ab") as f:
            f.write(np.ascontiguousarray(features, np.float32).reshape(-1, self.dim).tobytes())
            f.flush()
            os.fsync(f.fileno())

    def finish(self) -> dict[str, Any]:
        """Write ``embeddings.npy`` and ``embeddings.json``; return the latter."""
        rows = np.fromfile(self.path, np.float32).reshape(-1, self.dim)
        expected = manifest_rows(self.root)
        if len(rows) != expected:
            raise PsearchError(f"{self.path}: {len(rows)} embeddings for {expected} "
                               f"detections; re-run psearch detect --embed with another --out")
        save_npy_atomic(self.root / EMBEDDINGS_NAME, rows)
        meta = embeddings_meta(self.searcher, self.root, len(rows))
        write_json_atomic(self.root / META_NAME, meta)
        return meta


def _frames_of(source: str, kind: str, wanted: set[int]):
    """(frame index, RGB) of the wanted frames of an image (-1) or a video."""
    for frame, rgb in iter_pictures(Source(Path(source), kind), FrameSampling(every=1)):
        if frame in wanted:
            yield frame, rgb


def embed_manifest_frames(searcher: Any, manifest_path: str | os.PathLike,
                          out_dir: str | os.PathLike, restart: bool = False,
                          progress: bool = True) -> dict[str, Any]:
    """Embed every box of a detect manifest on its full frame into ``out_dir`` (see the module
    docstring); return the ``embeddings.json`` metadata. Videos are decoded once, in order.
    Embeddings of another checkpoint or manifest there are replaced only with ``restart``."""
    manifest: Manifest = read_manifest(manifest_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = embeddings_meta(searcher, manifest_dir(manifest_path), len(manifest))
    old = out / META_NAME
    if old.is_file() and not restart:
        try:
            same = json.loads(old.read_text()) == meta
        except ValueError:
            same = False
        if same and (out / EMBEDDINGS_NAME).is_file():
            return meta
        raise PsearchError(f"{out / EMBEDDINGS_NAME}: holds embeddings of another run; pass "
                           f"--restart to replace them")
    features = np.zeros((len(manifest), int(searcher.dim)), np.float32)
    bar = progress_bar(total=len(manifest), enabled=progress, desc="embed", unit="box")
    for source in dict.fromkeys(manifest.sources.tolist()):
        rows = np.flatnonzero(manifest.sources == source)
        kind = manifest.finished.get(source, IMAGE)
        for frame, rgb in _frames_of(source, kind, set(manifest.frames[rows].tolist())):
            these = rows[manifest.frames[rows] == frame]
            features[these] = searcher.embed_boxes(rgb, manifest.boxes[these])
            bar.update(len(these))
    bar.close()
    save_npy_atomic(out / EMBEDDINGS_NAME, features)
    write_json_atomic(out / META_NAME, meta)
    return meta
