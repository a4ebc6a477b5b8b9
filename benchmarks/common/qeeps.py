"""QEEPS's pair scores of a world's queries (saved per query, reused), a query-independent
model's ranking in the same pair form, re-ranking, and the FAISS search time per query."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np


def read_pairs_file(path: Path, images: list[str]) -> tuple[dict, float] | None:
    """A query's saved pairs, {image name: (boxes, scores, sims)} and the seconds they took;
    None when the file is missing or holds another gallery (a changed subset cut)."""
    if not path.is_file():
        return None
    with np.load(path) as z:
        if "images" not in z.files or z["images"].tolist() != images:
            return None
        return ({name: (z[f"boxes_{i}"], z[f"scores_{i}"], z[f"sims_{i}"])
                 for i, name in enumerate(images)}, float(z["seconds"]))


def qeeps_pairs(root: Path, dataset: Any, galleries: dict, log) -> tuple[dict, float, int]:
    """QEEPS on every pair of ``galleries``: {q: {image name: (boxes, scores, sims)}}, seconds
    per pair (image decoding included, over every query's recorded run) and pairs run now
    (queries done by an earlier run are read back)."""
    from psearch.core.media import read_image
    from psearch.joint.qeeps_infer import QEEPSSearcher

    out_dir = root / "pairs"
    out_dir.mkdir(exist_ok=True)
    searcher, seconds, pairs, ran = None, 0.0, 0, 0
    names = [r.name for r in dataset.gallery]
    per_query: dict[int, dict] = {}
    for n, (q, gallery) in enumerate(galleries.items()):
        path = out_dir / f"q{q}.npz"
        images = [names[m] for m in gallery.images.tolist()]
        saved = read_pairs_file(path, images)
        if saved is None:
            searcher = searcher or QEEPSSearcher.from_checkpoint(root / "qeeps" / "last.pt")
            query = dataset.queries[q]
            start = time.perf_counter()
            qimg = read_image(dataset.image(query.image).path)
            found = searcher.search_pairs(qimg, query.box, [read_image(dataset.image(i).path)
                                                            for i in images])
            took = time.perf_counter() - start
            arrays = {f"{k}_{i}": v for i, d in enumerate(found)
                      for k, v in zip(("boxes", "scores", "sims"), d, strict=True)}
            with open(path.with_suffix(".tmp"), "wb") as f:
                np.savez(f, seconds=took, images=np.array(images), **arrays)
            path.with_suffix(".tmp").replace(path)
            ran += len(images)
            log(f"  query {n + 1}/{len(galleries)}: {len(images)} pairs, {took:.1f} s "
                f"({took / len(images):.2f} s per pair)")
            saved = (dict(zip(images, (tuple(d) for d in found), strict=True)), took)
        per_query[q], took = saved
        seconds += took
        pairs += len(images)
    return per_query, seconds / max(1, pairs), ran


def indexed_per_query(dataset: Any, results: Any, galleries: dict, searched: dict) -> dict:
    """A query-independent model's ``results`` in pair form over ``galleries``: {q: {image
    name: (boxes, scores, cosines)}}, restricted to the images of ``searched[q]``."""
    from psearch.evaluation import pairs_from_results

    pairs = pairs_from_results(dataset, results, galleries)
    out = {}
    for q in galleries:
        mine = pairs.query == q
        out[q] = {name: (pairs.boxes[mine & (pairs.image == m)],
                         pairs.scores[mine & (pairs.image == m)],
                         pairs.sims[mine & (pairs.image == m)])
                  for m, name in enumerate(pairs.image_names.tolist()) if name in searched[q]}
    return out


def reranked(oim: dict, qeeps: dict, top_n: int) -> dict:
    """Per query: the ``top_n`` pictures of the OIM ranking (best detection first) re-scored by
    QEEPS (match score + 2, above every cosine), the others keep OIM's cosine."""
    out = {}
    for q, images in oim.items():
        # the index holds the detections of score >= 0.5 (psearch detect's default)
        best = {name: max(sims[scores >= 0.5], default=-np.inf)
                for name, (_, scores, sims) in images.items()}
        chosen = set(sorted(best, key=lambda n: -best[n])[:top_n])
        out[q] = {name: ((qeeps[q][name][0], qeeps[q][name][1], qeeps[q][name][2] + 2.0)
                         if name in chosen else images[name]) for name in images}
    return out


def faiss_seconds(n_vectors: int, dim: int, repeats: int = 30) -> float:
    """Median seconds of one exact inner-product search (top 100) over ``n_vectors``."""
    import faiss

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_vectors, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(dim)
    index.add(x)
    q = x[rng.integers(0, n_vectors, repeats)] + 0.01
    times = []
    for row in q:
        start = time.perf_counter()
        index.search(row[None], min(100, n_vectors))
        times.append(time.perf_counter() - start)
    return float(np.median(times))

