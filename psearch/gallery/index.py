"""FAISS index choice, training and tuning; inner product on L2-normalized vectors (cosine).

Kinds map to FAISS factory strings: ``flat`` -> ``Flat`` (exact, ``IndexFlatIP``),
``ivf`` -> ``IVF{nlist},Flat``, ``ivfpq`` -> ``IVF{nlist},PQ{m}``, ``hnsw`` -> ``HNSW32``.
``auto`` is exact below ``AUTO_FLAT_MAX_ROWS`` rows and IVF above. The search-time knob of the
approximate kinds (``nprobe`` for IVF, ``efSearch`` for HNSW) is tuned after building: the
smallest value whose recall@10 against exact search reaches the target on a sample of the
gallery's own vectors.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from psearch.core.errors import PsearchError
from psearch.core.progress import progress_bar

INDEX_KINDS = ("auto", "flat", "ivf", "ivfpq", "hnsw")
AUTO_FLAT_MAX_ROWS = 100_000
"""``auto`` keeps exact search up to this size (a few ms per query on one core at D=256)."""
HNSW_NEIGHBORS = 32
ADD_CHUNK = 100_000
TRAIN_POINTS_PER_LIST = 40
"""IVF k-means trains on at most this many sampled vectors per list (FAISS asks for >= 39)."""
TUNE_QUERIES = 512
TUNE_K = 10
DEFAULT_TARGET_RECALL = 0.97
"""Tuned on a self-test that reads ~0.01 higher than fresh queries: 0.97 delivers >= 0.95."""
KNOB = {"ivf": "nprobe", "ivfpq": "nprobe", "hnsw": "efSearch"}
KNOB_VALUES = (1, 2, 4, 8, 12, 16, 24, 32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 256, 320, 384,
               512, 768, 1024)
HNSW_MIN_EF = 16
"""efSearch below FAISS's default of 16 is erratic for k = 10."""
SATURATED = 0.002
"""Stop raising the knob once recall grows less than this per step (PQ's quantization caps it)."""
RETRAIN_GROWTH = 4.0
"""``add`` retrains an IVF-Flat gallery's coarse quantizer when it would hold more than this many
times the rows its k-means saw (its nlist, ~4 sqrt(N), has become too small: long lists) ..."""
RETRAIN_DRIFT = 1.5
"""... or when the added vectors lie farther from their nearest centroid than this many times
the training vectors did (mean 1 - cosine): new footage the centroids do not describe."""


def default_nlist(n_rows: int) -> int:
    """Inverted lists for ``n_rows`` vectors: ~4 sqrt(N), at least 1 and at most N / 39 so that
    k-means has enough points per centroid."""
    return max(1, min(int(round(4 * math.sqrt(n_rows))), n_rows // 39))


def resolve_kind(kind: str, n_rows: int) -> str:
    if kind not in INDEX_KINDS:
        raise PsearchError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    if kind == "auto":
        return "flat" if n_rows <= AUTO_FLAT_MAX_ROWS else "ivf"
    return kind


def factory_string(kind: str, dim: int, n_rows: int, nlist: int | None = None,
                   pq_m: int | None = None) -> str:
    """The FAISS factory string of a resolved ``kind`` for ``n_rows`` vectors of ``dim``."""
    if kind == "flat":
        return "Flat"
    if kind == "hnsw":
        return f"HNSW{HNSW_NEIGHBORS}"
    nlist = nlist or default_nlist(n_rows)
    if kind == "ivf":
        return f"IVF{nlist},Flat"
    pq_m = pq_m or max(1, dim // 8)
    if dim % pq_m:
        raise PsearchError(f"--pq-m {pq_m} must divide the embedding size {dim}")
    return f"IVF{nlist},PQ{pq_m}"


def build_index(vectors: np.ndarray, kind: str, nlist: int | None = None,
                pq_m: int | None = None, seed: int = 0) -> tuple[faiss.Index, dict]:
    """Train (if needed) and fill a CPU index with ``vectors`` float32 [N, D], L2-normalized.

    Returns the index and its header entry ``{"kind", "factory", ...}`` (``nlist`` for IVF).
    """
    n, dim = vectors.shape
    kind = resolve_kind(kind, n)
    factory = factory_string(kind, dim, n, nlist, pq_m)
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    info: dict = {"kind": kind, "factory": factory}
    if kind in ("ivf", "ivfpq"):
        ivf = faiss.extract_index_ivf(index)
        info.update(nlist=ivf.nlist, nlist_auto=nlist is None)
        if n < ivf.nlist:
            raise PsearchError(f"{factory}: {n} vectors cannot train {ivf.nlist} inverted lists; "
                               "use --index flat or a smaller --nlist")
        if kind == "ivfpq":  # polysemous codes serve Hamming pre-filtering, which we do not use
            faiss.downcast_index(ivf).do_polysemous_training = False
        sample = np.random.default_rng(seed).permutation(n)[: TRAIN_POINTS_PER_LIST * ivf.nlist]
        index.train(vectors[np.sort(sample)])
        info.update(trained_rows=n, train_residual=centroid_residual(index, vectors[sample]))
    add_in_chunks(index, vectors)
    return index, info


def centroid_residual(index: faiss.Index, vectors: np.ndarray) -> float:
    """Mean 1 - cosine between ``vectors`` [N, D] and their nearest coarse centroid (IVF)."""
    if len(vectors) == 0:
        return 0.0
    similarity, _ = faiss.extract_index_ivf(index).quantizer.search(vectors, 1)
    return round(float(np.mean(1.0 - similarity)), 6)


def retrain_reason(info: dict, index: faiss.Index, added: np.ndarray, rows_before: int
                   ) -> str | None:
    """Why an ``add`` of ``added`` [M, D] should retrain this IVF-Flat index, or None.

    The rule (``RETRAIN_GROWTH``, ``RETRAIN_DRIFT``): the gallery grows past RETRAIN_GROWTH x
    the rows the quantizer was trained on, or the added vectors' mean distance to their nearest
    centroid exceeds RETRAIN_DRIFT x the training vectors'. IVF-PQ is never retrained (its codes
    cannot be re-encoded without loss; rebuild it from the embeddings instead).
    """
    if info.get("kind") != "ivf":
        return None
    trained = int(info.get("trained_rows") or rows_before)
    total = rows_before + len(added)
    if total > RETRAIN_GROWTH * trained:
        return f"{total} rows > {RETRAIN_GROWTH:g} x the {trained} it was trained on"
    base = info.get("train_residual")
    drift = centroid_residual(index, added)
    if base and drift > RETRAIN_DRIFT * base:
        return (f"added rows lie {drift / base:.2f}x farther from the centroids than the "
                f"training rows (> {RETRAIN_DRIFT:g}x)")
    return None


def add_in_chunks(index: faiss.Index, vectors: np.ndarray) -> None:
    """``index.add(vectors)`` [N, D] in chunks, with a progress bar for large N."""
    starts = range(0, len(vectors), ADD_CHUNK)
    for start in progress_bar(starts, desc="index", unit="chunk", enabled=len(starts) >= 2,
                              leave=False):
        index.add(vectors[start:start + ADD_CHUNK])


def set_search_knob(index: faiss.Index, kind: str, value: int, on_gpu: bool = False) -> None:
    """Set ``nprobe``/``efSearch`` the FAISS way (``GpuParameterSpace`` for a GPU index)."""
    if kind in KNOB:
        space = faiss.GpuParameterSpace() if on_gpu else faiss.ParameterSpace()
        space.set_index_parameter(index, KNOB[kind], int(value))


def tune_search_knob(index: faiss.Index, vectors: np.ndarray, kind: str,
                     target_recall: float = DEFAULT_TARGET_RECALL, seed: int = 0) -> dict:
    """Smallest knob value reaching ``target_recall`` (recall@10 vs exact search, on a sample
    of the indexed vectors used as queries, their own row left out). Sets it on ``index``.

    Returns ``{"nprobe"|"efSearch": value, "tuned_recall_at_10": recall}`` ({} for flat).
    """
    if kind not in KNOB:
        return {}
    n = len(vectors)
    rows = np.random.default_rng(seed + 1).choice(n, size=min(TUNE_QUERIES, n), replace=False)
    queries = vectors[rows]
    k = min(TUNE_K + 1, n)
    _, exact = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)
    exact = _drop_row(exact, rows, k - 1)
    if kind == "hnsw":
        candidates = [v for v in KNOB_VALUES if v >= HNSW_MIN_EF]
    else:
        nlist = faiss.extract_index_ivf(index).nlist
        candidates = [v for v in KNOB_VALUES if v < nlist] + [nlist]
    recall = -1.0
    for value in candidates:
        set_search_knob(index, kind, value)
        _, found = index.search(queries, k)
        recall, previous = recall_at_k(_drop_row(found, rows, k - 1), exact), recall
        if recall >= target_recall or (value >= 8 and recall - previous < SATURATED):
            break
    return {KNOB[kind]: int(value), "tuned_recall_at_10": round(float(recall), 4)}


def _drop_row(ids: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """ids [Q, k+1] without each query's own row id ``rows`` [Q], order kept -> [Q, k]."""
    order = np.argsort(ids == rows[:, None], axis=1, kind="stable")
    return np.take_along_axis(ids, order, axis=1)[:, :k]


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Fraction of the true neighbours ``exact`` ids [Q, k] present in ``found`` [Q, k']
    (-1 ids, FAISS's "no result", are not neighbours)."""
    valid = exact >= 0
    hits = (exact[:, :, None] == found[:, None, :]).any(axis=2) & valid
    return float(hits.sum() / max(valid.sum(), 1))


def to_device(index: faiss.Index, kind: str) -> tuple[faiss.Index, bool]:
    """A copy of ``index`` on all GPUs when FAISS sees one (flat and IVF kinds; FAISS has no GPU
    HNSW), else ``index`` itself. Returns (index, on_gpu)."""
    if kind == "hnsw" or not hasattr(faiss, "index_cpu_to_all_gpus") or faiss.get_num_gpus() < 1:
        return index, False
    return faiss.index_cpu_to_all_gpus(index), True
