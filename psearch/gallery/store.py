"""The gallery directory: a FAISS index, its row metadata and a small versioned header.

::

    GALLERY/
      gallery.json          header (written last: the commit point of every save)
      index-000003.faiss    the FAISS index (always a CPU index on disk), FAISS id = row
      rows-000003.npz       row metadata (see ``psearch.gallery.rows``)

Every save writes a new generation of the two data files, then atomically replaces the header
that names them, then deletes the files of older generations. A build or add interrupted at any
point therefore leaves the previous gallery readable and unchanged.

The verbs are FAISS's: ``Gallery.build``, ``add``, ``search``, ``save``, ``Gallery.load``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from psearch.core.errors import PsearchError
from psearch.core.io import atomic_path, write_json_atomic
from psearch.core.version import __version__
from psearch.gallery import index as ix
from psearch.gallery.matches import Match
from psearch.gallery.rows import Rows

if TYPE_CHECKING:
    from psearch.gallery.sightings import Sighting

HEADER_NAME = "gallery.json"
GALLERY_FORMAT = "psearch-gallery"
GALLERY_VERSION = 1


def normalized(vectors: np.ndarray, what: str = "embeddings") -> np.ndarray:
    """float32 C-contiguous [N, D] copy with unit rows; ``PsearchError`` on NaN/inf or zero rows."""
    vectors = np.array(vectors, dtype=np.float32, order="C", ndmin=2)
    if vectors.ndim != 2:
        raise PsearchError(f"{what}: expected a [N, D] array, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise PsearchError(f"{what}: contains NaN or infinite values")
    norms = np.linalg.norm(vectors, axis=1)
    if (norms == 0).any():
        raise PsearchError(f"{what}: row {int(np.argmin(norms))} is all zeros")
    faiss.normalize_L2(vectors)
    return vectors


class Gallery:
    """A searchable set of L2-normalized embeddings with their detections' metadata.

    ``header`` is the plain-data content of ``gallery.json``: rows, dim, index settings
    (kind, factory, nlist, nprobe / efSearch) and the re-ID model that made the embeddings
    (``reid``: checkpoint path, checkpoint_sha256, model), plus the inputs it was built from.
    """

    def __init__(self, index: faiss.Index, rows: Rows, header: dict) -> None:
        if index.ntotal != len(rows):
            raise PsearchError(f"gallery index has {index.ntotal} vectors but {len(rows)} rows")
        self.index = index
        self.rows = rows
        self.header = header
        self.changed = False  # rows added since loading / building
        self.retrained: str | None = None  # why the last add rebuilt the IVF index, if it did
        self._search_index: faiss.Index | None = None
        self._on_gpu = False

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def build(cls, vectors: np.ndarray, rows: Rows, index: str = "auto", reid: dict | None = None,
              nlist: int | None = None, pq_m: int | None = None,
              target_recall: float = ix.DEFAULT_TARGET_RECALL, inputs: list | None = None,
              ) -> Gallery:
        """Index ``vectors`` float32 [N, D] (row i described by ``rows`` row i).

        ``index``: auto | flat | ivf | ivfpq | hnsw; ``reid``: {"checkpoint", "checkpoint_sha256",
        "model"} of the embedder, checked at query time; ``inputs``: provenance for the header.
        """
        if len(vectors) == 0:
            raise PsearchError("no embeddings to index: the gallery would be empty")
        if len(vectors) != len(rows):
            raise PsearchError(f"{len(vectors)} embeddings but {len(rows)} metadata rows")
        vectors = normalized(vectors)
        faiss_index, info = ix.build_index(vectors, index, nlist=nlist, pq_m=pq_m)
        info.update(ix.tune_search_knob(faiss_index, vectors, info["kind"], target_recall))
        info["target_recall"] = target_recall
        now = _now()
        header = {
            "format": GALLERY_FORMAT, "version": GALLERY_VERSION, "generation": 0,
            "rows": len(rows), "dim": int(vectors.shape[1]), "metric": "inner_product",
            "index": info, "reid": dict(reid or {}), "inputs": list(inputs or []),
            "created": now, "updated": now, "psearch_version": __version__,
        }
        return cls(faiss_index, rows, header)

    def add(self, vectors: np.ndarray, rows: Rows, reid: dict | None = None,
            inputs: list | None = None) -> None:
        """Append ``vectors`` [M, D] and their ``rows``. An IVF-Flat index keeps its centroids
        unless the added rows would skew it (``index.retrain_reason``): then it is rebuilt on all
        rows with a new coarse quantizer and its ``nprobe`` tuned again.

        ``reid`` must name the same checkpoint (sha256) as the gallery's: embeddings of two
        models are not comparable.
        """
        if len(vectors) != len(rows):
            raise PsearchError(f"{len(vectors)} embeddings but {len(rows)} metadata rows")
        vectors = normalized(vectors)
        if vectors.shape[1] != self.dim:
            raise PsearchError(f"embeddings have dimension {vectors.shape[1]} but the gallery "
                               f"holds dimension {self.dim}")
        mine, theirs = self.header["reid"].get("checkpoint_sha256"), (reid or {}).get(
            "checkpoint_sha256")
        if mine != theirs:
            raise PsearchError(f"embeddings come from re-ID checkpoint sha256 {theirs} but the "
                               f"gallery was built with {mine}; build a new gallery instead")
        reason = ix.retrain_reason(self.header["index"], self.index, vectors, len(self))
        self.retrained = reason
        if reason is None:
            ix.add_in_chunks(self.index, vectors)
        else:  # a new coarse quantizer for all rows, then the search knob tuned again
            self._retrain(np.concatenate([self.vectors(), vectors]), reason)
        self.rows = self.rows.concat(rows)
        self.changed = True
        self.header["rows"] = len(self.rows)
        self.header["inputs"] = self.header["inputs"] + list(inputs or [])
        self.header["updated"] = _now()
        self._search_index = None

    def _retrain(self, vectors: np.ndarray, reason: str) -> None:
        """Rebuild the IVF index on ``vectors`` (every row, in order) with fresh centroids."""
        old = self.header["index"]
        nlist = None if old.get("nlist_auto", True) else old["nlist"]
        index, info = ix.build_index(vectors, old["kind"], nlist=nlist)
        target = old.get("target_recall", ix.DEFAULT_TARGET_RECALL)
        info.update(ix.tune_search_knob(index, vectors, info["kind"], target))
        info.update(target_recall=target, retrained=reason,
                    retrains=int(old.get("retrains", 0)) + 1)
        self.index, self.header["index"] = index, info

    # -- searching -----------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self.header["dim"])

    @property
    def kind(self) -> str:
        return self.header["index"]["kind"]

    def __len__(self) -> int:
        return len(self.rows)

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search: queries float32 [Q, D] -> (scores float32 [Q, k], rows int64 [Q, k]).

        Scores are cosine similarities (queries are normalized here); row -1 means no result
        (k larger than the gallery, or an approximate index that found fewer).
        """
        if len(self) == 0:
            raise PsearchError("the gallery is empty")
        queries = normalized(queries, "query embeddings")
        if queries.shape[1] != self.dim:
            raise PsearchError(f"query embeddings have dimension {queries.shape[1]} but the "
                               f"gallery holds dimension {self.dim} (another re-ID model?)")
        return self._searcher().search(queries, max(1, min(int(k), len(self))))

    def matches(self, queries: np.ndarray, k: int = 10) -> list[list[Match]]:
        """Search and look the results up: one ranked ``Match`` list per query row."""
        scores, ids = self.search(queries, k)
        return [self.lookup(s, i) for s, i in zip(scores, ids, strict=True)]

    def sightings(self, queries: np.ndarray, top_k: int = 10, gap: float | None = None
                  ) -> list[list[Sighting]]:
        """Search, then group hits of nearby frames of a video into sightings (see
        ``psearch.gallery.sightings``): the ``top_k`` best per query row, best first."""
        from psearch.gallery.sightings import DEFAULT_GAP_S, candidate_count, group_sightings

        scores, ids = self.search(queries, candidate_count(top_k, len(self)))
        return [group_sightings(self.rows, i, s, top_k, DEFAULT_GAP_S if gap is None else gap,
                                self.lookup) for s, i in zip(scores, ids, strict=True)]

    def lookup(self, scores: np.ndarray, ids: np.ndarray) -> list[Match]:
        """``Match`` objects for one query's result row: scores [k], ids [k] (-1 skipped)."""
        keep = ids >= 0
        ids, scores = ids[keep], scores[keep]
        r = self.rows
        sources = r.sources[r.source_ids[ids]].tolist()
        frames, det = r.frames[ids].tolist(), r.scores[ids].tolist()
        crops, boxes = r.crops[ids], r.boxes[ids]
        return [Match(rank=n + 1, score=float(s), source=src, frame=f, box=b,
                      crop=c.decode("utf-8"), det_score=d, row=int(i))
                for n, (s, i, src, f, b, c, d) in enumerate(
                    zip(scores.tolist(), ids, sources, frames, boxes, crops, det, strict=True))]

    def vectors(self) -> np.ndarray:
        """All indexed vectors float32 [N, D] (exact for flat/IVF-flat/HNSW, decoded for PQ)."""
        if self.kind in ("ivf", "ivfpq"):
            faiss.extract_index_ivf(self.index).make_direct_map()
        return self.index.reconstruct_n(0, self.index.ntotal)

    def _searcher(self) -> faiss.Index:
        if self._search_index is None:
            self._search_index, self._on_gpu = ix.to_device(self.index, self.kind)
            knob = ix.KNOB.get(self.kind)
            if knob and knob in self.header["index"]:
                ix.set_search_knob(self._search_index, self.kind, self.header["index"][knob],
                                   self._on_gpu)
        return self._search_index

    # -- persistence ---------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the gallery to ``directory`` as a new generation; see the module docstring."""
        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise PsearchError(f"{directory}: exists and is not a directory")
        directory.mkdir(parents=True, exist_ok=True)
        previous = _read_header(directory) if (directory / HEADER_NAME).is_file() else None
        generation = max(self.header["generation"], (previous or {}).get("generation", 0)) + 1
        files = {"index": f"index-{generation:06d}.faiss", "rows": f"rows-{generation:06d}.npz"}
        with atomic_path(directory / files["index"]) as tmp:
            faiss.write_index(self.index, str(tmp))
        self.rows.save(directory / files["rows"])
        header = {**self.header, "generation": generation, "files": files}
        write_json_atomic(directory / HEADER_NAME, header)  # the commit point
        self.header = header
        for stale in [*directory.glob("index-*.faiss"), *directory.glob("rows-*.npz"),
                      *directory.glob(".index-*.tmp"), *directory.glob(".rows-*.tmp")]:
            if stale.name not in files.values():
                stale.unlink(missing_ok=True)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, mmap: bool = False) -> Gallery:
        """Read a gallery directory; ``PsearchError`` naming the file if anything is wrong.
        ``mmap``: memory-map the FAISS index instead of reading it (opens a 1M-row flat index
        in well under a millisecond; for searching only, not for ``add``)."""
        directory = Path(directory)
        header = _read_header(directory)
        index_path = directory / header["files"]["index"]
        if not index_path.is_file():
            raise PsearchError(f"{index_path}: gallery index file missing")
        try:
            flags = getattr(faiss, "IO_FLAG_MMAP_IFC", faiss.IO_FLAG_MMAP) if mmap else 0
            index = faiss.read_index(str(index_path), flags)
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
            raise PsearchError(f"{index_path}: corrupt FAISS index ({reason})") from None
        rows = Rows.load(directory / header["files"]["rows"])
        if index.d != header["dim"]:
            raise PsearchError(f"{index_path}: index dimension {index.d} but {HEADER_NAME} says "
                               f"{header['dim']}")
        if not index.ntotal == len(rows) == header["rows"]:
            raise PsearchError(f"{directory}: index has {index.ntotal} vectors, metadata "
                               f"{len(rows)} rows, header {header['rows']}: inconsistent gallery")
        return cls(index, rows, header)


def is_gallery(directory: str | os.PathLike) -> bool:
    return (Path(directory) / HEADER_NAME).is_file()


def _read_header(directory: Path) -> dict:
    path = directory / HEADER_NAME
    if not path.is_file():
        what = "not a directory" if not directory.is_dir() else f"no {HEADER_NAME}"
        raise PsearchError(f"{directory}: not a psearch gallery ({what}; build one with "
                           "`psearch index`)")
    try:
        header = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PsearchError(f"{path}: corrupt gallery header ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != GALLERY_FORMAT:
        raise PsearchError(f"{path}: not a psearch gallery header")
    if header.get("version", 0) > GALLERY_VERSION:
        raise PsearchError(f"{path}: gallery version {header['version']} is newer than this "
                           f"psearch understands ({GALLERY_VERSION}); upgrade psearch")
    missing = {"rows", "dim", "index", "files", "reid"} - set(header)
    if missing:
        raise PsearchError(f"{path}: gallery header lacks {', '.join(sorted(missing))}")
    files = header["files"]
    valid = (isinstance(files, dict) and all(isinstance(files.get(k), str) and files[k]
                                             and "/" not in files[k] for k in ("index", "rows"))
             and all(isinstance(header[k], int) and header[k] >= 0 for k in ("rows", "dim"))
             and isinstance(header["index"], dict) and isinstance(header["index"].get("kind"), str)
             and isinstance(header["reid"], dict))
    if not valid:
        raise PsearchError(f"{path}: corrupt gallery header (fields of the wrong type)")
    return header


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
