"""``psearch embed``: the re-ID feature of every crop of a detect manifest, row-aligned with it.

Output directory::

    embeddings.npy    float32 [N, D], row i = manifest row i, L2-normalised
    embeddings.json   {"manifest", "rows", "dim", "checkpoint", "checkpoint_sha256", "model"}

While running, rows go to ``embeddings.partial.npy`` (a memory-mapped .npy of the final shape)
and the number of finished rows to ``embeddings.progress.json`` (written after the rows are
flushed). An interrupted run resumes from there; at the end the partial file is renamed to
``embeddings.npy`` and ``embeddings.json`` is written, so a complete-looking output is complete.

A manifest that grew (``psearch detect`` run again with more inputs) is embedded by appending:
when the first rows of the manifest are those already embedded (``rows_digest``), the partial
file starts as a copy of ``embeddings.npy`` and only the new rows are computed; the previous
output stays as it was until the new one replaces it.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from psearch.core.errors import PsearchError
from psearch.core.io import file_sha256, write_json_atomic
from psearch.core.media import read_image
from psearch.core.progress import progress_bar
from psearch.formats.manifest import MANIFEST_NAME, Manifest, manifest_dir, read_manifest
from psearch.reid.model import ReidModel, resize_crops

EMBEDDINGS_NAME = "embeddings.npy"
META_NAME = "embeddings.json"
PARTIAL_NAME = "embeddings.partial.npy"
PROGRESS_NAME = "embeddings.progress.json"
SAVE_EVERY_S = 10.0
"""Seconds between progress saves (flush of the partial rows + progress file)."""


def check_crops(manifest: Manifest) -> None:
    """``PsearchError`` naming the first missing crop file of ``manifest``, if any."""
    missing = [i for i in range(len(manifest)) if not manifest.crop_path(i).is_file()]
    if missing:
        raise PsearchError(f"{manifest.root / MANIFEST_NAME}: {len(missing)} crop file(s) missing, "
                           f"first {manifest.crop_path(missing[0])} (row {missing[0]})")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None if the file is absent or unreadable (torn)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """'dim 128 -> 256, rows 10 -> 12': what differs between two embedding metas."""
    keys = ("dim", "rows", "manifest", "checkpoint_sha256", "rows_digest")
    return ", ".join(f"{k} {old.get(k)} -> {new.get(k)}" for k in keys if old.get(k) != new.get(k))


def embed_manifest(model: ReidModel, manifest_path: str | os.PathLike, out_dir: str | os.PathLike,
                   batch_size: int = 128, workers: int = 4, restart: bool = False,
                   progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Embed every crop of a detect manifest into ``out_dir`` (see the module docstring), resuming
    an interrupted run; return the ``embeddings.json`` metadata.

    ``restart`` discards a partial run and replaces a finished output made from another
    checkpoint or manifest (without it those are errors, so no work is lost by accident).
    """
    manifest = read_manifest(manifest_path)
    check_crops(manifest)
    if model.checkpoint_path is None:
        raise PsearchError("embed: the model was not loaded from a checkpoint file")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, dim = len(manifest), model.dim
    meta = {"manifest": str((manifest_dir(manifest_path) / MANIFEST_NAME).resolve()),
            "rows": rows, "dim": dim, "checkpoint": str(model.checkpoint_path.resolve()),
            "checkpoint_sha256": file_sha256(model.checkpoint_path), "model": model.backbone_name,
            "rows_digest": manifest.digest()}
    final, partial, progress_path = out / EMBEDDINGS_NAME, out / PARTIAL_NAME, out / PROGRESS_NAME
    if restart:
        partial.unlink(missing_ok=True)
        progress_path.unlink(missing_ok=True)

    state = read_json(progress_path)
    if state is not None and not partial.exists():
        if state.get("done") == rows and final.exists() and state.get("meta") == meta:
            return finish(final, out, meta, progress_path)  # crashed between rename and meta
        state = None
    if state is not None and state.get("meta") != meta:
        raise PsearchError(f"{partial}: partial output of another run "
                           f"({describe_difference(state.get('meta', {}), meta)}); "
                           f"pass --restart to discard it")
    if state is None:
        old = read_json(out / META_NAME)
        if old == meta and final.exists():
            log(f"embed: {final} is up to date ({rows} rows)")
            return meta
        grown = final.exists() and not restart and appendable(old, meta, manifest, final)
        if final.exists() and not restart and not grown:
            raise PsearchError(f"{final}: holds embeddings of another run "
                               f"({describe_difference(old or {}, meta)}); "
                               f"pass --restart to replace it")
        array = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(rows, dim))
        done = 0
        if grown:  # the manifest grew: keep the rows already embedded
            done = int(old["rows"])
            array[:done] = np.load(final, mmap_mode="r")
            array.flush()
            log(f"embed: appending {rows - done} new rows to the {done} of {final}")
        write_json_atomic(progress_path, {"meta": meta, "done": done})
    else:
        array = np.lib.format.open_memmap(partial, mode="r+")
        if array.shape != (rows, dim):
            raise PsearchError(f"{partial}: partial output has shape {array.shape}, expected "
                               f"({rows}, {dim}); pass --restart to discard it")
        done = int(state.get("done", 0))
        log(f"embed: resuming at row {done} of {rows}")

    embed_rows(model, manifest, array, done, batch_size, workers, progress,
               lambda n: write_json_atomic(progress_path, {"meta": meta, "done": n}))
    del array
    os.replace(partial, final)
    return finish(final, out, meta, progress_path)


def appendable(old: dict[str, Any] | None, meta: dict[str, Any], manifest: Manifest,
               final: Path) -> bool:
    """True when ``final`` holds the embeddings of the first rows of a grown ``manifest``: same
    model and manifest file, fewer rows, and those rows unchanged (their digest)."""
    if old is None or not old.get("rows_digest"):
        return False
    same = all(old.get(k) == meta[k] for k in meta if k not in ("rows", "rows_digest"))
    n = old.get("rows")
    if not (same and isinstance(n, int) and 0 < n < meta["rows"]):
        return False
    if manifest.digest(n) != old["rows_digest"]:
        return False
    try:
        return np.load(final, mmap_mode="r").shape == (n, meta["dim"])
    except (OSError, ValueError):
        return False


def finish(final: Path, out: Path, meta: dict[str, Any], progress_path: Path) -> dict[str, Any]:
    """Write the metadata of the complete ``final`` array and drop the progress file."""
    write_json_atomic(out / META_NAME, meta)
    progress_path.unlink(missing_ok=True)
    return meta


def embed_rows(model: ReidModel, manifest: Manifest, array: np.ndarray, start: int,
               batch_size: int, workers: int, progress: bool,
               save: Callable[[int], None]) -> None:
    """Fill ``array[start:]`` [N, D] with the features of the manifest's crops.

    Batches are read and resized by ``workers`` threads, a few batches ahead of the model;
    ``save(rows_done)`` is called after flushing, every ``SAVE_EVERY_S`` seconds and at the end.
    """
    size = model.input_size

    def load(lo: int, hi: int) -> np.ndarray:
        return resize_crops([read_image(manifest.crop_path(i)) for i in range(lo, hi)], size)

    spans = [(lo, min(lo + batch_size, len(array))) for lo in range(start, len(array), batch_size)]
    done, saved, last_save = start, start, time.monotonic()
    with ThreadPoolExecutor(max(1, workers)) as pool, \
            progress_bar(total=len(array), initial=start, desc="embed", unit="crop",
                         enabled=progress) as bar:
        pending: deque = deque()
        queued = iter(spans)
        for span in queued:
            pending.append((span, pool.submit(load, *span)))
            if len(pending) > workers:
                break
        try:
            while pending:
                (lo, hi), future = pending.popleft()
                next_span = next(queued, None)
                if next_span is not None:
                    pending.append((next_span, pool.submit(load, *next_span)))
                array[lo:hi] = model.embed_batch(future.result())
                done = hi
                bar.update(hi - lo)
                if time.monotonic() - last_save > SAVE_EVERY_S:
                    array.flush()
                    save(saved := done)
                    last_save = time.monotonic()
        finally:  # keep the finished rows, also on an error or an interrupt
            for _, future in pending:
                future.cancel()
            if done > saved or not spans:
                array.flush()
                save(done)
