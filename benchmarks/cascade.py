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
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.results import json_file, machine, output_options, rendered, run_worlds
from common.scoring import CMC_RANKS, embed_rate, query_latency, score, world_facts
from common.worlds import DETECTOR_EPOCHS, HOG_UPSCALE, REID_CONFIG, WORLD_SEED, build_world

RESULTS = Path(__file__).parent / "results"


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
