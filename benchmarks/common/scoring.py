"""Scores with a CMC curve, embedding and query speeds, and the facts of a world."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

CMC_RANKS = tuple(range(1, 21))


def score(dataset: Any, results: Any) -> dict[str, Any]:
    """The standard report plus a CMC curve (top-k for k in CMC_RANKS) per search protocol."""
    from psearch.evaluation import evaluate

    report = evaluate(dataset, results, topk=CMC_RANKS)
    for metrics in report["search"].values():
        with_cmc(metrics)
    return report


def with_cmc(metrics: dict[str, Any]) -> dict[str, Any]:
    """Search metrics computed with ``topk=CMC_RANKS``: the top-k for k in CMC_RANKS moved into
    one ``cmc`` list, top-1/5/10 kept (in place; returned)."""
    cmc = [metrics.pop(f"top{k}") for k in CMC_RANKS]
    metrics.update({f"top{k}": cmc[k - 1] for k in (1, 5, 10)}, cmc=cmc)
    return metrics


def embed_rate(embedder: Any, detections: Path, crops_max: int = 1024) -> float:
    """Crops/s of ``embedder`` on the decoded crops of a detect folder (batches of 128)."""
    from psearch.core.media import read_image
    from psearch.formats.manifest import read_manifest

    manifest = read_manifest(detections)
    crops = [read_image(manifest.crop_path(i)) for i in range(min(len(manifest), crops_max))]
    embedder.embed_crops(crops[:128])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(crops), 128):
        embedder.embed_crops(crops[i:i + 128])
    return len(crops) / (time.perf_counter() - start)


def query_latency(search: Any, queries: list[Any], dataset: Any) -> dict[str, float]:
    """Per query: embed its box on its frame (decoding excluded), then search the gallery (top
    10); median and p95 of the whole, median of the search alone, in ms."""
    from psearch.core.media import read_image

    full, search_only = [], []
    for query in queries:
        image = read_image(dataset.image(query.image).path)
        start = time.perf_counter()
        [vector] = search.embed(image, [query.box])
        middle = time.perf_counter()
        search.search(vector[None], top_k=10)
        end = time.perf_counter()
        full.append(end - start)
        search_only.append(end - middle)
    return {"query_ms_median": 1000 * float(np.median(full)),
            "query_ms_p95": 1000 * float(np.percentile(full, 95)),
            "search_ms_median": 1000 * float(np.median(search_only))}


def world_facts(dataset: Any) -> dict[str, int]:
    train_pids = {int(p) for r in dataset.train for p in r.pids if p >= 0}
    return {"train_images": len(dataset.train), "train_identities": len(train_pids),
            "test_images": len(dataset.gallery), "queries": len(dataset.queries)}

