"""The served gallery: one loaded generation at a time, swapped atomically when a newer one is
published.

Every request calls ``GalleryState.current()``: it stats ``gallery.json`` (the header that a save
writes last, by rename); if its mtime/size changed, one thread (under a lock) loads the generation
it names and replaces the reference, while the others keep using the snapshot they hold. A
request works on one ``Snapshot`` from start to end, so it never mixes two generations; a
generation whose files are deleted while it is being read (a newer save won the race) is retried,
and until a load succeeds the previous generation keeps serving.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from psearch.core.errors import PsearchError
from psearch.gallery.store import HEADER_NAME, Gallery
from psearch.search.person_search import PersonSearch

LOAD_RETRIES = 5


@dataclass(frozen=True)
class Snapshot:
    """One loaded generation: the search object, its generation number and a set of sources."""

    search: PersonSearch
    generation: int
    sources: frozenset[str]
    loaded_at: float

    @property
    def gallery(self) -> Gallery:
        return self.search.gallery


class GalleryState:
    """The gallery directory a server answers from, reloaded when its header changes."""

    def __init__(self, directory: str | os.PathLike, device: str = "cpu",
                 checkpoint: str | os.PathLike | None = None, embedder: Any = None) -> None:
        self.directory = Path(directory)
        self.started = time.time()
        self.reloads = 0
        self._lock = threading.Lock()
        self._stamp = self._header_stamp()
        search = PersonSearch(self.directory, device=device, embedder=embedder,
                              checkpoint=checkpoint)
        self.embedder = search.embedder
        self._snapshot = _snapshot(search)

    def _header_stamp(self) -> tuple[int, int]:
        try:
            st = (self.directory / HEADER_NAME).stat()
        except OSError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_size)

    def current(self) -> Snapshot:
        """The newest fully published generation (reloaded here if the header changed)."""
        if self._header_stamp() == self._stamp:
            return self._snapshot
        with self._lock:  # one reloader; the others wait, then see the new stamp
            stamp = self._header_stamp()
            if stamp != self._stamp:
                fresh = self._load()
                if fresh is not None:
                    self._snapshot, self._stamp = fresh, stamp
                    self.reloads += 1
        return self._snapshot

    def _load(self) -> Snapshot | None:
        for attempt in range(LOAD_RETRIES):
            try:
                gallery = Gallery.load(self.directory)
            except PsearchError:  # files replaced under us by a newer save: read again
                time.sleep(0.01 * (attempt + 1))
                continue
            if gallery.header["generation"] <= self._snapshot.generation or len(gallery) == 0:
                return self._snapshot
            return _snapshot(PersonSearch(gallery, embedder=self.embedder))
        return None


def _snapshot(search: PersonSearch) -> Snapshot:
    gallery = search.gallery
    if gallery.kind in ("ivf", "ivfpq"):  # row vectors for query expansion
        import faiss

        faiss.extract_index_ivf(gallery.index).make_direct_map()
    return Snapshot(search, int(gallery.header.get("generation", 0)),
                    frozenset(str(s) for s in gallery.rows.sources), time.time())


def row_vectors(gallery: Gallery, rows: list[int]) -> np.ndarray:
    """The indexed vectors of gallery ``rows`` float32 [R, D]; ``PsearchError`` for a bad row."""
    bad = [r for r in rows if not 0 <= r < len(gallery)]
    if bad:
        raise PsearchError(f"row {bad[0]} is not in the gallery (0..{len(gallery) - 1})")
    return gallery.index.reconstruct_batch(np.asarray(rows, np.int64)).astype(np.float32)
