"""Gallery search at 10k, 100k and 1M boxes: latency, memory and recall of each index kind.

The vectors imitate re-ID embeddings (D=256): ``N / 20`` identities whose centres are drawn from
an anisotropic Gaussian (variance of axis i ~ (i+1)^-0.5, as trained embeddings concentrate in
few directions), each seen ~20 times with noise (view-to-centre cosine ~0.8, two views of one
person ~0.65), all L2-normalized. Queries are fresh noisy views of indexed identities.

Each index is built through ``psearch.gallery.Gallery`` (tuned, saved, re-loaded), and the
latency is that of ``Gallery.matches`` for one query (FAISS search + metadata lookup + ``Match``
objects; the query embedding is not included). NumPy brute force and the raw FAISS call are
measured in the same run; recall@10 is against exact search.

    .venv/bin/python benchmarks/gallery_scale.py                    # the full run (~10-15 min)
    .venv/bin/python benchmarks/gallery_scale.py --sizes 10000 --kinds flat,ivf   # quick look
    .venv/bin/python benchmarks/gallery_scale.py --threads 1      # as recorded in results/
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from psearch.core.io import write_json_atomic
from psearch.gallery import index as ix
from psearch.gallery.rows import Rows
from psearch.gallery.store import Gallery

DIM, VIEWS_PER_ID, VIEW_NOISE, K = 256, 20, 0.75, 10
RESULTS = Path(__file__).parent / "results" / "gallery_scale.json"


def identity_centres(n_ids: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [n_ids, DIM] unit centres with a decaying spectrum (randomly rotated)."""
    scale = (np.arange(1, DIM + 1) ** -0.25).astype(np.float32)  # std = variance^(1/2)
    rotation = np.linalg.qr(rng.standard_normal((DIM, DIM)))[0].astype(np.float32)
    centres = (rng.standard_normal((n_ids, DIM), dtype=np.float32) * scale) @ rotation
    return centres / np.linalg.norm(centres, axis=1, keepdims=True)


def views(centres: np.ndarray, ids: np.ndarray, rng: np.random.Generator,
          chunk: int = 100_000) -> np.ndarray:
    """Noisy unit views float32 [len(ids), DIM] of identities ``ids``."""
    out = np.empty((len(ids), DIM), np.float32)
    for s in range(0, len(ids), chunk):
        noise = rng.standard_normal((len(ids[s:s + chunk]), DIM), dtype=np.float32)
        v = centres[ids[s:s + chunk]] + VIEW_NOISE / np.sqrt(DIM) * noise
        out[s:s + chunk] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def synthetic_rows(n: int) -> Rows:
    """Metadata like a detect run's: ~8 boxes per frame of 1000-frame videos."""
    i = np.arange(n)
    frame = i // 8
    sources = np.array([f"/footage/cam{c:02d}.mp4" for c in range(max(1, n // 8000 + 1))])
    boxes = np.stack([i % 1600, i % 800, i % 1600 + 60, i % 800 + 160], 1)
    crops = np.char.add(np.char.add("/dets/crops/", i.astype(str)), ".jpg")
    return Rows.from_columns(sources[frame // 1000], frame % 1000, boxes,
                             np.full(n, 0.9), crops)


def exact_neighbours(vectors: np.ndarray, queries: np.ndarray, block: int = 32) -> np.ndarray:
    """ids [Q, K] of the exact top-K by inner product (NumPy, ``block`` queries at a time)."""
    out = []
    for s in range(0, len(queries), block):
        scores = queries[s:s + block] @ vectors.T
        top = np.argpartition(-scores, K, axis=1)[:, :K]
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1)
        out.append(np.take_along_axis(top, order, 1))
    return np.concatenate(out)


def timed_ms(fn, repeats: list) -> list[float]:
    """Run ``fn(arg)`` for each arg; per-call wall times in milliseconds."""
    times = []
    for arg in repeats:
        t = time.perf_counter()
        fn(arg)
        times.append((time.perf_counter() - t) * 1e3)
    return times


def summary(times: list[float]) -> dict:
    return {"median_ms": round(statistics.median(times), 4),
            "p95_ms": round(float(np.percentile(times, 95)), 4)}


def numpy_brute_force(vectors: np.ndarray, queries: np.ndarray, n: int) -> dict:
    """Single-query latency of ``V @ q`` + argpartition, on the first ``n`` queries."""
    def one(q):
        scores = vectors @ q
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])]
    return summary(timed_ms(one, list(queries[:n])))


def bench_kind(kind: str, vectors: np.ndarray, rows: Rows, queries: np.ndarray,
               exact: np.ndarray, workdir: Path) -> dict:
    t = time.perf_counter()
    gallery = Gallery.build(vectors, rows, index=kind)
    build_s = time.perf_counter() - t
    directory = gallery.save(workdir / kind)
    index_bytes = (directory / gallery.header["files"]["index"]).stat().st_size
    del gallery
    t = time.perf_counter()
    gallery = Gallery.load(directory)
    load_s = time.perf_counter() - t
    single = [q[None] for q in queries]
    raw_index = gallery._searcher()
    gallery.matches(single[0], K)  # warm up (GPU copy, caches)
    api_ms, raw_ms = [], []
    for q in single:  # interleaved, so that both see the same machine load
        api_ms += timed_ms(lambda x: gallery.matches(x, K), [q])
        raw_ms += timed_ms(lambda x: raw_index.search(x, K), [q])
    api, raw = summary(api_ms), summary(raw_ms)
    t = time.perf_counter()
    _, found = gallery.search(queries, K)
    batch_s = time.perf_counter() - t
    gallery.matches(queries, K)
    info = gallery.header["index"]
    for path in directory.iterdir():
        path.unlink()
    return {
        "kind": kind, "factory": info["factory"],
        "knob": {k: info[k] for k in ("nlist", "nprobe", "efSearch") if k in info},
        "tuned_recall_at_10": info.get("tuned_recall_at_10"),
        "recall_at_10": round(ix.recall_at_k(found, exact), 4),
        "api_single": api, "faiss_single": raw,
        "batch_queries_per_s": round(len(queries) / batch_s, 1),
        "index_mib": round(index_bytes / 2**20, 1),
        "metadata_mib": round(gallery.rows.nbytes() / 2**20, 1),
        "build_s": round(build_s, 1), "load_s": round(load_s, 2),
    }


def run(sizes: list[int], kinds: list[str], n_queries: int, hnsw_max: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    results = []
    with tempfile.TemporaryDirectory(prefix="psearch-bench-") as tmp:
        for n in sizes:
            n_ids = max(1, n // VIEWS_PER_ID)
            centres = identity_centres(n_ids, rng)
            vectors = views(centres, rng.integers(0, n_ids, n), rng)
            queries = views(centres, rng.integers(0, n_ids, n_queries), rng)
            rows = synthetic_rows(n)
            exact = exact_neighbours(vectors, queries)
            entry = {"rows": n, "identities": n_ids,
                     "numpy_single": numpy_brute_force(vectors, queries, min(n_queries, 50)),
                     "indexes": []}
            print(f"N={n}: numpy brute force {entry['numpy_single']}", flush=True)
            for kind in kinds:
                if kind == "hnsw" and n > hnsw_max:
                    entry["indexes"].append({"kind": kind, "skipped": f"N > --hnsw-max {hnsw_max}"})
                    continue
                result = bench_kind(kind, vectors, rows, queries, exact, Path(tmp))
                print(f"N={n} {kind}: {json.dumps(result)}", flush=True)
                entry["indexes"].append(result)
            results.append(entry)
    return {
        "benchmark": "gallery_scale", "dim": DIM, "k": K, "queries": n_queries,
        "views_per_identity": VIEWS_PER_ID, "view_noise": VIEW_NOISE,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "faiss": faiss.__version__, "numpy": np.__version__,
                    "gpus": faiss.get_num_gpus()},
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "results": results,
    }


def markdown(report: dict) -> str:
    lines = ["| N | index | median ms | p95 ms | raw FAISS median ms | recall@10 | batch q/s "
             "| index MiB | build s |", "|---|---|---|---|---|---|---|---|---|"]
    for entry in report["results"]:
        np_single = entry["numpy_single"]
        lines.append(f"| {entry['rows']:,} | NumPy brute force | {np_single['median_ms']:.3f} | "
                     f"{np_single['p95_ms']:.3f} | | 1.000 | | | |")
        for r in entry["indexes"]:
            if "skipped" in r:
                lines.append(f"| {entry['rows']:,} | {r['kind']} | skipped ({r['skipped']}) "
                             "| | | | | | |")
                continue
            knob = ", ".join(f"{k} {v}" for k, v in r["knob"].items())
            name = r["factory"] + (f" ({knob})" if knob else "")
            lines.append(
                f"| {entry['rows']:,} | {name} | {r['api_single']['median_ms']:.3f} | "
                f"{r['api_single']['p95_ms']:.3f} | {r['faiss_single']['median_ms']:.3f} | "
                f"{r['recall_at_10']:.3f} | {r['batch_queries_per_s']:,.0f} | "
                f"{r['index_mib'] + r['metadata_mib']:.0f} | {r['build_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--kinds", default="flat,ivf,hnsw,ivfpq")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--hnsw-max", type=int, default=100_000,
                        help="skip HNSW above this many rows (its build is the slow part)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0,
                        help="FAISS and BLAS threads (0: their defaults, all cores)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads or None):
        report = run([int(s) for s in args.sizes.split(",")], args.kinds.split(","),
                     args.queries, args.hnsw_max, args.seed)
    report["threads"] = args.threads or faiss.omp_get_max_threads()
    report["load_average"] = [round(v, 2) for v in os.getloadavg()]
    report["command"] = " ".join(["benchmarks/gallery_scale.py", *sys.argv[1:]])
    table = markdown(report)
    report["table"] = table
    print(table)
    write_json_atomic(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
