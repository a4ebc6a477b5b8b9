"""Query-dependent search results (QEEPS, re-ranking) scored by the same per-query protocol code.

A query-guided model gives each query its own detections in each gallery image: boxes, a
detector score and a match score. ``PairResults`` holds them; ``evaluate_pairs`` feeds each
query's rows to ``psearch.evaluation.search.score_query``, the code that scores every other
model (same galleries, same IoU rule, same AP and top-k), with the match score as similarity.

Where every (query, gallery image) pair is too slow to run, a documented subset: ``queries``
(rows of ``dataset.queries``, e.g. ``sample_queries``) and ``max_gallery`` (each query's gallery
cut to its images holding the person plus a seeded sample of the others, protocol order kept).
Figures on a subset are reported with its description (``subset``), never as the full protocol.

>>> pairs = PairResults.from_per_query({q: {"s1.jpg": (boxes, scores, sims)}, ...})
>>> evaluate_pairs(dataset, pairs, gallery_size=100, queries=[0, 5], max_gallery=None)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from psearch.core.errors import PsearchError
from psearch.data.annotations import PersonSearchDataset
from psearch.evaluation.metrics import DET_THRESH
from psearch.evaluation.protocols import QueryGallery, iter_query_galleries
from psearch.evaluation.results import SearchResults, group_by_gallery
from psearch.evaluation.search import TOPK, score_query

PerQuery = Mapping[int, Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]
"""query row -> {test image name: (boxes [K, 4], detector scores [K], match scores [K])}; an
image listed with no detection was searched and holds none."""


@dataclass
class PairResults:
    """Detections of searched (query, gallery image) pairs.

    image_names: str [M]; query, image: int64 [N] (query row, row of ``image_names``) of each
    detection; boxes float32 [N, 4]; scores float32 [N] (detector); sims float [N] (match);
    pairs: int64 [P, 2] every (query row, image row) searched, with or without detections.
    """

    image_names: np.ndarray
    query: np.ndarray
    image: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    sims: np.ndarray
    pairs: np.ndarray

    @classmethod
    def from_per_query(cls, per_query: PerQuery) -> PairResults:
        names: dict[str, int] = {}
        cols: list[list] = [[], [], [], [], []]
        pairs = []
        for q, images in per_query.items():
            for name, (boxes, scores, sims) in images.items():
                m = names.setdefault(name, len(names))
                scores = np.asarray(scores, np.float32).reshape(-1)
                sims = np.asarray(sims, np.float64).reshape(-1)
                boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
                if not len(boxes) == len(scores) == len(sims):
                    raise PsearchError(f"query {q}, {name}: {len(boxes)} boxes, {len(scores)} "
                                       f"scores and {len(sims)} match scores")
                pairs.append((int(q), m))
                for col, values in zip(cols, ([int(q)] * len(scores), [m] * len(scores), boxes,
                                              scores, sims), strict=True):
                    col.append(np.asarray(values))
        if not cols[0]:
            empty = np.zeros(0)
            cols = [[empty.astype(np.int64)], [empty.astype(np.int64)],
                    [np.zeros((0, 4), np.float32)], [empty.astype(np.float32)], [empty]]
        result = cls(image_names=np.array(list(names), dtype=str),
                     query=np.concatenate(cols[0]).astype(np.int64),
                     image=np.concatenate(cols[1]).astype(np.int64),
                     boxes=np.concatenate(cols[2]).astype(np.float32).reshape(-1, 4),
                     scores=np.concatenate(cols[3]).astype(np.float32),
                     sims=np.concatenate(cols[4]).astype(np.float64),
                     pairs=np.array(pairs, np.int64).reshape(-1, 2))
        if not (np.isfinite(result.sims).all() and np.isfinite(result.boxes).all()):
            raise PsearchError("pair results: non-finite boxes or match scores")
        return result


def sample_queries(n_queries: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` query rows (sorted) drawn from ``n_queries`` with ``seed``: a fixed subset; a
    larger ``n`` (same seed) extends a smaller one's."""
    return np.sort(np.random.default_rng(seed).permutation(n_queries)[:n])


def subset_gallery(gallery: QueryGallery, size: int, seed: int) -> QueryGallery:
    """``gallery`` cut to ``size`` images: all holding the person, then a seeded sample of the
    others; the protocol order is kept."""
    if len(gallery.images) <= size:
        return gallery
    others = np.setdiff1d(np.arange(len(gallery.images)), gallery.positives)
    extra = max(0, size - len(gallery.positives))
    chosen = np.random.default_rng(seed).choice(others, extra, replace=False)
    keep = np.sort(np.concatenate([gallery.positives, chosen]))
    return QueryGallery(gallery.images[keep], np.searchsorted(keep, gallery.positives),
                        gallery.gt_boxes)


def pair_galleries(dataset: PersonSearchDataset, *, gallery_size: int | None = 100,
                   cross_camera: bool = False, queries: Sequence[int] | None = None,
                   max_gallery: int | None = None, seed: int = 0) -> dict[int, QueryGallery]:
    """query row -> its gallery under the protocol (and the subset): the pairs to search."""
    wanted = set(range(len(dataset.queries)) if queries is None else map(int, queries))
    out = {}
    for q, gallery in enumerate(iter_query_galleries(dataset, gallery_size, cross_camera)):
        if q in wanted:
            out[q] = gallery if max_gallery is None else subset_gallery(gallery, max_gallery,
                                                                        seed + q)
    return out


def describe_subset(dataset: PersonSearchDataset, queries: Sequence[int] | None,
                    max_gallery: int | None, seed: int) -> str | None:
    """A line naming the subset, None for the full protocol."""
    if queries is None and max_gallery is None:
        return None
    parts = [f"{len(dataset.queries) if queries is None else len(queries)} of "
             f"{len(dataset.queries)} queries"]
    if max_gallery is not None:
        parts.append(f"galleries cut to {max_gallery} images (all with the person + a sample)")
    return ", ".join(parts) + f", seed {seed}"


def evaluate_pairs(dataset: PersonSearchDataset, pairs: PairResults, *,
                   gallery_size: int | None = 100, cross_camera: bool = False,
                   det_thresh: float = DET_THRESH, topk: Sequence[int] = TOPK,
                   queries: Sequence[int] | None = None, max_gallery: int | None = None,
                   seed: int = 0) -> dict:
    """The search protocol on pair results: ``{"mAP", "top1", ..., "queries",
    "skipped_queries", "subset"}``; every pair of the (subset) galleries must have been
    searched (``PsearchError`` naming a missing one)."""
    galleries = pair_galleries(dataset, gallery_size=gallery_size, cross_camera=cross_camera,
                               queries=queries, max_gallery=max_gallery, seed=seed)
    names = [r.name for r in dataset.gallery]
    row_of = {name: m for m, name in enumerate(pairs.image_names.tolist())}
    done = set(map(tuple, pairs.pairs.tolist()))
    ap, hits, valid = [], [], []
    for q, gallery in galleries.items():
        for m in gallery.images.tolist():
            if (q, row_of.get(names[m], -1)) not in done:
                raise PsearchError(f"pair results: query {q} was not searched in {names[m]}")
        mine = pairs.query == q
        results = SearchResults(pairs.image_names, pairs.image[mine], pairs.boxes[mine],
                                pairs.scores[mine], pairs.sims[mine, None], np.ones((1, 1)))
        dets = group_by_gallery(results, dataset, det_thresh)
        a, h, v = score_query(dets.features[:, 0], gallery, dets, topk)
        ap.append(a)
        hits.append(h)
        valid.append(v)
    valid_arr = np.array(valid, bool)
    ap_arr, hits_arr = np.array(ap), np.array(hits, bool).reshape(-1, len(topk))
    metrics = {"mAP": float(ap_arr[valid_arr].mean()) if valid_arr.any() else 0.0}
    for i, k in enumerate(topk):
        metrics[f"top{k}"] = float(hits_arr[valid_arr, i].mean()) if valid_arr.any() else 0.0
    metrics["queries"] = int(valid_arr.sum())
    metrics["skipped_queries"] = int((~valid_arr).sum())
    metrics["subset"] = describe_subset(dataset, queries, max_gallery, seed)
    return metrics


def pairs_from_results(dataset: PersonSearchDataset, results: SearchResults,
                       galleries: Mapping[int, QueryGallery]) -> PairResults:
    """A query-independent ``SearchResults`` (cosine of features) as pair results over
    ``galleries``: the same figures as ``evaluate_search`` on those queries, in pair form, so
    that it can be mixed with query-guided rows (re-ranking)."""
    names = [r.name for r in dataset.gallery]
    per_image = {name: np.flatnonzero(results.image_names == name) for name in names}
    by_image = {name: np.flatnonzero(np.isin(results.det_image, rows))
                for name, rows in per_image.items()}
    per_query: dict[int, dict] = {}
    for q, gallery in galleries.items():
        sims = results.features @ results.query_features[q]
        per_query[q] = {names[m]: (results.boxes[by_image[names[m]]],
                                   results.scores[by_image[names[m]]],
                                   sims[by_image[names[m]]]) for m in gallery.images.tolist()}
    return PairResults.from_per_query(per_query)
