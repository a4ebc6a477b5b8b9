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
QEEPS searches pair by pair, too slow for the full protocol on a CPU: it is scored on a fixed
subset (``--qeeps-queries`` queries drawn with seed 0, the headline protocol's galleries cut to
``--qeeps-gallery`` images) by ``evaluate_pairs``, the same per-query code, alone and re-ranking
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

sys.path.insert(0, str(Path(__file__).parent))
import cascade  # noqa: E402
import joint_oim  # noqa: E402
import qeeps_rerank  # noqa: E402

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
                     f"detector_cpu x{cascade.DETECTOR_EPOCHS} + {cascade.REID_CONFIG}"),
    "oim": Model("joint OIM", "joint", joint_oim.CONFIG, "oim"),
    "inet": Model("I-Net", "joint", "joint_inet_cpu", "inet"),
    "dcinet": Model("DC-I-Net", "joint", "joint_dcinet_cpu", "dcinet"),
    "alignps": Model("AlignPS", "joint", "joint_alignps_cpu", "alignps"),
    "oim_c4": Model("joint OIM, ResNet-18 C4 (QEEPS's base)", "joint", "joint_oim_c4_cpu", "oim"),
    "qeeps": Model("QEEPS", "qeeps", "joint_qeeps_cpu"),
}


# ------------------------------------------------------------------------------ the stages

def unavailable(name: str) -> str | None:
    """Why ``train-joint`` cannot train this model here (None when it can)."""
    from psearch.config import load_config
    from psearch.errors import PsearchError
    from psearch.joint.commands import train_joint_command

    model = MODELS[name]
    if model.kind != "joint":
        return None
    [option] = [p for p in train_joint_command.params if p.name == "model_name"]
    if model.joint_model not in option.type.choices:
        return (f"psearch train-joint has no --model {model.joint_model} "
                f"(it offers {', '.join(option.type.choices)})")
    try:
        load_config(model.preset)
    except PsearchError as error:
        return f"no preset {model.preset}: {error}"
    return None


def model_root(name: str, fmt: str, args: argparse.Namespace) -> Path:
    if name == "cascade":
        return args.cascade_work / fmt
    return (args.oim_work if name == "oim" else args.work / name) / fmt


def build_indexed(name: str, fmt: str, args: argparse.Namespace, env: dict[str, str],
                  log) -> dict[str, Any]:
    """Train (or reuse) the model and build its FAISS gallery of the test images."""
    if name == "cascade":
        ns = argparse.Namespace(work=args.cascade_work, seed=cascade.WORLD_SEED, smoke=args.smoke)
        built = cascade.build_world(fmt, ns, env, log, with_hog=False)
        galleries = built["galleries"]["cascade"]
        return {"dataset": built["dataset"], "stages": built["stages"],
                "gallery": galleries["gallery"], "dets": galleries["detections"],
                "checkpoints": {"detector": built["detector"] / "last.pt",
                                "re-ID": built["reid"] / "last.pt"}}
    model = MODELS[name]
    ns = argparse.Namespace(work=model_root(name, fmt, args).parent, worlds=args.cascade_work,
                            smoke=args.smoke)
    built = joint_oim.build_world(fmt, ns, env, log, model=model.joint_model, config=model.preset)
    return {**built, "checkpoints": {"joint": built["run"] / "last.pt"}}


def train_qeeps(fmt: str, args: argparse.Namespace, env: dict[str, str], log,
                base: Path) -> dict[str, Any]:
    """QEEPS fine-tuned from the oim_c4 checkpoint ``base`` (reused once finished)."""
    root = model_root("qeeps", fmt, args)
    root.mkdir(parents=True, exist_ok=True)
    stages = cascade.Stages(root, env, log)
    run = root / "qeeps"
    train = ["train-joint", "--model", "qeeps", "--data", args.cascade_work / fmt / "world",
             "--format", fmt, "--out", run]
    if (run / "last.pt").is_file() and not (run / "metrics.json").is_file():
        train.append("--resume")  # an interrupted training continues
    else:
        train += ["--init", base, "--config", MODELS["qeeps"].preset]
        if args.smoke:
            train += ["--epochs", 1, "--set", f"train.pairs_per_epoch={SMOKE['qeeps_pairs']}"]
    stages.command("train QEEPS", train, lambda: (run / "metrics.json").is_file())
    if "train QEEPS" in stages.ran:  # pair results of an earlier model are stale
        shutil.rmtree(root / "pairs", ignore_errors=True)
    return {"root": root, "stages": stages, "checkpoints": {"QEEPS": run / "last.pt"}}


def fingerprint(paths: dict[str, Path]) -> dict[str, list[int]]:
    """Size and modification time of each file: a retrained model invalidates its record."""
    return {k: [p.stat().st_size, p.stat().st_mtime_ns] for k, p in paths.items()}


def stage_table(stages: cascade.Stages) -> dict[str, dict[str, Any]]:
    return {name: {"seconds": s, "reused": name not in stages.ran}
            for name, s in stages.seconds.items()}


# ----------------------------------------------------------------------------- the figures

def budget(checkpoint: Path, part: str) -> dict[str, Any]:
    """Epochs, iterations, samples per iteration and seen, training seconds of a checkpoint."""
    from psearch.checkpoint import load_checkpoint

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


def score_subset(dataset: Any, pairs: Any, spec: dict[str, Any]) -> dict[str, Any]:
    from psearch.evaluation import evaluate_pairs

    return cascade.with_cmc(evaluate_pairs(dataset, pairs, topk=cascade.CMC_RANKS,
                                           **spec["protocol"], **spec["subset"]))


def search_cost(t_embed: float, dets_per_image: float, dim: int,
                measure_max: int) -> dict[str, Any]:
    """Seconds per query at GALLERY_SIZES images: t_embed + exact FAISS search over N x d
    vectors, timed up to ``measure_max`` images, else from the linear fit of the timed sizes."""
    timed = {n: qeeps_rerank.faiss_seconds(max(1, round(n * dets_per_image)), dim)
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
    from psearch.gallery.evaluate import gallery_results

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
    on_detected = cascade.score(dataset, detected)
    on_truth = cascade.score(dataset, ground_truth_results(embedder, dataset))
    galleries = pair_galleries(dataset, **spec["protocol"], **spec["subset"])
    subset = score_subset(dataset, pairs_from_results(dataset, detected, galleries), spec)

    log(f"  timing {name}: gallery images/s, query latency, search at 1k-1M images")
    summary = cascade.json_file(built["dets"] / "detect.json")["summary"]
    dets_per_image = len(gallery) / summary["pictures"]
    seconds_per_image = summary["seconds"] / summary["pictures"]
    speed: dict[str, Any] = {"detect_images_per_s": 1 / seconds_per_image}
    if name == "cascade":
        speed["embed_crops_per_s"] = cascade.embed_rate(embedder, built["dets"])
        seconds_per_image += dets_per_image / speed["embed_crops_per_s"]
    latency = cascade.query_latency(search, dataset.queries[:args.latency_queries], dataset)
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
    qeeps, t_pair, ran = qeeps_rerank.qeeps_pairs(built["root"], dataset, galleries, log)
    if ran:
        built["stages"].record("QEEPS pairs (subset)", time.perf_counter() - tic)
    results = load_results(args.work / built["fmt"] / "records" / "oim_c4_detected.npz")
    indexed = qeeps_rerank.indexed_per_query(dataset, results, galleries, qeeps)
    rows = {"pair by pair": score_subset(dataset, PairResults.from_per_query(qeeps), spec)}
    for n in RERANK_TOP:
        rows[f"re-ranking oim_c4's top {n}"] = score_subset(
            dataset, PairResults.from_per_query(qeeps_rerank.reranked(indexed, qeeps, n)), spec)
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
    from psearch.data import load_dataset
    from psearch.errors import PsearchError
    from psearch.io import write_json_atomic

    model = MODELS[name]
    head = {"label": model.label, "preset": model.preset}
    reason = unavailable(name)
    if reason:
        log(f"{fmt}: {name} unavailable: {reason}")
        return {**head, "status": "unavailable", "reason": reason}
    path = args.work / fmt / "records" / f"{name}.json"
    record = cascade.json_file(path)
    if fmt not in args.formats or name not in args.selected:
        if not record:
            return {**head, "status": "not run yet"}
        paths = {k: Path(v) for k, v in record["checkpoints"].items()}
        if not all(p.is_file() for p in paths.values()) or fingerprint(paths) != record[
                "fingerprint"]:
            return {**head, "status": "not run yet",
                    "reason": "its checkpoints changed since it was scored: select it again"}
        return {**record, "this_run": "not selected; figures of an earlier run"}
    log(f"{fmt}: {name} ({model.preset})")
    try:
        if model.kind == "qeeps":
            base = done.get("oim_c4", {})
            if base.get("status") != "finished":
                raise cascade.StageFailed(f"its base oim_c4 is {base.get('status')}")
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
                return {**record, "stages": stage_table(built["stages"]),
                        "this_run": "checked; scores reused"}
            figures = score_indexed(name, built, spec, args, log)
            budgets = [budget(p, part) for part, p in built["checkpoints"].items()]
    except (cascade.StageFailed, PsearchError) as error:
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
    return cascade.world_facts(load_dataset(world, fmt))


def collect(args: argparse.Namespace, env: dict[str, str], log) -> dict[str, Any]:
    """Every world and model (run or read back); stops early, keeping what is done, on Ctrl-C."""
    worlds: dict[str, Any] = {fmt: {"models": {}} for fmt in FORMATS}
    spec_of: dict[str, Any] = {}
    interrupted = False
    for fmt in FORMATS:
        models = worlds[fmt]["models"]
        for name in MODELS:
            if interrupted:
                models[name] = {"label": MODELS[name].label, "preset": MODELS[name].preset,
                                "status": "not run yet", "reason": "interrupted"}
                continue
            try:
                models[name] = run_model(name, fmt, args, env, log, models, spec_of)
            except KeyboardInterrupt:
                interrupted = True
                log("interrupted: writing what is finished")
                models[name] = {"label": MODELS[name].label, "preset": MODELS[name].preset,
                                "status": "not run yet", "reason": "interrupted"}
        worlds[fmt]["facts"] = world_facts(fmt, args)
    return {"worlds": worlds, "interrupted": interrupted}


# ------------------------------------------------------------------------------ the output

def pct(m: dict[str, float] | None, key: str = "mAP", second: str = "top1") -> str:
    return "—" if m is None else f"{100 * m[key]:.1f} / {100 * m[second]:.1f}"


def finished(world: dict[str, Any]) -> dict[str, dict]:
    return {n: m for n, m in world["models"].items() if m["status"] == "finished"}


def headline(world: dict[str, Any]) -> str | None:
    for m in finished(world).values():
        return m["subset"]["protocol_name"]
    return None


def accuracy_rows(world: dict[str, Any]) -> list[tuple[str, dict | None, dict | None,
                                                       dict | None, str]]:
    """(label, detected search, gt search, detection, note) per row; QEEPS rows per way."""
    rows = []
    for name, m in world["models"].items():
        label = f"{m['label']} (`{m['preset']}`)"
        if m["status"] != "finished":
            rows.append((label, None, None, None, m["status"] + (f": {m['reason']}"
                                                                 if m.get("reason") else "")))
        elif MODELS[name].kind == "qeeps":
            rows += [(f"{m['label']}, {way}", None, None, None,
                      "query-guided: scored on the subset below")
                     for way in m["accuracy"]["subset_rows"]]
        else:
            a = m["accuracy"]
            rows.append((label, a["detected"], a["ground_truth"], a["detection"]["all"], ""))
    return rows


def subset_of(world: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Label -> metrics on the shared subset, every finished model and QEEPS way."""
    out = {}
    for m in finished(world).values():
        if "subset_rows" in m["accuracy"]:
            out.update({f"{m['label']}, {way}": s
                        for way, s in m["accuracy"]["subset_rows"].items()})
        else:
            out[m["label"]] = m["accuracy"]["subset"]
    return out


def cost_ways(world: dict[str, Any]) -> dict[str, dict[str, dict]]:
    """Label -> {gallery images: {"seconds", "measured"}} per query, every way of searching."""
    out = {}
    for m in finished(world).values():
        if "ways" in m["cost"]:
            out.update({f"{m['label']}, {w}": c for w, c in m["cost"]["ways"].items()})
        else:
            out[m["label"]] = m["cost"]["per_query"]
    return out


def fmt_seconds(c: dict[str, Any]) -> str:
    s = c["seconds"]
    text = f"{1000 * s:.1f} ms" if s < 1 else f"{s:.3g} s" if s < 3600 else f"{s / 3600:.1f} h"
    return text + ("" if c["measured"] else "*")


def budget_text(budgets: list[dict[str, Any]]) -> str:
    return "; ".join(f"{b['part']}: {b['epochs']} ep, {b['iterations']:,} it x "
                     f"{b['per_iteration']} = {b['seen']:,} {b['unit']}" for b in budgets)


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Machine: {result['machine']['summary']}. Command: `{result['command']}`."]
    if result["partial"]:
        lines += ["", "**Partial**: " + "; ".join(result["missing"]) + "."]
    for fmt, world in result["worlds"].items():
        facts, top = world.get("facts"), headline(world)
        protocols = next((list(m["accuracy"]["detected"]) for m in finished(world).values()
                          if "detected" in m["accuracy"]), [])
        lines += ["", f"#### {fmt.upper()}-format world"
                  + (f" ({facts['train_images']} train images, {facts['train_identities']} train "
                     f"identities; {facts['test_images']} test images, {facts['queries']} "
                     "queries)" if facts else ""), "",
                  "Search mAP / top-1 (%) on the gallery's detections and on ground-truth "
                  "boxes; detection AP / recall (%, all people, IoU 0.5):", ""]
        head = ([f"{p}, detected" for p in protocols] + [f"{p}, GT boxes" for p in protocols]
                + ["detection AP / recall"])
        lines += ["| model | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
        for label, det, gt, box, note in accuracy_rows(world):
            if det is None:
                cells = [note] + ["—"] * (len(head) - 1)
            else:
                cells = ([pct(det[p]) for p in protocols] + [pct(gt[p]) for p in protocols]
                         + [pct(box, "ap", "recall")])
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        subset = subset_of(world)
        if subset:
            desc = next(iter(subset.values()))["subset"] or "the full protocol"
            lines += ["", f"Every model on QEEPS's subset ({top}: {desc}), detected boxes, "
                      "mAP / top-1 (%):", "", "| model | mAP / top-1 |", "|---|---:|"]
            lines += [f"| {label} | {pct(m)} |" for label, m in subset.items()]
        lines += ["", "Training budget and cost per query (* extrapolated, formulas below):", "",
                  "| model | training (epochs, iterations x samples per iteration) | train min | "
                  "gallery images/s | query ms (embed + search) | "
                  + " | ".join(f"{n:,} images" for n in GALLERY_SIZES) + " |",
                  "|---|---|---:|---:|---:|" + "---:|" * len(GALLERY_SIZES)]
        for m in finished(world).values():
            c = m["cost"]
            if "ways" in c:
                for way, per in c["ways"].items():
                    lines.append(f"| {m['label']}, {way} | {budget_text(m['budget'])} | "
                                 f"{m['train_seconds'] / 60:.1f} | | | "
                                 + " | ".join(fmt_seconds(per[str(n)]) for n in GALLERY_SIZES)
                                 + " |")
                continue
            lines.append(f"| {m['label']} | {budget_text(m['budget'])} | "
                         f"{m['train_seconds'] / 60:.1f} | {c['gallery_images_per_s']:.1f} | "
                         f"{c['query_ms_median']:.1f} | "
                         + " | ".join(fmt_seconds(c["per_query"][str(n)]) for n in GALLERY_SIZES)
                         + " |")
        lines += ["", "Formulas: " + "; ".join(
            f"{m['label']}: {m['cost']['formula']}" for m in finished(world).values())
            + ". Search cost is exact (flat) FAISS search, measured on random unit vectors up "
            f"to {result['settings']['measure_max']:,} images; `psearch index` switches to IVF "
            "above 100k rows, which is faster (benchmarks/gallery_scale.py)."]
        lines += ["", "Stages (s; r = reused): " + "; ".join(
            f"{m['label']}: " + ", ".join(f"{k} {v['seconds']:.0f}{' r' if v['reused'] else ''}"
                                          for k, v in m.get("stages", {}).items())
            for m in finished(world).values())]
    lines += ["", "**Conclusion.** " + conclusion(result)]
    return "\n".join(lines) + "\n"


def figure(m: dict[str, Any], key: str, protocol: str, metric: str = "mAP") -> float:
    """A finished indexed model's ``metric`` on ``key`` (detected, ground_truth: search under
    ``protocol``; detection: all people)."""
    a = m["accuracy"]
    return a["detection"]["all"][metric] if key == "detection" else a[key][protocol][metric]


def leader(models: dict[str, dict], key: str, protocol: str, metric: str = "mAP"
           ) -> tuple[str, float]:
    name = max(models, key=lambda n: figure(models[n], key, protocol, metric))
    return name, figure(models[name], key, protocol, metric)


def conclusion(result: dict[str, Any]) -> str:
    """Plain words computed from the figures: who leads on what, by how much, at what cost."""
    parts = []
    for fmt, world in result["worlds"].items():
        done = {n: m for n, m in finished(world).items() if "detected" in m["accuracy"]}
        top = headline(world)
        if not done or top is None:
            parts.append(f"{fmt.upper()}: no finished model yet.")
            continue
        text = [f"{fmt.upper()} ({top}):"]
        name, v = leader(done, "detected", top)
        others = {n: m for n, m in done.items() if n != name}
        runner = ""
        if others:
            second, sv = leader(others, "detected", top)
            runner = f", {100 * (v - sv):.1f} points ahead of {done[second]['label']}"
        text.append(f"{done[name]['label']} leads search on detected boxes with "
                    f"{100 * v:.1f}% mAP{runner}.")
        joint = {n: m for n, m in done.items() if MODELS[n].kind == "joint"}
        if "cascade" in done and joint:
            j, jv = leader(joint, "detected", top)
            c = figure(done["cascade"], "detected", top)
            verdict = ("they tie" if round(100 * c, 1) == round(100 * jv, 1) else
                       f"{'the cascade' if c > jv else 'the joint model'} wins by "
                       f"{100 * abs(c - jv):.1f} points")
            text.append(f"Cascade {100 * c:.1f}% against the best joint model "
                        f"({done[j]['label']}) {100 * jv:.1f}%: {verdict}, with "
                        f"{done['cascade']['train_seconds'] / 60:.1f} min of training against "
                        f"{done[j]['train_seconds'] / 60:.1f}.")
        g, gv = leader(done, "ground_truth", top)
        d, dv = leader(done, "detection", top, "ap")
        text.append(f"On ground-truth boxes {done[g]['label']} re-identifies best "
                    f"({100 * gv:.1f}% mAP); {done[d]['label']} detects best "
                    f"({100 * dv:.1f}% AP).")
        ways = cost_ways(world)
        big = str(GALLERY_SIZES[-1])
        cheap = min(ways, key=lambda w: ways[w][big]["seconds"])
        dear = max(ways, key=lambda w: ways[w][big]["seconds"])
        text.append(f"At {int(big):,} gallery images a query costs least with {cheap} "
                    f"({fmt_seconds(ways[cheap][big])}) and most with {dear} "
                    f"({fmt_seconds(ways[dear][big])}).")
        qeeps = world["models"].get("qeeps", {})
        if qeeps.get("status") == "finished":
            sub = subset_of(world)
            lead = max(sub, key=lambda k: sub[k]["mAP"])
            text.append(f"On QEEPS's subset {lead} leads ({100 * sub[lead]['mAP']:.1f}% mAP).")
        parts.append(" ".join(text))
    if result["partial"]:
        parts.append("Partial: the models not finished (listed at the top) are left out of "
                     "these comparisons.")
    return " ".join(parts)


def plot(result: dict[str, Any], cmc_path: Path, cost_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = list(cascade.CMC_RANKS)
    worlds = [(fmt, w) for fmt, w in result["worlds"].items() if finished(w)]
    n = max(1, len(worlds))
    fig, axes = plt.subplots(n, 2, figsize=(13, 4.8 * n), squeeze=False)
    for (fmt, world), row in zip(worlds, axes, strict=False):
        top = headline(world)
        colours = {name: f"C{i}" for i, name in enumerate(MODELS)}
        for name, m in finished(world).items():
            if "detected" in m["accuracy"]:
                row[0].plot(ranks, [100 * v for v in m["accuracy"]["detected"][top]["cmc"]],
                            color=colours[name], label=f"{m['label']}, detected")
                row[0].plot(ranks, [100 * v for v in m["accuracy"]["ground_truth"][top]["cmc"]],
                            "--", color=colours[name], alpha=0.6, label=f"{m['label']}, GT boxes")
        for i, (label, m) in enumerate(subset_of(world).items()):
            row[1].plot(ranks, [100 * v for v in m["cmc"]], color=f"C{i}", label=label)
        row[0].set_title(f"{fmt.upper()}-format world, {top}, full protocol")
        row[1].set_title(f"{fmt.upper()}, QEEPS's subset (detected boxes)")
        for ax in row:
            ax.set(xlabel="rank k", ylabel="top-k (%)", ylim=(0, 100), xlim=(1, ranks[-1]),
                   xticks=[1, 5, 10, 15, 20])
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, loc="lower right")
    save_figure(fig, cmc_path)

    fig, axes = plt.subplots(1, n, figsize=(6.5 * n, 4.8), squeeze=False)
    for (fmt, world), ax in zip(worlds, axes[0], strict=False):
        for i, (label, per) in enumerate(cost_ways(world).items()):
            sizes = [int(s) for s in per]
            seconds = [per[str(s)]["seconds"] for s in sizes]
            ax.loglog(sizes, seconds, "-", color=f"C{i}", label=label)
            measured = [per[str(s)]["measured"] for s in sizes]
            ax.scatter(sizes, seconds, color=f"C{i}", s=18,
                       facecolors=[f"C{i}" if m else "none" for m in measured])
        ax.set(title=f"{fmt.upper()}-format world: cost per query (hollow: extrapolated)",
               xlabel="gallery images", ylabel="seconds per query")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    save_figure(fig, cost_path)


def save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def write_outputs(result: dict[str, Any], out: Path, write_json: bool = True) -> None:
    from psearch.io import write_json_atomic, write_text_atomic

    out.parent.mkdir(parents=True, exist_ok=True)
    if write_json:
        write_json_atomic(out, result)
    table = markdown(result)
    write_text_atomic(out.with_suffix(".md"), table)
    plot(result, out.with_name(out.stem + "_cmc.png"), out.with_name(out.stem + "_cost.png"))
    print("\n" + table)
    print(f"wrote {out}, {out.with_suffix('.md')}, {out.stem}_cmc.png, {out.stem}_cost.png")


def missing(worlds: dict[str, Any]) -> list[str]:
    return [f"{fmt}/{name}: {m['status']}" + (f" ({m['reason']})" if m.get("reason") else "")
            for fmt, w in worlds.items() for name, m in w["models"].items()
            if m["status"] != "finished"]


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
    parser.add_argument("--qeeps-queries", type=int, default=14,
                        help="queries of the subset (drawn with seed 0)")
    parser.add_argument("--qeeps-gallery", type=int, default=100,
                        help="subset galleries cut to this many images")
    parser.add_argument("--latency-queries", type=int, default=50)
    parser.add_argument("--measure-max", type=int, default=10_000,
                        help="largest gallery (images) whose FAISS search is timed")
    cascade.output_options(parser, RESULTS / "cascade_vs_joint.json")
    args = parser.parse_args()
    if cascade.rendered(parser, args, RESULTS / "cascade_vs_joint.json", write_outputs):
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
              "interrupted": collected["interrupted"], "machine": cascade.machine(),
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
