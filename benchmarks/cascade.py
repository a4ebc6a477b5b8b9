"""The cascade benchmark: person search on generated worlds, from one command.

For each world (a CUHK-SYSU-format and a PRW-format one, benchmark size, seeded) it runs the
commands a user runs -- ``psearch synth``, ``train-detector``, ``train-reid``, ``detect``,
``embed``, ``index`` -- then scores, with the standard protocols (CUHK-SYSU gallery 50 and 100;
PRW all cameras and cross-camera):

  (a) the cascade: our detector's boxes, our re-ID features, read back from the FAISS gallery;
  (b) our re-ID on ground-truth boxes (the upper bound the detector allows);
  (c) colour histograms (HSV, horizontal stripes) on the same detected and ground-truth boxes;
  (d) the same re-ID backbone untrained (same seed), on the same boxes;
  (e) OpenCV's HOG detector followed by our re-ID (its own gallery, same commands).

Also: detection AP and recall, detection images/s (``psearch detect``), embedding crops/s, and
query latency (embed the query box + search the gallery). Outputs: results/cascade.json,
results/cascade.md (the tables) and results/cascade_cmc.png (CMC curves).

CPU budget (2 cores; measured, results/cascade.json): per world under a minute to generate,
11-21 min for the detector (detector_cpu, DETECTOR_EPOCHS epochs), 6-11 min for re-ID
(REID_CONFIG), a few minutes for detection, HOG and scoring: 60 minutes for both worlds.
Finished stages under --work are reused (and interrupted trainings resume) unless --fresh; the
results are written only when every stage of every world succeeded.

    python benchmarks/cascade.py                      # both worlds, ~60 min on 2 CPU cores
    python benchmarks/cascade.py --formats cuhk --work runs/bench_cascade
    python benchmarks/cascade.py --smoke              # tiny worlds, minutes: checks the plumbing
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
WORLD_SEED = 0
DETECTOR_EPOCHS = 3
"""detector_cpu on a bench world: 3 epochs of 1440 (CUHK) / 1200 (PRW) images, batch 4, with
the learning-rate step before the last epoch: 1080 / 900 iterations (PRW: 11 min on 2 idle
cores)."""
REID_CONFIG = "reid_bench"
HOG_UPSCALE = 2.0
"""HOG's window is 64x128 px: enlarging the pictures lets it see the smaller people."""
CMC_RANKS = tuple(range(1, 21))
SMOKE = {"preset": "tiny", "detector_epochs": 1, "reid_epochs": 2, "score_thresh": 0.01}
"""--smoke: a barely trained detector scores below the usual 0.5; a low threshold keeps the
galleries non-empty so that every later stage runs."""


class StageFailed(RuntimeError):
    """A stage of the benchmark did not finish: nothing is written."""


class Stages:
    """Runs the stages of one world, timing them into ``stages.json`` (kept for reused stages)."""

    def __init__(self, root: Path, env: dict[str, str], log: Callable[[str], None]) -> None:
        self.root, self.env, self.log = root, env, log
        self.path = root / "stages.json"
        self.seconds: dict[str, float] = (json.loads(self.path.read_text())
                                          if self.path.is_file() else {})
        self.ran: set[str] = set()
        """Stages run (not reused) by this process."""

    def command(self, name: str, args: list[Any], done: Callable[[], bool]) -> float:
        """Run ``psearch ARGS`` unless ``done()`` (a stage found done without a recorded time,
        run by hand or by another script, is kept as is); its output goes to
        ``root/logs/NAME.log``."""
        if done():
            if name not in self.seconds:
                self.log(f"  {name}: done before this script ran (kept)")
                return 0.0
            self.log(f"  {name}: reused ({self.seconds[name]:.0f} s when it ran)")
            return self.seconds[name]
        argv = [sys.executable, "-m", "psearch", *map(str, args)]
        log_path = self.root / "logs" / (re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
                                         + ".log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log(f"  {name}: psearch {' '.join(map(str, args[:12]))}"
                 f"{' ...' if len(args) > 12 else ''} (log: {log_path})")
        start = time.perf_counter()
        with open(log_path, "w") as out:
            rc = subprocess.call(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        seconds = time.perf_counter() - start
        if rc != 0 or not done():
            tail = log_path.read_text().strip().splitlines()[-3:]
            raise StageFailed(f"{self.root.name}: {name} failed (exit {rc}); "
                              f"{log_path}: {' | '.join(tail)}")
        return self.record(name, seconds)

    def record(self, name: str, seconds: float) -> float:
        self.seconds[name] = round(seconds, 1)
        self.ran.add(name)
        self.path.write_text(json.dumps(self.seconds, indent=1))
        self.log(f"  {name}: {seconds:.0f} s")
        return seconds


def json_file(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def detect_finished(out: Path) -> bool:
    state = json_file(out / "detect.json")
    return bool(state) and state.get("status") == "finished" and not state["summary"]["failed"]


def reid_finished(out: Path, epochs: int) -> bool:
    history = json_file(out / "history.json")
    return bool(history) and len(history) >= epochs


def build_world(fmt: str, args: argparse.Namespace, env: dict[str, str],
                log: Callable[[str], None], with_hog: bool = True) -> dict[str, Any]:
    """Every stage of one world (the HOG gallery unless not ``with_hog``); returns the trained
    models' paths, the world and timings."""
    from psearch.core.config import load_config
    from psearch.data import load_dataset

    root = args.work / fmt
    root.mkdir(parents=True, exist_ok=True)
    stages = Stages(root, env, log)
    world, det, reid = root / "world", root / "detector", root / "reid"
    preset = SMOKE["preset"] if args.smoke else "bench"
    det_epochs = SMOKE["detector_epochs"] if args.smoke else DETECTOR_EPOCHS
    reid_epochs = (SMOKE["reid_epochs"] if args.smoke
                   else int(load_config(REID_CONFIG)["train"]["epochs"]))

    stages.command("generate world", ["synth", world, "--format", fmt, "--preset", preset,
                                      "--seed", args.seed],
                   lambda: (world / "synth_summary.json").is_file())
    stages.command("train detector",
                   ["train-detector", "--data", world, "--format", fmt, "--out", det,
                    "--config", "detector_cpu", "--epochs", det_epochs,
                    "--set", f"train.lr_steps=[{max(det_epochs - 1, 1)}]",
                    *(["--resume"] if (det / "last.pt").is_file() else [])],
                   lambda: (det / "metrics.json").is_file())
    stages.command("train re-ID",
                   ["train-reid", "--data", world, "--format", fmt, "--out", reid, "--config",
                    REID_CONFIG, "--epochs", reid_epochs, "--quiet",
                    *(["--resume"] if (reid / "last.pt").is_file() else [])],
                   lambda: reid_finished(reid, reid_epochs))

    dataset = load_dataset(world, fmt)
    test_images = [r.path for r in dataset.gallery]
    galleries = {}
    detectors = [("cascade", det / "last.pt")] + [("hog", "hog")] * with_hog
    for name, weights in detectors:
        dets, emb, gallery = (root / f"{name}_{part}" for part in
                              ("detections", "embeddings", "gallery"))
        extra = ["--hog-upscale", HOG_UPSCALE] if weights == "hog" else []
        if args.smoke:
            extra += ["--score-thresh", SMOKE["score_thresh"]]
        stages.command(f"detect ({name})", ["detect", "--weights", weights, "--out", dets,
                                            "--quiet", *extra, *test_images],
                       lambda dets=dets: detect_finished(dets))
        stages.command(f"embed ({name})", ["embed", "--weights", reid / "last.pt", "--manifest",
                                           dets, "--out", emb, "--quiet", "--restart"],
                       lambda emb=emb: (emb / "embeddings.json").is_file())
        stages.command(f"index ({name})", ["index", "--embeddings", emb, "--out", gallery,
                                           "--overwrite"],
                       lambda gallery=gallery: (gallery / "gallery.json").is_file())
        galleries[name] = {"gallery": gallery, "detections": dets}
    return {"dataset": dataset, "detector": det, "reid": reid, "galleries": galleries,
            "stages": stages}


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


def evaluate_world(fmt: str, built: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    """Rows (a)-(e) of one world, detection figures and speeds."""
    import torch

    from psearch.api import PersonSearch
    from psearch.baselines.color import ColorHistogramEmbedder
    from psearch.gallery import Gallery
    from psearch.reid import ReidModel
    from psearch.reid.evaluate import ground_truth_results, reembed_results
    from psearch.reid.model import build_reid_net
    from psearch.search.evaluate import gallery_results

    dataset = built["dataset"]
    model = ReidModel.from_checkpoint(built["reid"] / "last.pt", device="cpu")
    torch.manual_seed(int(model.config["train"]["seed"]))
    untrained = ReidModel(build_reid_net(model.config["model"]), model.config, "cpu")
    colour = ColorHistogramEmbedder()
    backbone = model.config["model"]["backbone"]

    log(f"  scoring {fmt}: cascade gallery")
    gallery = Gallery.load(built["galleries"]["cascade"]["gallery"])
    search = PersonSearch(gallery, device="cpu")
    detected, _ = gallery_results(gallery, dataset, search.embedder)
    hog_gallery = Gallery.load(built["galleries"]["hog"]["gallery"])
    hog, _ = gallery_results(hog_gallery, dataset, search.embedder)
    rows = [("a", "cascade: our detector + our re-ID", detected)]
    log(f"  scoring {fmt}: ground-truth boxes")
    rows.append(("b", "our re-ID on ground-truth boxes", ground_truth_results(model, dataset)))
    rows.append(("c", "colour histogram on our detector's boxes",
                 reembed_results(colour, dataset, detected)))
    rows.append(("c", "colour histogram on ground-truth boxes",
                 ground_truth_results(colour, dataset)))
    rows.append(("d", f"{backbone} untrained on our detector's boxes",
                 reembed_results(untrained, dataset, detected)))
    rows.append(("d", f"{backbone} untrained on ground-truth boxes",
                 ground_truth_results(untrained, dataset)))
    rows.append(("e", "HOG detector + our re-ID", hog))
    scored = []
    for key, label, results in rows:
        log(f"  scoring {fmt}: {label}")
        report = score(dataset, results)
        scored.append({"row": key, "method": label, "search": report["search"],
                       "detection": report["detection"]})
    return {"rows": scored, "speed": measure_speed(built, search, dataset),
            "reid_config": model.config, "world": world_facts(dataset)}


def measure_speed(built: dict[str, Any], search: Any, dataset: Any) -> dict[str, Any]:
    """Detection images/s (``psearch detect``'s own timer), embedding crops/s and query latency
    over every query of the world."""
    summary = json_file(built["galleries"]["cascade"]["detections"] / "detect.json")["summary"]
    hog_summary = json_file(built["galleries"]["hog"]["detections"] / "detect.json")["summary"]
    return {
        "detect_images_per_s": summary["pictures"] / summary["seconds"],
        "hog_images_per_s": hog_summary["pictures"] / hog_summary["seconds"],
        "embed_crops_per_s": embed_rate(search.embedder,
                                        built["galleries"]["cascade"]["detections"]),
        **query_latency(search, dataset.queries, dataset),
        "gallery_rows": len(search.gallery),
        "gallery_index": search.gallery.kind,
    }


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


# ---------------------------------------------------------------------------------- output

def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def markdown(result: dict[str, Any]) -> str:
    """The tables: one per world (search protocols), then detection and speed."""
    lines = [f"Machine: {result['machine']['summary']}. Command: `{result['command']}`.", ""]
    for fmt, world in result["worlds"].items():
        protocols = list(world["rows"][0]["search"])
        facts = world["world"]
        lines += [f"**{fmt.upper()}-format world** ({facts['train_images']} train images, "
                  f"{facts['train_identities']} train identities; {facts['test_images']} test "
                  f"images, {facts['queries']} queries). mAP / top-1 / top-5 / top-10 (%):", ""]
        header = "| row | method | " + " | ".join(protocols) + " |"
        lines += [header, "|---|---|" + "---:|" * len(protocols)]
        for row in world["rows"]:
            cells = [" / ".join(pct(row["search"][p][k]) for k in ("mAP", "top1", "top5", "top10"))
                     for p in protocols]
            lines.append(f"| ({row['row']}) | {row['method']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["**Detection** (all people of the test images, IoU 0.5; %) and **speed** "
              "(2 CPU cores):", "",
              "| world | detector | AP | recall | images/s | embed crops/s | query ms "
              "(median / p95) | search ms |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for fmt, world in result["worlds"].items():
        by_row = {r["row"]: r for r in world["rows"]}
        speed = world["speed"]
        for key, name, ips in (("a", "Faster R-CNN MobileNetV3 (ours)", "detect_images_per_s"),
                               ("e", f"HOG (upscale {HOG_UPSCALE:g})", "hog_images_per_s")):
            det = by_row[key]["detection"]["all"]
            tail = (f"{speed['embed_crops_per_s']:.0f} | {speed['query_ms_median']:.1f} / "
                    f"{speed['query_ms_p95']:.1f} | {speed['search_ms_median']:.2f}"
                    if key == "a" else " | | ")
            lines.append(f"| {fmt} | {name} | {pct(det['ap'])} | {pct(det['recall'])} | "
                         f"{speed[ips]:.1f} | {tail} |")
    lines += ["", "Stage wall times (s): " + "; ".join(
        f"{fmt}: " + ", ".join(f"{k} {v:.0f}" for k, v in w["seconds"].items())
        for fmt, w in result["worlds"].items())]
    return "\n".join(lines) + "\n"


def plot_cmc(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(fmt, p) for fmt, w in result["worlds"].items() for p in w["rows"][0]["search"]]
    columns = min(2, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.4 * columns, 4.6 * rows), squeeze=False)
    colours = {"a": "C0", "b": "C0", "c": "C1", "d": "C2", "e": "C3"}
    for ax, (fmt, protocol) in zip(axes.flat, panels, strict=False):
        for row in result["worlds"][fmt]["rows"]:
            cmc = row["search"][protocol]["cmc"]
            dashed = "ground-truth" in row["method"]
            ax.plot(CMC_RANKS, [100 * v for v in cmc], "--" if dashed else "-",
                    color=colours[row["row"]], label=f"({row['row']}) {row['method']}")
        ax.set(title=f"{fmt.upper()}-format world, {protocol}", xlabel="rank k",
               ylabel="top-k (%)", ylim=(0, 100), xlim=(1, CMC_RANKS[-1]),
               xticks=[1, 5, 10, 15, 20])
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7, loc="lower right")
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = re.findall(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = names[0].strip() if names else cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpus": os.cpu_count(), "cpu": cpu, "gpu": gpu, "platform": platform.platform(),
            "torch": torch.__version__,
            "summary": f"{os.cpu_count()} CPU cores ({cpu}), {gpu or 'no GPU'}, "
                       f"torch {torch.__version__}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench_cascade"),
                        help="where worlds, models and galleries go (reused unless --fresh)")
    parser.add_argument("--formats", nargs="+", default=["cuhk", "prw"], choices=["cuhk", "prw"])
    parser.add_argument("--seed", type=int, default=WORLD_SEED, help="world seed")
    parser.add_argument("--fresh", action="store_true", help="delete --work first")
    output_options(parser, RESULTS / "cascade.json")
    args = parser.parse_args()
    if rendered(parser, args, RESULTS / "cascade.json", write_outputs):
        return
    if args.fresh and args.work.exists():
        shutil.rmtree(args.work)

    env = {**os.environ, "PYTHONHASHSEED": "0"}

    def one_world(fmt: str, log: Callable[[str], None]) -> dict[str, Any]:
        built = build_world(fmt, args, env, log)
        return {**evaluate_world(fmt, built, log), "seconds": built["stages"].seconds}

    worlds, wall = run_worlds(args.formats, one_world)

    command = "python benchmarks/cascade.py" + (" --smoke" if args.smoke else "")
    result = {"command": command, "seed": args.seed, "smoke": args.smoke, "machine": machine(),
              "detector_epochs": DETECTOR_EPOCHS, "reid_config_name": REID_CONFIG,
              "wall_seconds": wall, "worlds": worlds}
    write_outputs(result, args.out)


def output_options(parser: argparse.ArgumentParser, default_out: Path) -> None:
    """--out (the results JSON), --smoke and --render, as every world benchmark has them."""
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny worlds and 1-2 epochs: checks the plumbing, not the figures")
    parser.add_argument("--render", action="store_true",
                        help="only redraw the table and plots of an existing --out JSON")


def rendered(parser: argparse.ArgumentParser, args: argparse.Namespace, default_out: Path,
             write: Callable[..., None]) -> bool:
    """--render: redraw the outputs of --out with ``write(result, out, write_json=False)`` and
    return True; otherwise refuse --smoke figures at ``default_out`` and a folder as --out."""
    if args.render:
        write(json.loads(args.out.read_text()), args.out, write_json=False)
        return True
    if args.smoke and args.out == default_out:
        parser.error("--smoke figures are not the benchmark's: give --out")
    if args.out.is_dir():
        parser.error(f"--out {args.out} is a folder; give the results file (NAME.json)")
    return False


def run_worlds(formats: list[str], one_world: Callable[[str, Callable[[str], None]], dict]
               ) -> tuple[dict[str, dict], float]:
    """``one_world(fmt, log)`` for each world, logging with elapsed seconds; a failed stage ends
    the run with one line and nothing written. Returns the worlds' results and the wall time."""
    from psearch.core.errors import PsearchError

    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", flush=True)

    worlds = {}
    try:
        for fmt in formats:
            log(f"{fmt} world")
            worlds[fmt] = one_world(fmt, log)
    except (StageFailed, PsearchError) as error:
        sys.exit(f"error: {error}; no results written")
    return worlds, round(time.perf_counter() - started, 1)


def write_outputs(result: dict[str, Any], out: Path, write_json: bool = True) -> None:
    """The JSON (atomically), the markdown tables next to it and the CMC plot."""
    from psearch.core.io import write_json_atomic

    out.parent.mkdir(parents=True, exist_ok=True)
    table = markdown(result)
    if write_json:
        write_json_atomic(out, result)
    md_path = out.with_suffix(".md")
    md_path.write_text(table)
    png_path = out.with_name(out.stem + "_cmc.png")
    plot_cmc(result, png_path)
    print("\n" + table)
    print(f"wrote {', '.join(map(str, [out] * write_json + [md_path, png_path]))}")

if __name__ == "__main__":
    main()
