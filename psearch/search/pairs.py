"""Search with a query-guided model (QEEPS): over footage pair by pair, or re-ranking the FAISS
shortlist of an indexed gallery.

>>> hits = search_footage(qeeps, query_rgb, box, sources, top_k=10)        # every picture
>>> hits = rerank_gallery(ps, qeeps, query_rgb, box, top_n=50, top_k=10)   # N images only

Both return ``psearch.gallery.store.Match`` lists ranked by the model's match score (``score``;
``det_score`` is the detector's), with ``row`` -1 (not an index row) and no crop file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from psearch.core.errors import PsearchError
from psearch.core.progress import progress_bar
from psearch.roles import PairScorer

Picture = tuple[str, int, np.ndarray]
"""(source path, frame index or -1, RGB uint8 [H, W, 3])."""


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def rank_hits(found: Iterable[tuple[str, int, tuple[np.ndarray, np.ndarray, np.ndarray]]],
              top_k: int) -> list[Any]:
    """``Match`` list of the ``top_k`` best detections over all pictures, by match score."""
    from psearch.gallery.matches import Match

    rows = [(float(sim), source, frame, box, float(det))
            for source, frame, (boxes, dets, sims) in found
            for box, det, sim in zip(boxes, dets, sims, strict=True)]
    rows.sort(key=lambda r: -r[0])
    return [Match(rank=n + 1, score=s, source=src, frame=f, box=np.asarray(b, np.float32),
                  crop="", det_score=d, row=-1)
            for n, (s, src, f, b, d) in enumerate(rows[:top_k])]


def search_pictures(scorer: PairScorer, query: np.ndarray, box: Any,
                    pictures: Iterator[Picture], total: int, top_k: int = 10,
                    progress: bool = True, log: Callable[[str], None] | None = None,
                    batch: int = 4) -> list[Any]:
    """The query in each picture, one pair per picture, ``batch`` pairs per forward pass; a
    progress bar over the ``total`` pairs and, after the first batch, a time estimate."""
    bar = progress_bar(total=total, enabled=progress, desc="query pairs", unit="pair")
    found: list = []
    pending: list[Picture] = []
    start, done = time.perf_counter(), 0

    def flush() -> None:
        nonlocal done
        out = scorer.search_pairs(query, box, [p[2] for p in pending])
        found.extend((src, frame, d) for (src, frame, _), d in zip(pending, out, strict=True))
        first = done == 0
        done += len(pending)
        bar.update(len(pending))
        pending.clear()
        if first and log is not None:
            per_pair = (time.perf_counter() - start) / done
            log(f"{total} pairs at {per_pair:.2f} s per pair: about "
                f"{format_seconds(per_pair * total)} in all")

    for picture in pictures:
        pending.append(picture)
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    bar.close()
    return rank_hits(found, top_k)


def search_footage(scorer: PairScorer, query: np.ndarray, box: Any, sources: list[Any],
                   sampling: Any = None, top_k: int = 10, progress: bool = True,
                   log: Callable[[str], None] | None = None) -> list[Any]:
    """QEEPS over every picture of ``sources`` (``psearch.detector.inputs.Source``: images,
    and video frames picked by ``sampling``)."""
    from psearch.core.media import iter_pictures
    from psearch.detector.inputs import FrameSampling, estimate_pictures

    sampling = sampling or FrameSampling()
    total = sum(estimate_pictures(s, sampling) for s in sources)
    pictures = ((str(s.path), frame, rgb) for s in sources
                for frame, rgb in iter_pictures(s, sampling))
    return search_pictures(scorer, query, box, pictures, total, top_k, progress, log)


def shortlist(ranked: Iterable[tuple[str, int]], top_n: int) -> list[tuple[str, int]]:
    """The first ``top_n`` distinct pictures (source, frame) of a ranked list of detections."""
    seen: dict[tuple[str, int], None] = {}
    for key in ranked:
        seen.setdefault(key, None)
        if len(seen) == top_n:
            break
    return list(seen)


def gallery_shortlist(gallery: Any, embedding: np.ndarray, top_n: int) -> list[tuple[str, int]]:
    """The ``top_n`` gallery pictures whose best detection ranks highest for ``embedding``
    [D] (FAISS search, widened until ``top_n`` distinct pictures or the whole gallery)."""
    k = min(len(gallery), max(4 * top_n, 16))
    while True:
        [matches] = gallery.matches(embedding[None], k)
        pictures = shortlist(((m.source, m.frame) for m in matches), top_n)
        if len(pictures) == top_n or k >= len(gallery):
            return pictures
        k = min(len(gallery), 4 * k)


def rerank_gallery(ps: Any, scorer: PairScorer, query: np.ndarray, box: Any, top_n: int,
                   top_k: int = 10, progress: bool = True,
                   log: Callable[[str], None] | None = None) -> list[Any]:
    """Re-score the ``top_n`` pictures of the FAISS shortlist of ``ps`` (a ``PersonSearch``)
    with the query-guided ``scorer``: ``top_n`` pairs per query, whatever the gallery size."""
    from psearch.core.media import read_source_frame

    if top_n < 1:
        raise PsearchError("--rerank-top must be at least 1")
    embedding = ps.embedder.embed_boxes(query, np.asarray(box, np.float32)[None])[0]
    pictures = gallery_shortlist(ps.gallery, embedding, top_n)
    stream = ((src, frame, read_source_frame(src, frame)) for src, frame in pictures)
    return search_pictures(scorer, query, box, stream, len(pictures), top_k, progress, log)


def query_pairs(*, gallery_dir: Any, image: Any, boxes: tuple[str, ...], crop: Any, top_k: int,
                as_json: bool, show: Any, device: str, checkpoint: Any, weights: Any,
                inputs: tuple[Any, ...], fps: float | None, rerank: Any, rerank_top: int,
                format_table: Callable[[list], str], progress: bool = True) -> None:
    """``psearch query --weights QEEPS --in ...`` and ``psearch query --gallery G --rerank
    QEEPS``: one query box, results ranked by the query-guided match score."""
    import json

    import click

    from psearch.core.boxes import check_box, crop_box, parse_box
    from psearch.core.media import read_image
    from psearch.registry import load_pair_scorer

    if weights is not None and rerank is not None:
        raise PsearchError("give --weights (search footage pair by pair) or --rerank (re-score "
                           "a gallery's shortlist), not both")
    if crop is not None or image is None or len(boxes) != 1:
        raise PsearchError("a query-guided model needs the query's whole picture: give --image "
                           "with one --box (not --crop)")
    if weights is not None and (not inputs or gallery_dir is not None):
        raise PsearchError("--weights searches footage: give --in (images, folders, videos), "
                           "not --gallery (use --rerank for a gallery)")
    if rerank is not None and (gallery_dir is None or inputs):
        raise PsearchError("--rerank re-scores a gallery's shortlist: give --gallery, not --in")
    picture = read_image(image)
    h, w = picture.shape[:2]
    box = check_box(parse_box(boxes[0]), w, h)
    scorer = load_pair_scorer(weights or rerank, device=device)
    log = None if as_json else click.echo
    if weights is not None:
        from psearch.detector.inputs import FrameSampling, collect_sources

        sources = collect_sources(list(inputs))
        matches = search_footage(scorer, picture, box, sources, FrameSampling(fps=fps), top_k,
                                 progress=progress, log=log)
        searched = f"{len(sources)} input(s), pair by pair"
    else:
        from psearch.search.person_search import PersonSearch

        ps = PersonSearch(gallery_dir, device=device, checkpoint=checkpoint)
        matches = rerank_gallery(ps, scorer, picture, box, rerank_top, top_k,
                                 progress=progress, log=log)
        searched = f"the {rerank_top} best pictures of {gallery_dir} re-ranked"
    if show is not None:
        from psearch.gallery.sheet import write_sheet

        write_sheet(crop_box(picture, box), matches, show)
    if as_json:
        click.echo(json.dumps({"image": str(image), "box": [float(v) for v in box],
                               "model": str(weights or rerank), "searched": searched,
                               "matches": [m.to_dict() for m in matches]}, indent=2))
        return
    click.echo(f"query {image} box {','.join(f'{v:g}' for v in box)}: top {len(matches)} "
               f"({searched}; score = QEEPS match score)")
    click.echo(format_table(matches))
    if show is not None:
        click.echo(f"sheet: {show}")
