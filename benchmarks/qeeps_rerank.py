"""QEEPS against the indexed gallery: accuracy and cost per query, and query-guided re-ranking.

For each generated world (``ci`` preset, seed 0: CUHK-SYSU format, 192 train / 128 test images,
and PRW format, 160 / 160) under ``--work`` (default ``runs/bench_qeeps``):

1. ``psearch train-joint --model oim --config joint_oim_c4_cpu`` (ResNet-18 C4, from scratch,
   ``--oim-epochs``): the indexed model and QEEPS's init;
2. ``psearch train-joint --model qeeps --init oim/last.pt`` (``joint_qeeps_cpu``,
   ``--pairs`` pairs per epoch, ``--qeeps-epochs``);
3. the OIM model's detections + embeddings of every test image and the query embeddings;
4. QEEPS on every (query, gallery image) pair of a fixed subset (``--queries`` queries drawn with
   seed 0; CUHK: the TestG100 galleries; PRW: each gallery cut to ``--prw-gallery`` images, all
   those holding the person + a seeded sample), one file per query (resumable);
5. rows, all on that subset and scored by ``psearch.evaluation.evaluate_pairs`` (the shared
   per-query protocol code): (a) the indexed gallery alone (cosine of OIM embeddings, exact
   inner-product ranking: what IndexFlatIP returns); (b) the same re-ranked: the N best
   pictures of (a)'s ranking re-scored by QEEPS (N = 10, 50, 100), placed above the others;
   (c) QEEPS over the whole gallery; at detection thresholds 0.5 (the protocol) and 0.01
   (QEEPS's own); plus (a) on the full protocol (every query) for reference;
6. cost per query: seconds per pair (measured in step 4), the query embedding and the FAISS
   search (IndexFlatIP over gallery-size x detections-per-image vectors, measured at 100, 1,000
   and 10,000 images); per-query cost of each way at those gallery sizes: measured where run,
   else from ``(a) = t_embed + t_faiss(G)``, ``(b) = (a) + min(N, G) t_pair``,
   ``(c) = G t_pair``.

Writes ``results/qeeps_rerank.json`` and prints the tables. One thread for torch (shared CPUs).

    python benchmarks/qeeps_rerank.py
    python benchmarks/qeeps_rerank.py --formats cuhk --queries 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
RERANK_N = (10, 50, 100)
GALLERY_SIZES = (100, 1000, 10000)
THRESHOLDS = (0.5, 0.01)


def psearch(args: list[Any], log_path: Path) -> float:
    """Run a psearch command (one thread), its output to ``log_path``; seconds taken."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    with open(log_path, "a") as log:
        code = subprocess.call([sys.executable, "-m", "psearch", *map(str, args)], env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    if code:
        raise SystemExit(f"psearch {' '.join(map(str, args[:2]))} failed: see {log_path}")
    return time.perf_counter() - start


def train_stages(fmt: str, root: Path, args: argparse.Namespace, times: dict) -> None:
    world = root / "world"
    if not (world / "synth_summary.json").is_file():
        times["generate world"] = psearch(["synth", world, "--format", fmt, "--preset", "ci",
                                           "--seed", 0], root / "synth.log")
    oim, qeeps = root / "oim", root / "qeeps"
    if not (oim / "metrics.json").is_file():
        resume = ["--resume"] if (oim / "last.pt").is_file() else [
            "--config", "joint_oim_c4_cpu", "--set", f"train.epochs={args.oim_epochs}",
            "--set", f"train.lr_steps=[{max(1, args.oim_epochs - 1)}]"]
        times["train OIM"] = psearch(["train-joint", "--model", "oim", "--data", world,
                                      "--format", fmt, "--out", oim, "--no-eval", *resume],
                                     root / "oim.log")
    if not (qeeps / "metrics.json").is_file():
        resume = ["--resume"] if (qeeps / "last.pt").is_file() else [
            "--init", oim / "last.pt", "--set", f"train.pairs_per_epoch={args.pairs}",
            "--set", f"train.epochs={args.qeeps_epochs}"]
        times["train QEEPS"] = psearch(["train-joint", "--model", "qeeps", "--data", world,
                                        "--format", fmt, "--out", qeeps, *resume],
                                       root / "qeeps.log")


def oim_results(root: Path, dataset: Any, times: dict) -> Any:
    """OIM detections (score >= 0.01) + embeddings of the test images, query embeddings."""
    from psearch.evaluation import load_results, save_results
    from psearch.joint.evaluate import detected_results
    from psearch.joint.infer import JointSearcher

    path = root / "oim_results.npz"
    if not path.is_file():
        searcher = JointSearcher.from_checkpoint(root / "oim" / "last.pt", device="cpu")
        start = time.perf_counter()
        save_results(path, detected_results(searcher, dataset, score_thresh=0.01))
        times["OIM detect + embed test images"] = time.perf_counter() - start
    return load_results(path)


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


def embed_seconds(root: Path, dataset: Any, repeats: int = 10) -> float:
    """Median seconds to embed one query box (decode + one OIM forward of its picture)."""
    from psearch.core.media import read_image
    from psearch.joint.infer import JointSearcher

    searcher = JointSearcher.from_checkpoint(root / "oim" / "last.pt", device="cpu")
    times = []
    for query in dataset.queries[:repeats]:
        start = time.perf_counter()
        searcher.embed_boxes(read_image(dataset.image(query.image).path), query.box[None])
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def run_world(fmt: str, args: argparse.Namespace, log) -> dict[str, Any]:
    from psearch.data import load_dataset
    from psearch.evaluation import (
        PairResults,
        evaluate,
        evaluate_pairs,
        pair_galleries,
        sample_queries,
    )

    root = args.work / fmt
    root.mkdir(parents=True, exist_ok=True)
    times_path = root / "times.json"
    times = json.loads(times_path.read_text()) if times_path.is_file() else {}
    train_stages(fmt, root, args, times)
    times_path.write_text(json.dumps(times))
    dataset = load_dataset(root / "world", fmt)
    results = oim_results(root, dataset, times)
    times_path.write_text(json.dumps(times))
    queries = sample_queries(len(dataset.queries), args.queries, seed=0).tolist()
    cuhk = fmt == "cuhk"
    protocol = ({"gallery_size": args.cuhk_gallery} if cuhk else {"cross_camera": False})
    subset = {"queries": queries, "max_gallery": None if cuhk else args.prw_gallery, "seed": 0}
    galleries = pair_galleries(dataset, **protocol, **subset)
    log(f"{fmt}: QEEPS on {sum(len(g.images) for g in galleries.values())} pairs "
        f"({len(galleries)} queries)")
    qeeps, t_pair, ran = qeeps_pairs(root, dataset, galleries, log)
    oim_per_query = indexed_per_query(dataset, results, galleries, qeeps)
    rows: dict[str, Any] = {"(a) indexed gallery (OIM + FAISS)": oim_per_query}
    for n in RERANK_N:
        rows[f"(b) indexed, top {n} re-ranked by QEEPS"] = reranked(oim_per_query, qeeps, n)
    rows["(c) QEEPS over the whole gallery"] = qeeps
    accuracy: dict[str, Any] = {}
    for name, per_query in rows.items():
        pair_results = PairResults.from_per_query(per_query)
        accuracy[name] = {f"det {t}": evaluate_pairs(dataset, pair_results, det_thresh=t,
                                                     **protocol, **subset)
                          for t in THRESHOLDS}
    report = evaluate(dataset, results)
    full = report["search"]
    dets_per_image = len(results.scores[results.scores >= 0.5]) / len(dataset.gallery)
    t_embed = embed_seconds(root, dataset)
    t_faiss = {g: faiss_seconds(max(1, round(g * dets_per_image)), results.features.shape[1])
               for g in GALLERY_SIZES}
    measured_g = int(np.mean([len(g.images) for g in galleries.values()]))
    cost = {}
    for g in GALLERY_SIZES:
        a = t_embed + t_faiss[g]
        cost[g] = {"(a) indexed": a, **{f"(b) re-rank top {n}": a + min(n, g) * t_pair
                                        for n in RERANK_N},
                   "(c) QEEPS whole gallery": g * t_pair}
    return {"world": fmt, "train_images": len(dataset.train), "test_images": len(dataset.gallery),
            "queries_total": len(dataset.queries), "queries_run": queries,
            "protocol": (f"CUHK-SYSU TestG{args.cuhk_gallery}" if cuhk else
                         f"PRW all cameras, galleries cut to {args.prw_gallery} images"),
            "subset": accuracy["(c) QEEPS over the whole gallery"]["det 0.5"]["subset"],
            "accuracy": accuracy, "full_protocol_indexed": full,
            "oim_detection": report["detection"],
            "seconds_per_pair": t_pair, "pairs_run_now": ran,
            "pairs_per_query": measured_g,
            "cost_note": (f"(c) at G = {measured_g} and (b) are the measured pair time x pairs; "
                          "(a) measured at every size (FAISS on random unit vectors of the "
                          "gallery's size); larger G for (b), (c): the formula"),
            "query_embed_seconds": t_embed, "faiss_seconds": t_faiss,
            "detections_per_image": dets_per_image, "cost_per_query_seconds": cost,
            "stage_seconds": times,
            "qeeps_train": json.loads((root / "qeeps" / "metrics.json").read_text()),
            "oim_train": json.loads((root / "oim" / "metrics.json").read_text())}


def print_tables(report: dict[str, Any]) -> None:
    for world in report["worlds"]:
        print(f"\n**{world['world']}** ({world['protocol']}; subset: {world['subset']}). "
              "mAP / top-1 (%):\n")
        print("| row | det >= 0.5 | det >= 0.01 |")
        print("|---|---:|---:|")
        for name, by_t in world["accuracy"].items():
            cells = [f"{100 * m['mAP']:.1f} / {100 * m['top1']:.1f}" for m in by_t.values()]
            print(f"| {name} | {' | '.join(cells)} |")
        print("\nfull protocol, indexed gallery (every query): " + ", ".join(
            f"{k} {100 * v['mAP']:.1f} / {100 * v['top1']:.1f}"
            for k, v in world["full_protocol_indexed"].items()) + "; OIM detection AP / recall "
            + ", ".join(f"{k} {100 * v['ap']:.1f} / {100 * v['recall']:.1f}"
                        for k, v in world["oim_detection"].items()))
        print(f"\nseconds per pair {world['seconds_per_pair']:.3f}, query embedding "
              f"{world['query_embed_seconds']:.3f} s; cost per query (s) at gallery size:\n")
        sizes = list(world["cost_per_query_seconds"])
        print("| way | " + " | ".join(f"G = {g}" for g in sizes) + " |")
        print("|---|" + "---:|" * len(sizes))
        for way in world["cost_per_query_seconds"][sizes[0]]:
            print(f"| {way} | " + " | ".join(
                f"{world['cost_per_query_seconds'][g][way]:.3g}" for g in sizes) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_qeeps")
    parser.add_argument("--formats", nargs="+", default=["cuhk", "prw"])
    parser.add_argument("--oim-epochs", type=int, default=4)
    parser.add_argument("--qeeps-epochs", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=160)
    parser.add_argument("--queries", type=int, default=14)
    parser.add_argument("--prw-gallery", type=int, default=100)
    parser.add_argument("--cuhk-gallery", type=int, default=100)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(ROOT))
    report: dict[str, Any] = {"command": "python benchmarks/qeeps_rerank.py " + " ".join(
        sys.argv[1:]), "settings": {k: str(v) for k, v in vars(args).items()},
        "machine": f"{os.cpu_count()} CPU cores, torch threads 1", "worlds": []}
    from psearch.core.io import write_json_atomic

    out = RESULTS / "qeeps_rerank.json"
    for fmt in args.formats:
        world = run_world(fmt, args, lambda m: print(m, flush=True))
        world["command"] = report["command"]
        # other worlds' entries of an earlier (or concurrent) run are kept
        saved = json.loads(out.read_text()) if out.is_file() else report
        saved["worlds"] = [w for w in saved.get("worlds", []) if w["world"] != fmt] + [world]
        saved.update(machine=report["machine"])
        RESULTS.mkdir(exist_ok=True)
        write_json_atomic(out, saved)
        report["worlds"].append(world)
    print_tables(report)


if __name__ == "__main__":
    main()
