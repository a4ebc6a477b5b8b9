"""``psearch embed``: the embedding of every detection of a detect manifest, row-aligned with it,
by any ``roles.Embedder``: re-ID networks (``source == "crops"``) embed the manifest's crop files
in batches; joint models (``source == "frames"``) embed the boxes on their decoded frames.

The output and its resuming / appending are ``psearch.formats.embeddings``' (``EmbeddingsWriter``):
an interrupted run resumes where it stopped, and a manifest that grew (``psearch detect`` run
again with more inputs) is embedded by appending the new rows only.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from psearch.core.errors import PsearchError
from psearch.core.media import IMAGE, FrameSampling, Source, iter_pictures, read_image
from psearch.core.progress import progress_bar
from psearch.formats.embeddings import EmbeddingsWriter, embeddings_meta
from psearch.formats.manifest import MANIFEST_NAME, Manifest, read_manifest
from psearch.roles import Embedder

SAVE_EVERY_S = 10.0
"""Seconds between progress saves (flush of the partial rows + progress file)."""


def check_crops(manifest: Manifest) -> None:
    """``PsearchError`` naming the first missing crop file of ``manifest``, if any."""
    missing = [i for i in range(len(manifest)) if not manifest.crop_path(i).is_file()]
    if missing:
        raise PsearchError(f"{manifest.root / MANIFEST_NAME}: {len(missing)} crop file(s) missing, "
                           f"first {manifest.crop_path(missing[0])} (row {missing[0]})")


def embed_manifest(model: Embedder, manifest_path: str | os.PathLike,
                   out_dir: str | os.PathLike, batch_size: int = 128, workers: int = 4,
                   restart: bool = False, progress: bool = True,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Embed every detection of a detect manifest into ``out_dir``
    (``psearch.formats.embeddings``), resuming an interrupted run and appending to a shorter
    one; return the ``embeddings.json`` metadata.

    ``restart`` discards a partial run and replaces a finished output made from another
    checkpoint or manifest (without it those are errors, so no work is lost by accident).
    """
    manifest = read_manifest(manifest_path)
    if model.source == "crops":
        check_crops(manifest)
    writer = EmbeddingsWriter(out_dir, embeddings_meta(model, manifest), manifest, restart, log)
    if writer.up_to_date:
        return writer.close()
    fill = embed_rows if model.source == "crops" else embed_frames
    fill(model, manifest, writer.array, writer.done, batch_size, workers, progress, writer.save)
    return writer.close()


def embed_rows(model: Embedder, manifest: Manifest, array: np.ndarray, start: int,
               batch_size: int, workers: int, progress: bool,
               save: Callable[[int], None]) -> None:
    """Fill ``array[start:]`` [N, D] with the features of the manifest's crops
    (``model.embed_crops``).

    Batches are read by ``workers`` threads, a few batches ahead of the model; ``save(rows_done)``
    is called every ``SAVE_EVERY_S`` seconds and at the end.
    """

    def load(lo: int, hi: int) -> list[np.ndarray]:
        return [read_image(manifest.crop_path(i)) for i in range(lo, hi)]

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
                array[lo:hi] = model.embed_crops(future.result())
                done = hi
                bar.update(hi - lo)
                if time.monotonic() - last_save > SAVE_EVERY_S:
                    save(saved := done)
                    last_save = time.monotonic()
        finally:  # keep the finished rows, also on an error or an interrupt
            for _, future in pending:
                future.cancel()
            if done > saved or not spans:
                save(done)


def embed_frames(model: Embedder, manifest: Manifest, array: np.ndarray, start: int,
                 batch_size: int, workers: int, progress: bool,
                 save: Callable[[int], None]) -> None:
    """Fill ``array[start:]`` [N, D] with the features of the manifest's boxes embedded on their
    frames (``model.embed_boxes``); videos are decoded once, in order. ``save(rows_done)`` is
    called every ``SAVE_EVERY_S`` seconds and at the end (``batch_size``, ``workers``: unused,
    one frame is one call)."""
    filled = np.zeros(len(array), bool)
    filled[:start] = True
    todo = np.arange(start, len(array))
    last_save = time.monotonic()

    def prefix() -> int:
        missing = np.flatnonzero(~filled)
        return int(missing[0]) if len(missing) else len(array)

    with progress_bar(total=len(array), initial=start, desc="embed", unit="box",
                      enabled=progress) as bar:
        try:
            for source in dict.fromkeys(manifest.sources[todo].tolist()):
                rows = todo[manifest.sources[todo] == source]
                wanted = set(manifest.frames[rows].tolist())
                kind = manifest.finished.get(source, IMAGE)
                for frame, rgb in iter_pictures(Source(Path(source), kind), FrameSampling()):
                    if not wanted:  # the rest of the video holds no row to embed
                        break
                    if frame not in wanted:
                        continue
                    these = rows[manifest.frames[rows] == frame]
                    array[these] = model.embed_boxes(rgb, manifest.boxes[these])
                    filled[these] = True
                    bar.update(len(these))
                    wanted.discard(frame)
                    if time.monotonic() - last_save > SAVE_EVERY_S:
                        save(prefix())
                        last_save = time.monotonic()
        finally:  # keep the finished rows, also on an error or an interrupt
            save(prefix())
