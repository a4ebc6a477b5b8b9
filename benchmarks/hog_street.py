"""HOG people detection on the cascade benchmark's worlds, with and without containment suppression.

Generates (or reuses) the same worlds as ``benchmarks/cascade.py`` (``psearch synth --preset
bench --seed 0``, CUHK-SYSU and PRW formats), runs only OpenCV's HOG detector (upscale 2, as the
cascade benchmark does) on every test image, and scores it with the detection protocol of
``psearch.evaluation`` (all people and labeled people; AP and recall at IoU 0.5, score >= 0.5).

HOG's windows are computed once per image at a low margin and cached under --work; every
variant is then post-processed from the same windows: ``before`` (NMS only: the HOG detector of
the cascade benchmark's figures), ``trimmed`` (+ the window margin cut off), ``after`` (+
containment suppression: the defaults), and a sweep of containment ratios (none = off) and margin
thresholds. The ``after`` variant is checked against ``HogDetector.detect`` on the first images,
so its figures are those of ``psearch detect --weights hog --hog-upscale 2``. Writes
``benchmarks/results/hog_street.json``.

    python benchmarks/hog_street.py --threads 1              # both worlds, ~15 min on 1 core
    python benchmarks/hog_street.py --formats cuhk --limit 50 # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
WORLD_SEED = 0
HOG_UPSCALE = 2.0
LOWEST_MARGIN = -0.5
"""Windows are collected down to this SVM margin so that lower thresholds can be swept too."""
SWEEP_CONTAIN = (None, 0.6, 0.7, 0.8, 0.9)
SWEEP_MARGINS = (-0.25, 0.0, 0.25, 0.5, 1.0)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def build_world(fmt: str, work: Path) -> Path:
    world = work / fmt
    if not (world / "synth_summary.json").is_file():
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        subprocess.run([sys.executable, "-m", "psearch", "synth", str(world), "--format", fmt,
                        "--preset", "bench", "--seed", str(WORLD_SEED), "--workers", "1"],
                       check=True, env=env)
    return world


def raw_windows(dataset: Any, detector: Any, cache: Path, limit: int | None
                ) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[int, int]], float]:
    """Per test image: unmerged windows (boxes [K, 4], scores [K]) and its (height, width);
    plus the seconds per image of the window search (cached in ``cache``)."""
    from psearch.core.media import read_image

    records = dataset.gallery[:limit]
    if cache.is_file():
        with np.load(cache) as data:
            if int(data["n"]) == len(records):
                counts = data["counts"]
                splits = np.cumsum(counts)[:-1]
                return (np.split(data["boxes"], splits), np.split(data["scores"], splits),
                        [tuple(s) for s in data["sizes"].tolist()], float(data["seconds"]))
    boxes, scores, sizes = [], [], []
    start = time.perf_counter()
    for n, record in enumerate(records):
        img = read_image(record.path)
        b, s = detector.windows(img, sigmoid(LOWEST_MARGIN))
        boxes.append(b.numpy().reshape(-1, 4))
        scores.append(s.numpy().reshape(-1))
        sizes.append(img.shape[:2])
        if (n + 1) % 100 == 0:
            print(f"  {cache.stem}: {n + 1}/{len(records)} images", flush=True)
    seconds = (time.perf_counter() - start) / max(len(records), 1)
    np.savez(cache, n=len(records), counts=[len(s) for s in scores],
             boxes=np.concatenate(boxes), scores=np.concatenate(scores), sizes=np.array(sizes),
             seconds=seconds)
    return boxes, scores, sizes, seconds


def variant(dataset: Any, windows: tuple, contain: float | None, margin: float,
            limit: int | None, shrink: tuple[float, float] | None = None) -> dict[str, Any]:
    """Detection figures of one post-processing of the cached windows (``shrink`` None: the
    default trimming)."""
    import torch

    from psearch.baselines.hog import HOG_SHRINK, HogDetector
    from psearch.evaluation.detection import evaluate_detection

    boxes, scores, sizes, _ = windows
    shrink = HOG_SHRINK if shrink is None else shrink
    hog = HogDetector(upscale=HOG_UPSCALE, contain=contain, shrink=shrink)
    thresh = sigmoid(margin)
    detections, counts = {}, []
    for record, b, s, size in zip(dataset.gallery[:limit], boxes, scores, sizes, strict=True):
        keep = s >= thresh
        kept = hog.suppress(torch.from_numpy(b[keep]), torch.from_numpy(s[keep]), size, 100)
        detections[record.name] = kept
        counts.append(len(kept[1]))
    sub = dataset if limit is None else _first_images(dataset, limit)
    out = {"contain": contain, "shrink": list(shrink), "margin": margin,
           "score_thresh": round(thresh, 4),
           "boxes_per_image": round(float(np.mean(counts)), 2),
           "people_per_image": round(float(np.mean([len(r.boxes) for r in sub.gallery])), 2)}
    for group, labeled in (("all", False), ("labeled", True)):
        m = evaluate_detection(sub, detections, labeled_only=labeled)
        out[group] = {"ap": round(m["ap"], 4), "recall": round(m["recall"], 4),
                      "detections": m["detections"]}
    return out


def _first_images(dataset: Any, limit: int) -> Any:
    import dataclasses

    return dataclasses.replace(dataset, gallery=dataset.gallery[:limit])


def check_against_detector(dataset: Any, windows: tuple, n: int = 5) -> None:
    """The cached path must give what ``HogDetector.detect`` gives (defaults, upscale 2)."""
    import torch

    from psearch.baselines.hog import HOG_SCORE_THRESH, HogDetector
    from psearch.core.media import read_image

    hog = HogDetector(upscale=HOG_UPSCALE)
    for record, b, s, size in list(zip(dataset.gallery, *windows[:3], strict=False))[:n]:
        [(want_b, want_s)] = hog.detect([read_image(record.path)], HOG_SCORE_THRESH, 100)
        keep = s >= HOG_SCORE_THRESH
        got_b, got_s = hog.suppress(torch.from_numpy(b[keep]), torch.from_numpy(s[keep]), size,
                                    100)
        if not (np.allclose(got_b, want_b) and np.allclose(got_s, want_s)):
            raise SystemExit(f"{record.name}: cached windows disagree with HogDetector.detect")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", nargs="+", default=["cuhk", "prw"], choices=["cuhk", "prw"])
    parser.add_argument("--work", type=Path, default=Path("runs/hog_street"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, help="Only the first N test images (a quick look).")
    parser.add_argument("--out", type=Path, default=RESULTS / "hog_street.json")
    args = parser.parse_args()

    import cv2
    import torch

    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    from psearch.baselines.hog import HOG_CONTAIN, HOG_SCORE_THRESH, HogDetector
    from psearch.data import load_dataset

    args.work.mkdir(parents=True, exist_ok=True)
    default_margin = math.log(HOG_SCORE_THRESH / (1 - HOG_SCORE_THRESH))
    result: dict[str, Any] = {"command": " ".join(["python", *sys.argv]), "threads": args.threads,
                              "upscale": HOG_UPSCALE, "limit": args.limit, "worlds": {}}
    for fmt in args.formats:
        dataset = load_dataset(build_world(fmt, args.work), fmt)
        suffix = f"_{args.limit}" if args.limit else ""
        windows = raw_windows(dataset, HogDetector(upscale=HOG_UPSCALE, contain=None),
                              args.work / f"{fmt}_windows{suffix}.npz", args.limit)
        check_against_detector(dataset, windows)
        world = {"test_images": len(dataset.gallery[:args.limit]),
                 "seconds_per_image": round(windows[3], 3),
                 "before": variant(dataset, windows, None, 0.0, args.limit, shrink=(0.0, 0.0)),
                 "trimmed": variant(dataset, windows, None, default_margin, args.limit),
                 "after": variant(dataset, windows, HOG_CONTAIN, default_margin, args.limit)}
        world["sweep"] = [variant(dataset, windows, c, m, args.limit)
                          for c in SWEEP_CONTAIN for m in SWEEP_MARGINS]
        result["worlds"][fmt] = world
        print(markdown(fmt, world), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def markdown(fmt: str, world: dict[str, Any]) -> str:
    lines = [f"\n{fmt} ({world['test_images']} test images, {world['seconds_per_image']} s/image)",
             "| variant | trim | contain | margin >= | boxes/image | people/image | AP all "
             "| recall all | AP labeled | recall labeled |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    named = [(name, world[name]) for name in ("before", "trimmed", "after")]
    for name, v in named + [("sweep", v) for v in world["sweep"]]:
        trim = "/".join(f"{x:g}" for x in v["shrink"])
        lines.append(f"| {name} | {trim} | {v['contain'] or '-'} | {v['margin']:g} | "
                     f"{v['boxes_per_image']} | {v['people_per_image']} | "
                     f"{100 * v['all']['ap']:.1f} | {100 * v['all']['recall']:.1f} | "
                     f"{100 * v['labeled']['ap']:.1f} | {100 * v['labeled']['recall']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
