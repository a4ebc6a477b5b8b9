"""Sightings: search hits of nearby frames of one video grouped into one result.

A person walking past a camera for ten seconds is seen in every processed frame; as one hit per
frame they would fill the whole top-k. ``group_sightings`` links two hits of one video when they
are in frames at most ``gap`` seconds apart (or 1.5 sampling intervals, when the frames were
sampled more sparsely) and their boxes are where one walking person could be (similar height,
centres within 0.5 + 1 box heights per second apart), each the other's nearest such box in the
nearest frame that has one (mutual, as a tracker links); the linked hits form one ``Sighting``:
start and end time, best frame and score, frames matched. Sightings rank by their best score, so
other people in the same frames form sightings of their own, further down. Hits in images
(frame -1) stay sightings of their own. The grouping is vectorised NumPy (plus SciPy's connected
components) over the candidate hits: max(1000, 50 * top_k) nearest detections.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from psearch.gallery.matches import Match
from psearch.gallery.rows import Rows

DEFAULT_GAP_S = 2.0
"""Seconds between two matched frames of one video that still count as one sighting."""
SPARSE_FACTOR = 1.5
"""With frames sampled farther apart than the gap, neighbours up to 1.5 intervals join."""
SPEED = 1.0
"""Box heights a person may move per second between two linked hits (walking: ~0.8)."""
ASSUMED_FPS = 25.0
"""Frame rate assumed for a video that declares none."""
CANDIDATES_PER_SIGHTING = 50
MIN_CANDIDATES = 1000
"""Hits searched to form ``top_k`` sightings: max(1000, 50 * top_k), at most the gallery."""


def format_time(seconds: float) -> str:
    """``H:MM:SS.mmm`` (``-`` when unknown)."""
    if not np.isfinite(seconds):
        return "-"
    ms = int(round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h}:{m:02d}:{s:02d}.{ms:03d}"


@dataclass
class Sighting:
    """Consecutive matched frames of one source: ``best`` is the highest-scoring hit.

    start/end: times in seconds (NaN if the video had no frame rate; for an image both NaN);
    start_frame/end_frame: frame indices (-1 for an image); frames: distinct matched frames;
    hits: matched detections (several per frame are possible); best_time: the best hit's time.
    """

    rank: int
    score: float
    source: str
    start: float
    end: float
    start_frame: int
    end_frame: int
    frames: int
    hits: int
    best: Match
    best_time: float = float("nan")

    @property
    def is_video(self) -> bool:
        return self.start_frame >= 0

    def bounds(self) -> tuple[str, str]:
        """Start and end as ``H:MM:SS.mmm`` (``frame N`` when times are unknown; ``-`` for an
        image)."""
        if not self.is_video:
            return "-", "-"
        if np.isfinite(self.start):
            return format_time(self.start), format_time(self.end)
        return f"frame {self.start_frame}", f"frame {self.end_frame}"

    @property
    def span(self) -> str:
        """``0:00:01.200-0:00:04.000`` ('' for an image)."""
        return "-".join(self.bounds()) if self.is_video else ""

    def to_dict(self) -> dict:
        def t(x: float) -> float | None:
            return round(float(x), 3) if np.isfinite(x) else None

        return {"rank": self.rank, "score": round(self.score, 6), "source": self.source,
                "start": format_time(self.start) if self.is_video else None,
                "end": format_time(self.end) if self.is_video else None,
                "start_s": t(self.start), "end_s": t(self.end),
                "start_frame": self.start_frame, "end_frame": self.end_frame,
                "frames": self.frames, "hits": self.hits,
                "best": {**self.best.to_dict(), "time": format_time(self.best_time)
                         if self.is_video else None}}


def candidate_count(top_k: int, n_rows: int) -> int:
    """How many hits to search for ``top_k`` sightings."""
    return max(1, min(n_rows, max(MIN_CANDIDATES, CANDIDATES_PER_SIGHTING * top_k)))


def group_hits(rows: Rows, ids: np.ndarray, gap: float = DEFAULT_GAP_S
               ) -> tuple[np.ndarray, np.ndarray]:
    """Group hits ``ids`` int [K] (rows, -1 = none) into sightings; see ``link_pairs``.

    Returns (group int64 [K'] per kept hit, order int64 [K']: the kept hits' positions in
    ``ids``), sorted by group, then time: hits of a group are contiguous, groups numbered from 0.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    valid = np.flatnonzero(ids >= 0)
    hit = ids[valid]
    src = rows.source_ids[hit].astype(np.int64)
    frame, time, boxes = rows.frames[hit], rows.times[hit], rows.boxes[hit].astype(np.float64)
    fps, step = rows.source_fps[src], rows.source_steps[src]
    timed = np.isfinite(time)
    step = np.where(np.isfinite(step), step, 1.0)
    # Position on the source's time line in seconds (frames at ASSUMED_FPS when the rate is
    # unknown) and the largest step to a neighbour that keeps a sighting together.
    position = np.where(timed, time, frame / ASSUMED_FPS)
    interval = step / np.where(timed & np.isfinite(fps), fps, ASSUMED_FPS)
    reach = np.maximum(gap, SPARSE_FACTOR * interval)
    key = np.where(frame >= 0, src, rows.sources.size + np.arange(len(hit)))  # images alone
    a, b = link_pairs(key, position, reach, boxes)
    n = len(hit)
    graph = coo_matrix((np.ones(len(a), bool), (a, b)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    order = np.lexsort((position, label))
    # renumber groups 0.. in order of appearance after sorting
    group = np.cumsum(np.r_[True, label[order][1:] != label[order][:-1]]) - 1
    return group, valid[order]


def link_pairs(key: np.ndarray, position: np.ndarray, reach: np.ndarray, boxes: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j) of hits that belong to one sighting: same ``key`` (source), in different
    frames at most ``reach`` [K] seconds apart, boxes [K, 4] of similar height (ratio <= 2) whose
    centres lie within (0.5 + SPEED * dt) box heights of each other (a walking person), and each
    the other's nearest such box in the nearest frame (mutual, frame to next frame, as a tracker
    links: two people side by side, or a crowd, stay separate sightings).

    Vectorised: hits are sorted by (key, position) and each is paired only with the hits after
    it inside its window (``searchsorted``), so the work grows with the hits per window, not K^2.
    """
    k = len(key)
    if k < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.lexsort((position, key))
    pos = position[order]
    rank = np.cumsum(np.r_[0, key[order][1:] != key[order][:-1]])
    stride = float(pos.max() - pos.min() + reach.max() + 1.0)
    line = (pos - pos.min()) + rank * stride  # one line, sources far apart, order kept
    end = np.searchsorted(line, line + reach[order], side="right")
    counts = end - np.arange(k) - 1
    first = np.repeat(np.arange(k), counts)
    second = first + 1 + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    i, j = order[first], order[second]
    dt = position[j] - position[i]
    heights = boxes[:, 3] - boxes[:, 1]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    h = np.maximum(np.maximum(heights[i], heights[j]), 1e-6)
    ratio = np.minimum(heights[i], heights[j]) / h
    shift = np.linalg.norm(centres[i] - centres[j], axis=1)
    keep = (dt > 0) & (ratio >= 0.5) & (shift <= h * (0.5 + SPEED * dt))
    i, j, cost = i[keep], j[keep], (shift / h)[keep]
    # As a tracker links: i's successor is the nearest box of the next frame that has one
    # within reach, j's predecessor the nearest box of the latest such earlier frame; a pair
    # is kept when both agree, so every hit has at most one link each way.
    mutual = _first(i, position[j], cost) & _first(j, -position[i], cost)
    return i[mutual], j[mutual]


def _first(group: np.ndarray, when: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """bool mask: per value of ``group``, the pair with the smallest ``when``, then ``cost``."""
    order = np.lexsort((cost, when, group))
    first = np.r_[True, group[order][1:] != group[order][:-1]]
    mask = np.zeros(len(order), bool)
    mask[order[first]] = True
    return mask


def group_sightings(rows: Rows, ids: np.ndarray, scores: np.ndarray, top_k: int,
                    gap: float, lookup: Callable[[np.ndarray, np.ndarray], list[Match]]
                    ) -> list[Sighting]:
    """The ``top_k`` best sightings among one query's hits (``ids`` [K], ``scores`` [K]).

    ``lookup(scores, ids) -> list[Match]`` turns the best hit of each sighting into a ``Match``
    (``Gallery.lookup``); only those ``top_k`` hits are looked up.
    """
    group, pos = group_hits(rows, ids, gap)
    if len(pos) == 0:
        return []
    n_groups = int(group[-1]) + 1
    hit_ids, hit_scores = ids[pos], scores[pos]
    frames, times = rows.frames[hit_ids], rows.times[hit_ids]
    first = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    last = np.r_[first[1:], len(group)] - 1
    # best hit per group: highest score, then earliest
    by_score = np.lexsort((-hit_scores, group))
    best = by_score[np.r_[True, group[by_score][1:] != group[by_score][:-1]]]
    new_frame = np.r_[True, (group[1:] != group[:-1]) | (frames[1:] != frames[:-1])]
    n_frames = np.bincount(group, weights=new_frame, minlength=n_groups).astype(int)
    n_hits = np.bincount(group, minlength=n_groups)
    ranked = np.argsort(-hit_scores[best], kind="stable")[:top_k]
    matches = lookup(hit_scores[best[ranked]], hit_ids[best[ranked]])
    out = []
    for rank, (g, match) in enumerate(zip(ranked.tolist(), matches, strict=True), start=1):
        match.rank = rank
        sighting = Sighting(
            rank=rank, score=match.score, source=match.source,
            start=float(times[first[g]]), end=float(times[last[g]]),
            start_frame=int(frames[first[g]]), end_frame=int(frames[last[g]]),
            frames=int(n_frames[g]), hits=int(n_hits[g]), best=match,
            best_time=float(times[best[g]]))
        out.append(sighting)
    return out
