"""Embeddings directories: the vectors of a detect manifest's rows, row-aligned with it.

Every writer (``psearch embed``, ``psearch detect --embed``) and reader (the gallery) uses this
module::

    embeddings.npy    float32 [N, D], row i = manifest row i, L2-normalised
    embeddings.json   {"manifest", "rows", "dim", "checkpoint", "checkpoint_sha256", "model",
                       "rows_digest"}

``EmbeddingsWriter`` (``psearch embed``) fills ``embeddings.partial.npy`` (a memory-mapped .npy
of the final shape) and records the rows done in ``embeddings.progress.json`` after flushing them;
an interrupted run resumes from there, and a grown manifest whose first rows are unchanged
(``rows_digest``) is embedded by appending. ``EmbeddingSink`` (``detect --embed``) appends raw
rows to ``embeddings.rows.f32`` input by input. Both rename the finished array into place
before writing ``embeddings.json``, so a complete-looking output is complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from psearch.core.errors import PsearchError
from psearch.core.io import file_sha256, save_npy_atomic, write_json_atomic
from psearch.formats.manifest import MANIFEST_NAME, Manifest, read_finished_sources, read_manifest
from psearch.roles import DetectorEmbedder, Embedder

EMBEDDINGS_NAME = "embeddings.npy"
META_NAME = "embeddings.json"
PARTIAL_NAME = "embeddings.partial.npy"
PROGRESS_NAME = "embeddings.progress.json"
ROWS_NAME = "embeddings.rows.f32"
"""Raw float32 rows appended by ``EmbeddingSink`` while a detect run goes on."""


def embeddings_meta(embedder: Embedder, manifest: Manifest) -> dict[str, Any]:
    """The ``embeddings.json`` of ``manifest``'s rows embedded by ``embedder`` (its
    ``describe()`` names the checkpoint file and the backbone)."""
    info = embedder.describe()
    if not info.get("checkpoint"):
        raise PsearchError("embed: the model was not loaded from a checkpoint file")
    checkpoint = Path(info["checkpoint"]).resolve()
    return {"manifest": str((manifest.root / MANIFEST_NAME).resolve()), "rows": len(manifest),
            "dim": int(embedder.dim), "checkpoint": str(checkpoint),
            "checkpoint_sha256": file_sha256(checkpoint), "model": info.get("backbone"),
            "rows_digest": manifest.digest()}


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None if the file is absent or unreadable (torn)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_embeddings(directory: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """``embeddings.npy`` [N, D] and the ``embeddings.json`` info of an embeddings directory."""
    directory = Path(directory)
    npy, info_path = directory / EMBEDDINGS_NAME, directory / META_NAME
    for path in (npy, info_path):
        if not path.is_file():
            raise PsearchError(f"{path}: not found (run `psearch embed` first)")
    try:
        info = json.loads(info_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PsearchError(f"{info_path}: corrupt JSON ({exc})") from None
    try:
        vectors = np.load(npy, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise PsearchError(f"{npy}: unreadable embeddings ({exc})") from None
    if vectors.ndim != 2 or vectors.shape[0] != info.get("rows", vectors.shape[0]):
        raise PsearchError(f"{npy}: shape {vectors.shape} does not match {META_NAME} "
                           f"(rows {info.get('rows')}, dim {info.get('dim')})")
    return vectors, info


def describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """'dim 128 -> 256, rows 10 -> 12': what differs between two embedding metas."""
    keys = ("dim", "rows", "manifest", "checkpoint_sha256", "rows_digest")
    return ", ".join(f"{k} {old.get(k)} -> {new.get(k)}" for k in keys if old.get(k) != new.get(k))


class EmbeddingsWriter:
    """The resumable writer of ``psearch embed`` (see the module docstring).

    After construction ``done`` rows of ``array`` [N, D] are already filled (0, the rows kept
    from an interrupted or shorter run, or N with ``up_to_date``); the caller fills the rest,
    calls ``save(rows_done)`` now and then (after which those rows survive an interrupt) and
    ``close()`` at the end. ``restart`` discards a partial run and replaces a finished output
    of another checkpoint or manifest (without it those are errors).
    """

    def __init__(self, out_dir: str | os.PathLike, meta: dict[str, Any], manifest: Manifest,
                 restart: bool = False, log: Any = print) -> None:
        out = self.out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.meta, rows, dim = meta, int(meta["rows"]), int(meta["dim"])
        self.final, self.partial = out / EMBEDDINGS_NAME, out / PARTIAL_NAME
        self.progress = out / PROGRESS_NAME
        self.up_to_date, self.array, self.done = False, None, 0
        if restart:
            self.partial.unlink(missing_ok=True)
            self.progress.unlink(missing_ok=True)
        state = read_json(self.progress)
        if state is not None and not self.partial.exists():
            if state.get("done") == rows and self.final.exists() and state.get("meta") == meta:
                self._finish()  # crashed between rename and meta
                self.up_to_date, self.done = True, rows
                return
            state = None
        if state is not None and state.get("meta") != meta:
            raise PsearchError(f"{self.partial}: partial output of another run "
                               f"({describe_difference(state.get('meta', {}), meta)}); "
                               f"pass --restart to discard it")
        if state is not None:
            self.array = np.lib.format.open_memmap(self.partial, mode="r+")
            if self.array.shape != (rows, dim):
                raise PsearchError(f"{self.partial}: partial output has shape "
                                   f"{self.array.shape}, expected ({rows}, {dim}); pass "
                                   f"--restart to discard it")
            self.done = int(state.get("done", 0))
            log(f"embed: resuming at row {self.done} of {rows}")
            return
        old = read_json(out / META_NAME)
        if old == meta and self.final.exists():
            log(f"embed: {self.final} is up to date ({rows} rows)")
            self.up_to_date, self.done = True, rows
            return
        grown = self.final.exists() and not restart and self._appendable(old, manifest)
        if self.final.exists() and not restart and not grown:
            raise PsearchError(f"{self.final}: holds embeddings of another run "
                               f"({describe_difference(old or {}, meta)}); "
                               f"pass --restart to replace it")
        self.array = np.lib.format.open_memmap(self.partial, mode="w+", dtype=np.float32,
                                               shape=(rows, dim))
        if grown:  # the manifest grew: keep the rows already embedded
            self.done = int(old["rows"])
            self.array[:self.done] = np.load(self.final, mmap_mode="r")
            self.array.flush()
            log(f"embed: appending {rows - self.done} new rows to the {self.done} of "
                f"{self.final}")
        write_json_atomic(self.progress, {"meta": meta, "done": self.done})

    def _appendable(self, old: dict[str, Any] | None, manifest: Manifest) -> bool:
        """True when ``embeddings.npy`` holds the first rows of the grown ``manifest``: same
        model and manifest file, fewer rows, and those rows unchanged (their digest)."""
        meta = self.meta
        if old is None or not old.get("rows_digest"):
            return False
        same = all(old.get(k) == meta[k] for k in meta if k not in ("rows", "rows_digest"))
        n = old.get("rows")
        if not (same and isinstance(n, int) and 0 < n < meta["rows"]):
            return False
        if manifest.digest(n) != old["rows_digest"]:
            return False
        try:
            return np.load(self.final, mmap_mode="r").shape == (n, meta["dim"])
        except (OSError, ValueError):
            return False

    def save(self, done: int) -> None:
        """Flush the rows and record that the first ``done`` are finished."""
        self.array.flush()
        write_json_atomic(self.progress, {"meta": self.meta, "done": done})

    def close(self) -> dict[str, Any]:
        """Rename the complete array into place, write ``embeddings.json``; return it."""
        if not self.up_to_date:
            self.array.flush()
            self.array = None
            os.replace(self.partial, self.final)
            self._finish()
        return self.meta

    def _finish(self) -> None:
        write_json_atomic(self.out / META_NAME, self.meta)
        self.progress.unlink(missing_ok=True)


def manifest_rows(root: Path) -> int:
    """Rows of a detect directory's manifest: the detections of its finished inputs."""
    return sum(int(r["detections"]) for r in read_finished_sources(root).values())


class EmbeddingSink:
    """Row-aligned embeddings of a detect directory, appended input by input (``detect
    --embed``, by a ``DetectorEmbedder``).

    ``append`` (before the input's manifest rows are written) adds raw rows to
    ``embeddings.rows.f32``; on opening, rows beyond the manifest's (an input interrupted
    between the two writes) are cut off; ``finish`` writes ``embeddings.npy`` and then
    ``embeddings.json``.
    """

    def __init__(self, out_dir: str | os.PathLike, embedder: DetectorEmbedder) -> None:
        self.root, self.embedder, self.dim = Path(out_dir), embedder, int(embedder.dim)
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
        manifest = read_manifest(self.root)
        if len(rows) != len(manifest):
            raise PsearchError(f"{self.path}: {len(rows)} embeddings for {len(manifest)} "
                               f"detections; re-run psearch detect --embed with another --out")
        save_npy_atomic(self.root / EMBEDDINGS_NAME, rows)
        meta = embeddings_meta(self.embedder, manifest)
        write_json_atomic(self.root / META_NAME, meta)
        return meta
