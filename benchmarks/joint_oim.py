"""The joint OIM benchmark: one network that detects and embeds, on the cascade's worlds.

For each generated world (the same CUHK-SYSU- and PRW-format ``bench`` worlds, seed 0, that
``benchmarks/cascade.py`` uses, under ``runs/bench_cascade``) it runs the commands a user runs:

  ``psearch train-joint --model oim`` (preset ``joint_oim_cpu``; it scores the test split at the
  end with the standard protocols, on the model's own detections and on ground-truth boxes),
  ``psearch detect --embed`` (detections and embeddings of every test image in one pass),
  ``psearch index`` and ``psearch evaluate-gallery`` (the same figures read back from FAISS);

then measures speed on the first SPEED_IMAGES test images: ``psearch detect --embed``'s runner
(files in, crops + manifest + embeddings out) against the bare model forward on decoded images,
interleaved in one process, and against the cascade's detect + embed rates recorded in
``results/cascade.json``. Writes ``results/joint_oim.json`` and prints a table next to the
cascade's rows (a) and (b). Finished stages under --work are reused; an interrupted training
resumes (``--resume``). ``--speed-only CHECKPOINT`` runs the speed measurement alone.

    python benchmarks/joint_oim.py                    # both worlds
    python benchmarks/joint_oim.py --formats cuhk
    python benchmarks/joint_oim.py --smoke --work /tmp/jb --worlds /tmp/jb --out /tmp/jb.json
    python benchmarks/joint_oim.py --speed-only runs/bench_joint/cuhk/joint/last.pt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from common.results import json_file, machine, run_worlds
from common.worlds import JOINT_CONFIG, build_joint_world

RESULTS = Path(__file__).parent / "results"
CONFIG = JOINT_CONFIG
SPEED_IMAGES = 128
BATCH = 8


def measure_speed(checkpoint: Path, paths: list[str], repeats: int = 3,
                  score_thresh: float = 0.5, max_detections: int = 100) -> dict[str, float]:
    """Seconds per image of (1) the bare model forward (boxes, scores and embeddings) on
    decoded images and (2) ``psearch detect --embed``'s runner on the image files (decode,
    forward, crops, manifest, embeddings), interleaved ``repeats`` times in this process (the
    best of each), batches of BATCH."""
    import tempfile

    import torch

    from psearch.core.media import read_image
    from psearch.detector.detect import DetectSettings, run_detect
    from psearch.detector.inputs import collect_sources
    from psearch.joint.infer import JointSearcher

    searcher = JointSearcher.from_checkpoint(checkpoint, device="cpu", batch_size=BATCH)
    tensors = [torch.from_numpy(read_image(p)).permute(2, 0, 1).float().div_(255) for p in paths]
    sources = collect_sources(paths)
    settings = DetectSettings(score_thresh=score_thresh, batch_size=BATCH, embed=True,
                              max_detections=max_detections)
    bare, one_pass, detections = [], [], 0
    for _ in range(repeats):
        limits = searcher.model.score_limits  # the module that filters detections
        limits.score_thresh, limits.detections_per_img = score_thresh, max_detections
        with torch.inference_mode():
            searcher.model.detect(tensors[:BATCH])  # warm-up
            start = time.perf_counter()
            for i in range(0, len(tensors), BATCH):
                searcher.model.detect(tensors[i:i + BATCH])
            bare.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as out:
            summary = run_detect(searcher, sources, out, settings, progress=False)
        one_pass.append(summary.seconds)
        detections = summary.detections
    return {"images": len(paths), "detections": detections,
            "bare_forward_s_per_image": min(bare) / len(paths),
            "one_pass_s_per_image": min(one_pass) / len(paths),
            "overhead": min(one_pass) / min(bare)}


def score_world(fmt: str, built: dict[str, Any], smoke: bool = False) -> dict[str, Any]:
    """Figures of one world: search and detection (train-joint's evaluation and the gallery's),
    speed, and the cascade's figures of the same world for comparison."""
    root, run, dataset = built["root"], built["run"], built["dataset"]
    metrics = json_file(run / "metrics.json")
    gallery_eval = json_file(root / "gallery_eval.json")
    speed = measure_speed(run / "last.pt", [str(r.path) for r in dataset.gallery[:SPEED_IMAGES]])
    cascade = None if smoke else (json_file(RESULTS / "cascade.json") or {}).get(
        "worlds", {}).get(fmt)
    if cascade:
        rows = {r["row"]: r for r in cascade["rows"]}
        per_image = cascade["speed"]["gallery_rows"] / cascade["world"]["test_images"]
        speed["cascade_s_per_image"] = (1 / cascade["speed"]["detect_images_per_s"]
                                        + per_image / cascade["speed"]["embed_crops_per_s"])
        cascade = {"detected": rows["a"]["search"], "ground_truth": rows["b"]["search"],
                   "detection": rows["a"]["detection"],
                   "train_seconds": cascade["seconds"]["train detector"]
                   + cascade["seconds"]["train re-ID"]}
    return {"train_seconds": metrics["train_seconds"], "epochs": metrics["epochs"],
            "detected": metrics["detected"]["search"],
            "ground_truth": metrics["ground_truth"]["search"],
            "detection": metrics["detected"]["detection"],
            "gallery": gallery_eval["search"] if gallery_eval else None,
            "speed": speed, "cascade": cascade, "seconds": built["stages"].seconds}


def markdown(result: dict[str, Any]) -> str:
    def pair(m: dict[str, float]) -> str:
        return f"{100 * m['mAP']:.1f} / {100 * m['top1']:.1f}"

    lines = []
    for fmt, w in result["worlds"].items():
        protocols = list(w["detected"])
        lines += [f"**{fmt.upper()}-format world**, mAP / top-1 (%):", "",
                  "| method | boxes | " + " | ".join(protocols) + " | train s |",
                  "|---|---|" + "---:|" * (len(protocols) + 1)]
        lines.append(f"| joint OIM (`{CONFIG}`) | detected | "
                     + " | ".join(pair(w["detected"][p]) for p in protocols)
                     + f" | {w['train_seconds']:.0f} |")
        lines.append("| joint OIM, FAISS gallery (`detect --embed`) | detected | "
                     + " | ".join(pair(w["gallery"][p]) for p in protocols) + " | |")
        lines.append("| joint OIM | ground truth | "
                     + " | ".join(pair(w["ground_truth"][p]) for p in protocols) + " | |")
        c = w.get("cascade")
        if c:
            lines.append("| cascade (a) | detected | "
                         + " | ".join(pair(c["detected"][p]) for p in protocols)
                         + f" | {c['train_seconds']:.0f} |")
            lines.append("| cascade re-ID (b) | ground truth | "
                         + " | ".join(pair(c["ground_truth"][p]) for p in protocols) + " | |")
        d, s = w["detection"]["all"], w["speed"]
        lines += ["", f"Detection (all people): AP {100 * d['ap']:.1f}%, recall "
                  f"{100 * d['recall']:.1f}%"
                  + (f" (cascade: {100 * c['detection']['all']['ap']:.1f}% / "
                     f"{100 * c['detection']['all']['recall']:.1f}%)" if c else "")
                  + f". Speed per image ({s['images']} test images): detect --embed "
                  f"{1000 * s['one_pass_s_per_image']:.0f} ms, bare forward "
                  f"{1000 * s['bare_forward_s_per_image']:.0f} ms ({s['overhead']:.2f}x)"
                  + (f", cascade detect + embed {1000 * s['cascade_s_per_image']:.0f} ms "
                     "(from cascade.json)" if "cascade_s_per_image" in s else "") + ".", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench_joint"))
    parser.add_argument("--worlds", type=Path, default=Path("runs/bench_cascade"),
                        help="where the cascade benchmark's worlds are (generated if missing)")
    parser.add_argument("--formats", nargs="+", default=["cuhk", "prw"], choices=["cuhk", "prw"])
    parser.add_argument("--out", type=Path, default=RESULTS / "joint_oim.json")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny worlds, one epoch: checks the plumbing, not the figures")
    parser.add_argument("--speed-only", type=Path, metavar="CHECKPOINT",
                        help="only the speed measurement of this joint checkpoint, on the first "
                             "test images of the --formats world; prints JSON")
    parser.add_argument("--images", type=int, default=SPEED_IMAGES,
                        help="--speed-only: how many test images")
    parser.add_argument("--repeats", type=int, default=3, help="--speed-only: best of N")
    parser.add_argument("--max-detections", type=int, default=100,
                        help="--speed-only: detections kept per image")
    parser.add_argument("--score-thresh", type=float, default=0.5,
                        help="--speed-only: detection threshold (a barely trained model needs a "
                             "low one to output boxes)")
    args = parser.parse_args()
    if args.speed_only:
        from psearch.data import load_dataset

        fmt = args.formats[0]
        dataset = load_dataset(args.worlds / fmt / "world", fmt)
        paths = [str(r.path) for r in dataset.gallery[:args.images]]
        print(json.dumps({"checkpoint": str(args.speed_only), "world": fmt,
                          "score_thresh": args.score_thresh, "machine": machine(),
                          "max_detections": args.max_detections,
                          **measure_speed(args.speed_only, paths, args.repeats,
                                          args.score_thresh, args.max_detections)}, indent=1))
        return
    if args.smoke and args.out == RESULTS / "joint_oim.json":
        parser.error("--smoke figures are not the benchmark's: give --out")

    from psearch.core.io import write_json_atomic

    env = {**os.environ, "PYTHONHASHSEED": "0"}
    worlds, wall = run_worlds(args.formats, lambda fmt, log: score_world(
        fmt, build_joint_world(fmt, args, env, log), args.smoke))
    result = {"command": "python benchmarks/joint_oim.py " + " ".join(sys.argv[1:]),
              "config": CONFIG, "machine": machine(),
              "wall_seconds": wall, "worlds": worlds}
    table = markdown(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result)
    args.out.with_suffix(".md").write_text(table)
    print("\n" + table)


if __name__ == "__main__":
    main()
