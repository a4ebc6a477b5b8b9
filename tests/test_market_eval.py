"""The Market-1501 re-ID protocol: hand-computed cases and two reference transliterations.

References (written here from their published definitions, as loops):
- torchreid's ``eval_market1501`` (KaiyangZhou/deep-person-reid): rank by distance ascending;
  drop gallery items of the query's pid and camera; skip a query with no match left;
  CMC = first match; AP = mean of the precision at each match. Junk crops (pid -1) are dropped
  when torchreid loads Market-1501, so the transliteration drops them up front.
- the Market-1501 MATLAB baseline's ``compute_AP``: good = same pid, other camera; junk = pid
  -1 or same pid and camera, skipped while walking the ranking; AP accumulates
  ``(recall - old_recall) * (old_precision + precision) / 2`` with old_precision starting at 1.
"""

from __future__ import annotations

import numpy as np
import pytest

from psearch.evaluation import market
from psearch.evaluation.market import evaluate_market, market_scores


def torchreid_reference(dist, q_pids, g_pids, q_cams, g_cams, ranks=(1, 5, 10)):
    keep_gallery = g_pids != -1  # torchreid's loader skips junk crops
    dist, g_pids, g_cams = dist[:, keep_gallery], g_pids[keep_gallery], g_cams[keep_gallery]
    aps, cmcs = [], []
    for q in range(len(q_pids)):
        order = np.argsort(dist[q], kind="stable")
        same = (g_pids[order] == q_pids[q]) & (g_cams[order] == q_cams[q])
        matches = (g_pids[order] == q_pids[q])[~same].astype(int)
        if not matches.any():
            continue
        cmc = np.minimum(matches.cumsum(), 1)
        cmcs.append([cmc[min(k, len(cmc)) - 1] for k in ranks])
        hits = np.flatnonzero(matches)
        aps.append(np.mean([(j + 1) / (rank + 1) for j, rank in enumerate(hits)]))
    return float(np.mean(aps)), np.mean(cmcs, axis=0), len(aps)


def matlab_reference_ap(ranking, good, junk):
    """AP of one query walking ``ranking`` (gallery indices, best first) like compute_AP.m."""
    n_good = len(good)
    old_recall, old_precision, ap, found, seen = 0.0, 1.0, 0.0, 0, 0
    for g in ranking:
        if g in junk:
            continue
        found += g in good
        recall, precision = found / n_good, found / (seen + 1)
        ap += (recall - old_recall) * (old_precision + precision) / 2
        old_recall, old_precision = recall, precision
        seen += 1
        if found == n_good:
            break
    return ap


def random_problem(seed, n_query=40, n_gallery=300, n_ids=25, n_cams=6):
    rng = np.random.default_rng(seed)
    g_pids = rng.integers(1, n_ids + 1, n_gallery)
    g_pids[rng.random(n_gallery) < 0.1] = 0  # distractors
    g_pids[rng.random(n_gallery) < 0.1] = -1  # junk
    g_cams = rng.integers(1, n_cams + 1, n_gallery)
    q_pids, q_cams = rng.integers(1, n_ids + 1, n_query), rng.integers(1, n_cams + 1, n_query)
    g_feats = rng.normal(size=(n_gallery, 16))
    g_feats /= np.linalg.norm(g_feats, axis=1, keepdims=True)
    q_feats = rng.normal(size=(n_query, 16))
    q_feats /= np.linalg.norm(q_feats, axis=1, keepdims=True)
    return q_feats, q_pids, q_cams, g_feats, g_pids, g_cams


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_torchreid_eval_market1501(seed):
    q_feats, q_pids, q_cams, g_feats, g_pids, g_cams = random_problem(seed)
    # torchreid ranks by Euclidean distance; on unit vectors it orders like the dot product
    dist = ((q_feats[:, None] - g_feats[None]) ** 2).sum(-1)
    ref_map, ref_cmc, ref_valid = torchreid_reference(dist, q_pids, g_pids, q_cams, g_cams)
    ours = evaluate_market(q_feats, q_pids, q_cams, g_feats, g_pids, g_cams)
    assert ours["queries"] == ref_valid and ours["skipped_queries"] == len(q_pids) - ref_valid
    assert ours["mAP"] == pytest.approx(ref_map, abs=1e-6)
    assert [ours["top1"], ours["top5"], ours["top10"]] == pytest.approx(ref_cmc, abs=1e-6)


@pytest.mark.parametrize("seed", [3, 4])
def test_market_average_agrees_with_the_matlab_compute_ap(seed):
    q_feats, q_pids, q_cams, g_feats, g_pids, g_cams = random_problem(seed)
    sims = q_feats.astype(np.float32) @ g_feats.astype(np.float32).T
    ap, _, valid = market_scores(sims, q_pids, q_cams, g_pids, g_cams, average="market")
    for q in np.flatnonzero(valid):
        ranking = np.argsort(-sims[q], kind="stable")
        good = set(np.flatnonzero((g_pids == q_pids[q]) & (g_cams != q_cams[q])).tolist())
        junk = set(np.flatnonzero((g_pids == -1)
                                  | ((g_pids == q_pids[q]) & (g_cams == q_cams[q]))).tolist())
        assert ap[q] == pytest.approx(matlab_reference_ap(ranking, good, junk), abs=1e-9)


# One query (pid 1, camera 1); gallery: a same camera (ignored), b other person, c match,
# d junk, e distractor, f match. Ranked by similarity: a d b c e f -> kept: b c e f.
CASE = dict(
    similarities=np.array([[0.9, 0.7, 0.6, 0.8, 0.5, 0.4]]),
    query_pids=np.array([1]), query_cams=np.array([1]),
    gallery_pids=np.array([1, 2, 1, -1, 0, 1]), gallery_cams=np.array([1, 2, 2, 3, 1, 3]),
)


def test_hand_computed_case():
    ap, hits, valid = market_scores(**CASE, topk=(1, 2, 5))
    # matches at kept ranks 2 and 4: precisions 1/2 and 2/4
    assert ap[0] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert hits[0].tolist() == [False, True, True] and valid[0]
    trapezoid, _, _ = market_scores(**CASE, average="market")
    # (0 + 1/2) / 2 and (1/3 + 2/4) / 2, each for half the recall
    assert trapezoid[0] == pytest.approx(0.5 * 0.25 + 0.5 * (1 / 3 + 1 / 2) / 2)


def test_junk_and_same_camera_are_ignored_but_distractors_count():
    case = {**CASE, "similarities": np.array([[0.9, 0.1, 0.6, 0.8, 0.7, 0.5]])}
    ap, hits, _ = market_scores(**case, topk=(1,))
    # ranking a d e c f b -> kept e c f b: the distractor e ranks first
    assert not hits[0, 0]
    assert ap[0] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_query_without_a_cross_camera_match_is_skipped():
    metrics = evaluate_market(
        np.eye(3)[:2], np.array([1, 2]), np.array([1, 1]),
        np.eye(3), np.array([1, 2, 2]), np.array([2, 1, 1]))
    # query 1's person is seen by its own camera only
    assert metrics["queries"] == 1 and metrics["skipped_queries"] == 1
    assert metrics["mAP"] == 1.0 and metrics["top1"] == 1.0


def test_ties_are_broken_by_gallery_order():
    case = {**CASE, "similarities": np.array([[0.5, 0.5, 0.5, 0.5, 0.5, 0.5]])}
    ap, hits, _ = market_scores(**case, topk=(1, 2))
    # kept in gallery order: b (wrong) c (match) e (wrong) f (match): as the hand case
    assert ap[0] == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert hits[0].tolist() == [False, True]


def test_chunked_similarities_give_the_same_figures(monkeypatch):
    problem = random_problem(5, n_query=23)
    whole = evaluate_market(*problem)
    monkeypatch.setattr(market, "QUERY_CHUNK", 4)
    assert evaluate_market(*problem) == whole


def test_unknown_average_is_refused():
    with pytest.raises(ValueError, match="average"):
        market_scores(**CASE, average="11-point")
