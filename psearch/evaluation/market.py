"""The re-ID protocol of Market-1501 (and the crop datasets scored like it): mAP and CMC top-k.

For each query crop (person ``q_pid``, camera ``q_cam``), the gallery crops are ranked by
similarity, highest first (ties: gallery order). Then:

1. ignored (removed from the ranking): gallery crops of the query's person seen by the query's
   camera, and junk crops (pid ``-1``);
2. correct matches: the query's person seen by another camera; everything else is wrong,
   distractors (pid ``0``) included;
3. a query with no correct match left has no defined AP: it is left out of the means and
   counted in ``skipped_queries``;
4. top-k = 1 if a correct match is among the first k crops left; AP = the mean, over the correct
   matches, of the precision at the rank of each (non-interpolated average precision).

Checked against (tests/test_market_eval.py): a transliteration of torchreid's
``eval_market1501`` (KaiyangZhou/deep-person-reid, ``torchreid/metrics/rank.py``: distances
ascending, same pid and camera removed, queries without a match skipped, AP = mean precision at
the hits) on random data with junk and distractors (torchreid drops junk crops when it loads
Market-1501, which step 1 does here), and hand-computed cases. ``average="market"`` gives
instead the original MATLAB evaluation's AP (``compute_AP.m`` of the Market-1501 baseline:
trapezoids between successive precision points, slightly higher), which has the same CMC.

NumPy only; similarities are computed in chunks of queries to bound memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from psearch.data.annotations import PersonSearchDataset

JUNK_PID = -1
TOPK = (1, 5, 10)
QUERY_CHUNK = 256
AVERAGES = ("torchreid", "market")


def evaluate_market(
    query_features: np.ndarray,
    query_pids: np.ndarray,
    query_cams: np.ndarray,
    gallery_features: np.ndarray,
    gallery_pids: np.ndarray,
    gallery_cams: np.ndarray,
    *,
    topk: Sequence[int] = TOPK,
    average: str = "torchreid",
) -> dict:
    """``{"mAP", "top1", "top5", "top10", "queries", "skipped_queries"}`` (fractions).

    Features [Q, D] and [G, D] are L2-normalized (similarity = dot product); pids and cameras
    are int [Q] / [G]. See ``market_scores`` for ``average``.
    """
    sims = _chunked_similarities(query_features, gallery_features)
    ap, hits, valid = market_scores(sims, query_pids, query_cams, gallery_pids, gallery_cams,
                                    topk=topk, average=average)
    n = int(valid.sum())
    metrics = {"mAP": float(ap[valid].mean()) if n else 0.0}
    for j, k in enumerate(topk):
        metrics[f"top{k}"] = float(hits[valid, j].mean()) if n else 0.0
    metrics.update(queries=n, skipped_queries=int(len(valid) - n))
    return metrics


def evaluate_market_dataset(
    dataset: PersonSearchDataset,
    gallery_features: np.ndarray,
    query_features: np.ndarray,
    **options,
) -> dict:
    """``evaluate_market`` of a crop dataset: row m of ``gallery_features`` is the crop
    ``dataset.gallery[m]``, row q of ``query_features`` is ``dataset.queries[q]``."""
    return evaluate_market(
        query_features,
        np.array([q.pid for q in dataset.queries], np.int64),
        np.array([q.camera for q in dataset.queries], np.int64),
        gallery_features,
        np.array([int(r.pids[0]) for r in dataset.gallery], np.int64),
        np.array([r.camera for r in dataset.gallery], np.int64),
        **options,
    )


def _chunked_similarities(query: np.ndarray, gallery: np.ndarray):
    query = np.asarray(query, dtype=np.float32)
    gallery = np.asarray(gallery, dtype=np.float32)
    for start in range(0, len(query), QUERY_CHUNK):
        yield query[start:start + QUERY_CHUNK] @ gallery.T


def market_scores(
    similarities,
    query_pids: np.ndarray,
    query_cams: np.ndarray,
    gallery_pids: np.ndarray,
    gallery_cams: np.ndarray,
    *,
    topk: Sequence[int] = TOPK,
    average: str = "torchreid",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query: AP float [Q], hits bool [Q, len(topk)], valid bool [Q] (has a correct match).

    ``similarities``: float [Q, G] (higher = more alike), or an iterable of row blocks of it.
    ``average``: "torchreid" (mean precision at the hits) or "market" (the MATLAB code's
    trapezoids). Invalid queries get AP 0 and no hits.
    """
    if average not in AVERAGES:
        raise ValueError(f"average {average!r}: expected one of {', '.join(AVERAGES)}")
    blocks = [similarities] if isinstance(similarities, np.ndarray) else similarities
    query_pids, query_cams = np.asarray(query_pids), np.asarray(query_cams)
    gallery_pids, gallery_cams = np.asarray(gallery_pids), np.asarray(gallery_cams)
    aps, hits, valid = [], [], []
    start = 0
    for block in blocks:
        block = np.asarray(block)
        rows = slice(start, start + len(block))
        start += len(block)
        a, h, v = _score_block(block, query_pids[rows], query_cams[rows], gallery_pids,
                               gallery_cams, topk, average)
        aps.append(a)
        hits.append(h)
        valid.append(v)
    if start != len(query_pids):
        raise ValueError(f"{start} similarity rows for {len(query_pids)} queries")
    if not aps:
        return np.zeros(0), np.zeros((0, len(topk)), bool), np.zeros(0, bool)
    return np.concatenate(aps), np.concatenate(hits), np.concatenate(valid)


def _score_block(sims, q_pids, q_cams, g_pids, g_cams, topk, average):
    order = np.argsort(-sims, axis=1, kind="stable")
    pids, cams = g_pids[order], g_cams[order]
    same_person = pids == q_pids[:, None]
    ignored = (pids == JUNK_PID) | (same_person & (cams == q_cams[:, None]))
    good = same_person & ~ignored
    rank = np.cumsum(~ignored, axis=1) - 1  # rank of each crop among those left (0-based)
    n_good = good.sum(axis=1)
    valid = n_good > 0
    first = np.where(good, rank, np.iinfo(np.int64).max).min(axis=1)
    hits = first[:, None] < np.asarray(topk)[None, :]
    found = np.cumsum(good, axis=1)  # correct matches up to and including each position
    precision = found / np.maximum(rank + 1, 1)  # ignored leading crops have rank -1
    if average == "torchreid":
        total = np.where(good, precision, 0.0).sum(axis=1)
    else:  # trapezoid between the precision before this hit and at it
        before = np.where(rank > 0, (found - 1) / np.maximum(rank, 1), 1.0)
        total = np.where(good, (before + precision) / 2, 0.0).sum(axis=1)
    ap = np.where(valid, total / np.maximum(n_good, 1), 0.0)
    return ap, hits & valid[:, None], valid
