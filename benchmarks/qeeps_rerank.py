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
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common.qeeps import faiss_seconds, indexed_per_query, qeeps_pairs, reranked

from psearch.pipeline.stages import Stage, StageRunner, psearch_command

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
RERANK_N = (10, 50, 100)
GALLERY_SIZES = (100, 1000, 10000)
THRESHOLDS = (0.5, 0.01)


def train_stages(fmt: str, root: Path, args: argparse.Namespace, times: dict) -> None:
    """The world, OIM and QEEPS (one thread each), reused once finished, resumed when
    interrupted; the seconds of those run now go into ``times``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    runner = StageRunner(log=lambda m: print(m, flush=True), prefix="  ")
    world, oim, qeeps = root / "world", root / "oim", root / "qeeps"

    def command(name: str, args: list[Any], log: str, done: Path,
                checkpoint: Path | None = None) -> None:
        runner.run(Stage(name, psearch_command(args, root / log, env, resume_flag=True),
                         [done], checkpoint=checkpoint))

    command("generate world", ["synth", world, "--format", fmt, "--preset", "ci", "--seed", 0],
            "synth.log", world / "synth_summary.json")
    fresh = [] if (oim / "last.pt").is_file() else [
        "--config", "joint_oim_c4_cpu", "--set", f"train.epochs={args.oim_epochs}",
        "--set", f"train.lr_steps=[{max(1, args.oim_epochs - 1)}]"]
    command("train OIM", ["train-joint", "--model", "oim", "--data", world, "--format", fmt,
                          "--out", oim, "--no-eval", *fresh], "oim.log", oim / "metrics.json",
            oim / "last.pt")
    fresh = [] if (qeeps / "last.pt").is_file() else [
        "--init", oim / "last.pt", "--set", f"train.pairs_per_epoch={args.pairs}",
        "--set", f"train.epochs={args.qeeps_epochs}"]
    command("train QEEPS", ["train-joint", "--model", "qeeps", "--data", world, "--format", fmt,
                            "--out", qeeps, *fresh], "qeeps.log", qeeps / "metrics.json",
            qeeps / "last.pt")
    times.update(runner.seconds)


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
