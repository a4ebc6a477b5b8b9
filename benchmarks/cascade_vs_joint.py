"""Cascade versus joint: every model on the same worlds, one evaluator, accuracy and cost side
by side.

On the generated CUHK-SYSU- and PRW-format ``bench`` worlds of ``benchmarks/cascade.py`` it trains
(or reuses) each model with its CPU preset, through the commands a user runs:

  cascade   detector_cpu + reid_bench (``benchmarks/cascade.py``'s stages, under --cascade-work)
  oim       train-joint --model oim, joint_oim_cpu (``benchmarks/joint_oim.py``'s stages and
            layout, under --oim-work)
  inet, dcinet, alignps
            train-joint --model M, joint_M_cpu (the same stages, under --work/M); a model that
            ``train-joint`` does not offer is reported unavailable with the reason
  oim_c4    train-joint --model oim, joint_oim_c4_cpu: the ResNet-18 C4 base QEEPS extends
  qeeps     train-joint --model qeeps --init oim_c4 (joint_qeeps_cpu)

Every indexed model is built into a FAISS gallery (``detect`` [``--embed``], ``embed``,
``index``) and scored by one evaluator (``psearch.evaluation``, CMC to rank 20): search on the
gallery's detections read back from FAISS, search on ground-truth boxes, detection AP/recall.
QEEPS searches pair by pair (~0.1 s a pair on 2 CPU cores): it is scored on a fixed subset
(``--qeeps-queries`` queries drawn with seed 0, default 240: all of CUHK gallery-100, 240 of
PRW's; the headline protocol's galleries cut to ``--qeeps-gallery`` images) by
``evaluate_pairs``, the same per-query code, alone and re-ranking
the top N pictures of oim_c4's FAISS shortlist; every other model is scored on that subset too.

Budget (from each checkpoint): epochs, iterations x samples per iteration, training seconds.
Cost: gallery images/s (``psearch detect``'s own timer, plus the re-ID crops/s for the
cascade), query latency on the indexed gallery (embed the query box on its frame + FAISS
search, median over ``--latency-queries`` queries) and seconds per query at 1k-1M gallery
images: exact FAISS search timed on random unit vectors (gallery images x detections per image
of the model) up to ``--measure-max`` images, beyond that ``t(N) = t_embed + a + b N d`` (a, b
fitted on the timed sizes; d detections per image); QEEPS pair by pair ``N t_pair``; QEEPS
re-ranking ``t_oim_c4(N) + n t_pair``.

Stages are reused on a re-run and interrupted trainings resume, so the table can be completed
over several sittings: ``--models``/``--formats`` pick what runs now, and every finished model
of an earlier run is still reported (its record says so); the rest are "not run yet" and the
JSON says ``"partial": true``. Writes results/cascade_vs_joint.json, .md (tables and a
conclusion computed from the figures), _cmc.png and _cost.png.

    python benchmarks/cascade_vs_joint.py                          # everything (hours on 2 CPUs)
    python benchmarks/cascade_vs_joint.py --models cascade oim     # part of it; the rest later
    python benchmarks/cascade_vs_joint.py --render                 # redraw table and plots
    python benchmarks/cascade_vs_joint.py --smoke --work /tmp/cvj --out /tmp/cvj/cvj.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from cascade_vs_joint_report import missing, write_outputs
from common import qeeps as qeeps_pairs
from common import results as common_results
from common import scoring, worlds
from common.worlds import Stages

from psearch.joint.config import TRAIN_MODELS
from psearch.pipeline.stages import StageFailed

RESULTS = Path(__file__).parent / "results"
FORMATS = ("cuhk", "prw")
GALLERY_SIZES = (1_000, 10_000, 100_000, 1_000_000)
TIMED_SIZES = (100, 1_000, 10_000)
"""Gallery images at which the FAISS search is timed (up to --measure-max); fitted beyond."""
RERANK_TOP = (10, 50)
SMOKE = {"qeeps_pairs": 8, "qeeps_queries": 2, "qeeps_gallery": 8, "latency_queries": 5,
         "measure_max": 1_000}


@dataclass(frozen=True)
class Model:
    label: str
    kind: str  # cascade | joint | qeeps
    preset: str
    joint_model: str = ""  # train-joint --model


MODELS = {
    "cascade": Model("cascade: detector + re-ID", "cascade",
                     f"detector_cpu x{worlds.DETECTOR_EPOCHS} + {worlds.REID_CONFIG}"),
    "oim": Model("joint OIM", "joint", worlds.JOINT_CONFIG, "oim"),
    "inet": Model("I-Net", "joint", "joint_inet_cpu", "inet"),
    "dcinet": Model("DC-I-Net", "joint", "joint_dcinet_cpu", "dcinet"),
    "alignps": Model("AlignPS", "joint", "joint_alignps_cpu", "alignps"),
    "oim_c4": Model("joint OIM, ResNet-18 C4 (QEEPS's base)", "joint", "joint_oim_c4_cpu", "oim"),
    "qeeps": Model("QEEPS", "qeeps", "joint_qeeps_cpu"),
}


# ------------------------------------------------------------------------------ the stages

def unavailable(name: str) -> str | None:
    """Why ``train-joint`` cannot train this model here (None when it can)."""
    from psearch.core.config import load_config
    from psearch.core.errors import PsearchError

    model = MODELS[name]
    if model.kind != "joint":
        return None
    if model.joint_model not in TRAIN_MODELS:
        return (f"psearch train-joint has no --model {model.joint_model} "
                f"(it offers {', '.join(TRAIN_MODELS)})")
    try:
        load_config(model.preset)
    except PsearchError as error:
        return f"no preset {model.preset}: {error}"
    return None


def describe(name: str) -> dict[str, str]:
    model = MODELS[name]
    return {"label": model.label, "preset": model.preset, "kind": model.kind}


def model_root(name: str, fmt: str, args: argparse.Namespace) -> Path:
    if name == "cascade":
        return args.cascade_work / fmt
    return (args.oim_work if name == "oim" else args.work / name) / fmt


def build_indexed(name: str, fmt: str, args: argparse.Namespace, env: dict[str, str],
                  log) -> dict[str, Any]:
    """Train (or reuse) the model and build its FAISS gallery of the test images."""
    if name == "cascade":
        ns = argparse.Namespace(work=args.cascade_work, seed=worlds.WORLD_SEED, smoke=args.smoke)
        built = worlds.build_world(fmt, ns, env, log, with_hog=False)
        galleries = built["galleries"]["cascade"]
        return {"dataset": built["dataset"], "stages": built["stages"],
                "gallery": galleries["gallery"], "dets": galleries["detections"],
                "checkpoints": {"detector": built["detector"] / "last.pt",
                                "re-ID": built["reid"] / "last.pt"}}
    model = MODELS[name]
    ns = argparse.Namespace(work=model_root(name, fmt, args).parent, worlds=args.cascade_work,
                            smoke=args.smoke)
    built = worlds.build_joint_world(fmt, ns, env, log, model=model.joint_model,
                                     config=model.preset)
    return {**built, "checkpoints": {"joint": built["run"] / "last.pt"}}


def train_qeeps(fmt: str, args: argparse.Namespace, env: dict[str, str], log,
                base: Path) -> dict[str, Any]:
    """QEEPS fine-tuned from the oim_c4 checkpoint ``base`` (reused once finished)."""
    root = model_root("qeeps", fmt, args)
    root.mkdir(parents=True, exist_ok=True)
    stages = Stages(root, env, log)
    run = root / "qeeps"
    train = ["train-joint", "--model", "qeeps", "--data", args.cascade_work / fmt / "world",
             "--format", fmt, "--out", run]
    if not (run / "last.pt").is_file():  # else an interrupted training resumes
        train += ["--init", base, "--config", MODELS["qeeps"].preset]
        if args.smoke:
            train += ["--epochs", 1, "--set", f"train.pairs_per_epoch={SMOKE['qeeps_pairs']}"]
    stages.command("train QEEPS", train, lambda: (run / "metrics.json").is_file(),
                   checkpoint=run / "last.pt")
    if "train QEEPS" in stages.ran:  # pair results of an earlier model are stale
        shutil.rmtree(root / "pairs", ignore_errors=True)
    return {"root": root, "stages": stages, "checkpoints": {"QEEPS": run / "last.pt"}}


def fingerprint(paths: dict[str, Path]) -> dict[str, list[int]]:
    """Size and modification time of each file: a retrained model invalidates its record."""
    return {k: [p.stat().st_size, p.stat().st_mtime_ns] for k, p in paths.items()}


def stage_table(stages: Stages) -> dict[str, dict[str, Any]]:
    return {name: {"seconds": s, "reused": name not in stages.ran}
            for name, s in stages.seconds.items()}


# ----------------------------------------------------------------------------- the figures

def budget(checkpoint: Path, part: str) -> dict[str, Any]:
    """Epochs, iterations, samples per iteration and seen, training seconds of a checkpoint."""
    from psearch.core.checkpoint import load_checkpoint

    payload = load_checkpoint(checkpoint)
    config, kind = payload["config"], payload.get("kind")
    if kind == "reid":
        data = config["data"]
        per = (data["p"] * data["k"] + data["unlabeled_per_batch"] if data["sampler"] == "pk"
               else data["batch_size"])
        unit = "crops"
    else:
        per, unit = int(config["train"]["batch_size"]), "pairs" if kind == "qeeps" else "images"
    iterations = int(payload["scheduler"]["last_epoch"])
    return {"part": part, "epochs": int(payload["epoch"]), "iterations": iterations,
            "per_iteration": per, "seen": iterations * per, "unit": unit,
            "train_seconds": float(payload.get("train_seconds", 0.0))}


def subset_spec(dataset: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The fixed subset every model is scored on (QEEPS can only afford that one): the
    headline protocol (CUHK: largest gallery; PRW: all cameras), sampled queries, galleries
    cut to --qeeps-gallery images."""
    from psearch.evaluation import sample_queries, search_protocols
    from psearch.evaluation.protocols import is_cuhk

    protocols = search_protocols(dataset)
    name = list(protocols)[-1] if is_cuhk(dataset) else next(iter(protocols))
    protocol = dict(protocols[name])
    size = protocol.get("gallery_size")
    cut = None if size is not None and size <= args.qeeps_gallery else args.qeeps_gallery
    queries = sample_queries(len(dataset.queries), args.qeeps_queries, seed=0).tolist()
    return {"protocol_name": name, "protocol": protocol,
            "subset": {"queries": queries, "max_gallery": cut, "seed": 0}}


def current_subset(fmt: str, args: argparse.Namespace, spec_of: dict[str, Any]) -> Any:
    """This run's subset of world ``fmt`` (None when the world is not generated yet)."""
    from psearch.data import load_dataset

    if fmt not in spec_of:
        world = args.cascade_work / fmt / "world"
        if not (world / "synth_summary.json").is_file():
            return None
        spec_of[fmt] = subset_spec(load_dataset(world, fmt), args)
    return spec_of[fmt]


def score_subset(dataset: Any, pairs: Any, spec: dict[str, Any]) -> dict[str, Any]:
    from psearch.evaluation import evaluate_pairs

    return scoring.with_cmc(evaluate_pairs(dataset, pairs, topk=scoring.CMC_RANKS,
                                           **spec["protocol"], **spec["subset"]))


def search_cost(t_embed: float, dets_per_image: float, dim: int,
                measure_max: int) -> dict[str, Any]:
    """Seconds per query at GALLERY_SIZES images: t_embed + exact FAISS search over N x d
    vectors, timed up to ``measure_max`` images, else from the linear fit of the timed sizes."""
    timed = {n: qeeps_pairs.faiss_seconds(max(1, round(n * dets_per_image)), dim)
             for n in TIMED_SIZES if n <= max(measure_max, TIMED_SIZES[1])}
    slope, intercept = np.polyfit([n * dets_per_image for n in timed], list(timed.values()), 1)
    per_query = {}
    for n in GALLERY_SIZES:
        search = timed.get(n, max(0.0, intercept + slope * n * dets_per_image))
        per_query[str(n)] = {"seconds": t_embed + search, "measured": n in timed}
    return {"per_query": per_query, "faiss_timed": {str(n): t for n, t in timed.items()},
            "fit": {"a": float(intercept), "b": float(slope)},
            "formula": (f"t_embed + a + b N d; t_embed {t_embed:.4f} s, a {intercept:.2e} s, "
                        f"b {slope:.2e} s per vector, d {dets_per_image:.2f}")}


def score_indexed(name: str, built: dict[str, Any], spec: dict[str, Any],
                  args: argparse.Namespace, log) -> dict[str, Any]:
    """Accuracy (gallery detections, ground-truth boxes, detection, the subset) and cost."""
    from psearch.api import PersonSearch
    from psearch.evaluation import pair_galleries, pairs_from_results, save_results
    from psearch.gallery import Gallery
    from psearch.search.evaluate import gallery_results

    dataset = built["dataset"]
    gallery = Gallery.load(built["gallery"])
    search = PersonSearch(gallery, device="cpu")
    embedder = search.embedder
    log(f"  scoring {name}: gallery, ground-truth boxes, subset")
    detected, _ = gallery_results(gallery, dataset, embedder)
    records = args.work / built["fmt"] / "records"
    records.mkdir(parents=True, exist_ok=True)
    save_results(records / f"{name}_detected.npz", detected)  # QEEPS re-ranks oim_c4's
    if hasattr(embedder, "embed_images_boxes"):  # joint: boxes pooled on their frames
        from psearch.joint.evaluate import ground_truth_results
    else:
        from psearch.reid.evaluate import ground_truth_results
    on_detected = scoring.score(dataset, detected)
    on_truth = scoring.score(dataset, ground_truth_results(embedder, dataset))
    galleries = pair_galleries(dataset, **spec["protocol"], **spec["subset"])
    subset = score_subset(dataset, pairs_from_results(dataset, detected, galleries), spec)

    log(f"  timing {name}: gallery images/s, query latency, search at 1k-1M images")
    summary = common_results.json_file(built["dets"] / "detect.json")["summary"]
    dets_per_image = len(gallery) / summary["pictures"]
    seconds_per_image = summary["seconds"] / summary["pictures"]
    speed: dict[str, Any] = {"detect_images_per_s": 1 / seconds_per_image}
    if name == "cascade":
        speed["embed_crops_per_s"] = scoring.embed_rate(embedder, built["dets"])
        seconds_per_image += dets_per_image / speed["embed_crops_per_s"]
    latency = scoring.query_latency(search, dataset.queries[:args.latency_queries], dataset)
    t_embed = (latency["query_ms_median"] - latency["search_ms_median"]) / 1000
    return {"accuracy": {"detected": on_detected["search"], "ground_truth": on_truth["search"],
                         "detection": on_detected["detection"], "subset": subset},
            "cost": {**speed, **latency, "gallery_images_per_s": 1 / seconds_per_image,
                     "gallery_rows": len(gallery), "dets_per_image": dets_per_image,
                     **search_cost(t_embed, dets_per_image, int(embedder.dim),
                                   args.measure_max)}}


def score_qeeps(built: dict[str, Any], base: dict[str, Any], dataset: Any,
                spec: dict[str, Any], args: argparse.Namespace, log) -> dict[str, Any]:
    """QEEPS on every pair of the subset (resumable, one file per query), alone and re-ranking
    the top N of oim_c4's gallery ranking; cost per query from the measured seconds per pair."""
    from psearch.evaluation import PairResults, load_results, pair_galleries

    galleries = pair_galleries(dataset, **spec["protocol"], **spec["subset"])
    tic = time.perf_counter()
    qeeps, t_pair, ran = qeeps_pairs.qeeps_pairs(built["root"], dataset, galleries, log)
    if ran:
        built["stages"].add("QEEPS pairs (subset)", time.perf_counter() - tic)
    results = load_results(args.work / built["fmt"] / "records" / "oim_c4_detected.npz")
    indexed = qeeps_pairs.indexed_per_query(dataset, results, galleries, qeeps)
    rows = {"pair by pair": score_subset(dataset, PairResults.from_per_query(qeeps), spec)}
    for n in RERANK_TOP:
        rows[f"re-ranking oim_c4's top {n}"] = score_subset(
            dataset, PairResults.from_per_query(qeeps_pairs.reranked(indexed, qeeps, n)), spec)
    base_cost = base["cost"]["per_query"]
    ways = {"pair by pair": {n: {"seconds": int(n) * t_pair, "measured": False}
                             for n in base_cost}}
    for top in RERANK_TOP:
        ways[f"re-ranking oim_c4's top {top}"] = {
            n: {"seconds": c["seconds"] + min(top, int(n)) * t_pair, "measured": False}
            for n, c in base_cost.items()}
    pairs_per_query = float(np.mean([len(g.images) for g in galleries.values()]))
    return {"accuracy": {"subset_rows": rows},
            "cost": {"seconds_per_pair": t_pair, "pairs_per_query_measured": pairs_per_query,
                     "ways": ways,
                     "formula": "pair by pair: N t_pair; re-ranking: oim_c4's t(N) + n t_pair "
                                f"(t_pair {t_pair:.3f} s, measured on the subset's pairs)"}}


# ------------------------------------------------------------------------------ the driver

def run_model(name: str, fmt: str, args: argparse.Namespace, env: dict[str, str], log,
              done: dict[str, dict], spec_of: dict[str, Any]) -> dict[str, Any]:
    """One model on one world: run (``--models``, ``--formats``) or read its earlier record."""
    from psearch.core.errors import PsearchError
    from psearch.core.io import write_json_atomic
    from psearch.data import load_dataset

    model = MODELS[name]
    head = describe(name)
    reason = unavailable(name)
    if reason:
        log(f"{fmt}: {name} unavailable: {reason}")
        return {**head, "status": "unavailable", "reason": reason}
    path = args.work / fmt / "records" / f"{name}.json"
    record = common_results.json_file(path)
    if fmt not in args.formats or name not in args.selected:
        if not record:
            return {**head, "status": "not run yet"}
        paths = {k: Path(v) for k, v in record["checkpoints"].items()}
        if not all(p.is_file() for p in paths.values()) or fingerprint(paths) != record[
                "fingerprint"]:
            return {**head, "status": "not run yet",
                    "reason": "its checkpoints changed since it was scored: select it again"}
        if record.get("subset") != current_subset(fmt, args, spec_of):
            return {**head, "status": "not run yet",
                    "reason": "scored on another subset (--qeeps-queries / --qeeps-gallery): "
                              "select it again"}
        return {**record, **head, "this_run": "not selected; figures of an earlier run"}
    log(f"{fmt}: {name} ({model.preset})")
    try:
        if model.kind == "qeeps":
            base = done.get("oim_c4", {})
            if base.get("status") != "finished":
                raise StageFailed(f"its base oim_c4 is {base.get('status')}")
            built = {**train_qeeps(fmt, args, env, log, Path(base["checkpoints"]["joint"])),
                     "fmt": fmt}
            dataset = load_dataset(args.cascade_work / fmt / "world", fmt)
            spec = spec_of.setdefault(fmt, subset_spec(dataset, args))
            figures = score_qeeps(built, base, dataset, spec, args, log)
            budgets = [*base["budget"], budget(built["checkpoints"]["QEEPS"], "QEEPS")]
        else:
            built = {**build_indexed(name, fmt, args, env, log), "fmt": fmt}
            spec = spec_of.setdefault(fmt, subset_spec(built["dataset"], args))
            prints = fingerprint(built["checkpoints"])
            if record and record.get("fingerprint") == prints and record.get("subset") == spec:
                log(f"  {name}: scores reused ({path})")
                return {**record, **head, "stages": stage_table(built["stages"]),
                        "this_run": "checked; scores reused"}
            figures = score_indexed(name, built, spec, args, log)
            budgets = [budget(p, part) for part, p in built["checkpoints"].items()]
    except (StageFailed, PsearchError) as error:
        log(f"  {name}: failed: {error}")
        return {**head, "status": "failed", "reason": str(error)}
    record = {**head, "status": "finished", **figures, "budget": budgets,
              "train_seconds": sum(b["train_seconds"] for b in budgets),
              "checkpoints": {k: str(p) for k, p in built["checkpoints"].items()},
              "fingerprint": fingerprint(built["checkpoints"]), "subset": spec,
              "stages": stage_table(built["stages"]),
              "scored_at": datetime.now(UTC).isoformat(timespec="seconds")}
    write_json_atomic(path, record)
    return {**record, "this_run": "run"}


def world_facts(fmt: str, args: argparse.Namespace) -> dict[str, Any] | None:
    from psearch.data import load_dataset

    world = args.cascade_work / fmt / "world"
    if not (world / "synth_summary.json").is_file():
        return None
    return scoring.world_facts(load_dataset(world, fmt))


def collect(args: argparse.Namespace, env: dict[str, str], log) -> dict[str, Any]:
    """Every world and model (run or read back); stops early, keeping what is done, on Ctrl-C."""
    worlds: dict[str, Any] = {fmt: {"models": {}} for fmt in FORMATS}
    spec_of: dict[str, Any] = {}
    interrupted = False
    for fmt in FORMATS:
        models = worlds[fmt]["models"]
        for name in MODELS:
            if interrupted:
                models[name] = {**describe(name), "status": "not run yet",
                                "reason": "interrupted"}
                continue
            try:
                models[name] = run_model(name, fmt, args, env, log, models, spec_of)
            except KeyboardInterrupt:
                interrupted = True
                log("interrupted: writing what is finished")
                models[name] = {**describe(name), "status": "not run yet",
                                "reason": "interrupted"}
        worlds[fmt]["facts"] = world_facts(fmt, args)
    return {"worlds": worlds, "interrupted": interrupted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS),
                        help="models to run now (qeeps brings oim_c4); the others are read "
                             "back from earlier runs or reported 'not run yet'")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--work", type=Path, default=Path("runs/bench_cvj"),
                        help="runs of inet, dcinet, alignps, oim_c4, qeeps and the records")
    parser.add_argument("--cascade-work", type=Path, default=None,
                        help="the worlds and the cascade (default runs/bench_cascade, as "
                             "benchmarks/cascade.py; --smoke: WORK/cascade)")
    parser.add_argument("--oim-work", type=Path, default=None,
                        help="joint OIM runs (default runs/bench_joint, as "
                             "benchmarks/joint_oim.py; --smoke: WORK/oim)")
    parser.add_argument("--qeeps-queries", type=int, default=240,
                        help="queries of the subset (drawn with seed 0)")
    parser.add_argument("--qeeps-gallery", type=int, default=100,
                        help="subset galleries cut to this many images")
    parser.add_argument("--latency-queries", type=int, default=50)
    parser.add_argument("--measure-max", type=int, default=10_000,
                        help="largest gallery (images) whose FAISS search is timed")
    common_results.output_options(parser, RESULTS / "cascade_vs_joint.json")
    args = parser.parse_args()
    if common_results.rendered(parser, args, RESULTS / "cascade_vs_joint.json", write_outputs):
        return
    if args.smoke:
        for key, value in SMOKE.items():
            if key != "qeeps_pairs" and parser.get_default(key) == getattr(args, key):
                setattr(args, key, value)
    args.cascade_work = args.cascade_work or (
        args.work / "cascade" if args.smoke else Path("runs/bench_cascade"))
    args.oim_work = args.oim_work or (args.work / "oim" if args.smoke else Path("runs/bench_joint"))
    args.selected = set(args.models) | ({"oim_c4"} if "qeeps" in args.models else set())

    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", flush=True)

    env = {**os.environ, "PYTHONHASHSEED": "0"}
    collected = collect(args, env, log)
    gaps = missing(collected["worlds"])
    result = {"command": "python benchmarks/cascade_vs_joint.py " + " ".join(sys.argv[1:]),
              "smoke": args.smoke, "partial": bool(gaps), "missing": gaps,
              "interrupted": collected["interrupted"], "machine": common_results.machine(),
              "settings": {"models": args.models, "formats": args.formats,
                           "work": str(args.work), "cascade_work": str(args.cascade_work),
                           "oim_work": str(args.oim_work), "qeeps_queries": args.qeeps_queries,
                           "qeeps_gallery": args.qeeps_gallery,
                           "latency_queries": args.latency_queries,
                           "measure_max": args.measure_max, "gallery_sizes": GALLERY_SIZES,
                           "rerank_top": RERANK_TOP},
              "models": {n: {"label": m.label, "kind": m.kind, "preset": m.preset}
                         for n, m in MODELS.items()},
              "wall_seconds": round(time.perf_counter() - started, 1),
              "worlds": collected["worlds"]}
    write_outputs(result, args.out)
    if collected["interrupted"]:
        sys.exit(130)


if __name__ == "__main__":
    main()
