"""Detector benchmark: train the CPU-grade detector on a synthetic world, then measure it.

    .venv/bin/python benchmarks/detector_speed.py            # ~11 min on an idle 2-core CPU

1. Generates a CUHK-SYSU-format world (``generate_world(..., "cuhk", seed=0, preset="ci")``:
   320 images of 384x288, 192 train / 128 test).
2. Trains the ``detector_cpu`` preset (MobileNetV3-Large-FPN from scratch, native 288 px short
   side) on the train split for ``--epochs``. Budget: the preset's 16 epochs = 768 iterations
   of 4 images, about 8 minutes on an idle 2-core CPU (``--threads 2``).
3. Speed, each in a fresh subprocess, alternating, best of ``--rounds``: images/s and peak
   resident memory of (a) the bare torchvision model forward on the test images, already
   decoded into tensors, batch 8, and (b) the ``psearch detect`` runner on the same image
   files (decoding, batching, crops written as JPEG, manifest). overhead = (a) / (b) in images/s.
4. Detection AP and recall (protocol of ``psearch.evaluation.detection``: score >= 0.5,
   IoU >= 0.5) on the test split for the trained detector and for the HOG baseline.

Prints a markdown table and writes ``benchmarks/results/detector_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "detector_speed.json"
BATCH = 8


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(kind: str, checkpoint: str, image_list: str, device: str) -> dict:
    """One speed measurement (run in its own process so that peak memory is its own)."""
    from psearch.core.media import read_image
    from psearch.detector.detect import DetectSettings, run_detect
    from psearch.detector.inference import PersonDetector
    from psearch.detector.inputs import collect_sources

    paths = Path(image_list).read_text().split("\n")
    detector = PersonDetector.from_checkpoint(checkpoint, device=device, batch_size=BATCH)
    detector.detect([read_image(p) for p in paths[:BATCH]])  # warm-up, same for both
    sync = torch.cuda.synchronize if detector.device.type == "cuda" else (lambda: None)
    if kind == "bare":
        model = detector.model
        model.roi_heads.score_thresh = 0.5  # as the runner's --score-thresh
        tensors = [torch.from_numpy(read_image(p)).permute(2, 0, 1).float().div(255)
                   .to(detector.device) for p in paths]
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(tensors), BATCH):
                model(tensors[i:i + BATCH])
        sync()
        seconds = time.perf_counter() - start
        detections = None
    else:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            summary = run_detect(detector, collect_sources(paths), out,
                                 DetectSettings(batch_size=BATCH), progress=False)
            seconds = time.perf_counter() - start
        detections = summary.detections
    result = {"images": len(paths), "seconds": seconds, "images_per_s": len(paths) / seconds,
              "peak_rss_mb": peak_rss_mb(), "detections": detections}
    if detector.device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def run_measure(kind: str, checkpoint: Path, image_list: Path, device: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", kind, "--checkpoint",
                          str(checkpoint), "--image-list", str(image_list), "--device", device,
                          "--threads", str(torch.get_num_threads())],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=None,
                        help="Folder for the world and the run (default: a temporary one).")
    parser.add_argument("--epochs", type=int, default=None, help="Default: the preset's.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads.")
    parser.add_argument("--measure", choices=["bare", "runner"], help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--image-list", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.measure:
        print(json.dumps(measure(args.measure, args.checkpoint, args.image_list, args.device)))
        return

    from psearch.baselines.hog import HogDetector
    from psearch.core.config import load_config
    from psearch.data import load_dataset
    from psearch.data.synth import generate_world
    from psearch.detector.train import (
        METRICS_NAME,
        evaluate_detector,
        resolve_config,
        train_detector,
    )
    from psearch.pipeline.stages import Stage, StageRunner, train

    work = args.work or Path(tempfile.mkdtemp(prefix="psearch-detbench-"))
    world, run = work / "world", work / "run"
    if not (world / "synth_summary.json").is_file():
        generate_world(world, "cuhk", seed=0, preset="ci")
    dataset = load_dataset(world, "cuhk")
    config = resolve_config(load_config("detector_cpu"))
    epochs = args.epochs or config["train"]["epochs"]

    # A run already in --work is continued (its checkpoint keeps the training time so far).
    metrics_path = run / METRICS_NAME

    def trained() -> bool:
        return metrics_path.is_file() and json.loads(metrics_path.read_text())["epochs"] >= epochs

    StageRunner().run(Stage("train detector", train(
        train_detector, dataset, config, run, device=args.device, epochs=epochs,
        evaluate=False), done=trained, checkpoint=run / "last.pt"))
    train_seconds = json.loads(metrics_path.read_text())["train_seconds"]

    image_list = work / "test_images.txt"
    image_list.write_text("\n".join(str(r.path) for r in dataset.gallery))
    speed: dict[str, list[dict]] = {"bare": [], "runner": []}
    for _ in range(args.rounds):
        for kind in speed:
            speed[kind].append(run_measure(kind, run / "last.pt", image_list, args.device))
    best = {k: max(v, key=lambda r: r["images_per_s"]) for k, v in speed.items()}
    overhead = best["bare"]["images_per_s"] / best["runner"]["images_per_s"]

    from psearch.detector.inference import PersonDetector

    accuracy = {"faster_rcnn_mobilenet_v3": evaluate_detector(
        PersonDetector.from_checkpoint(run / "last.pt", device=args.device), dataset)}
    for upscale in (1.0, 2.0):
        accuracy[f"hog_upscale{upscale:g}"] = evaluate_detector(HogDetector(upscale=upscale),
                                                                dataset)

    result = {
        "command": "benchmarks/detector_speed.py" + (f" --epochs {args.epochs}" if args.epochs
                                                     else "")
                   + (f" --threads {args.threads}" if args.threads != 2 else ""),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "device": args.device,
                    "platform": platform.platform(), "torch": torch.__version__},
        "world": {"preset": "ci", "seed": 0, "train_images": len(dataset.train),
                  "test_images": len(dataset.gallery)},
        "training": {"preset": "detector_cpu", "epochs": epochs, "seconds": train_seconds,
                     "iterations": epochs * (len(dataset.train) // config["train"]["batch_size"]),
                     "model": {k: config["model"][k] for k in ("backbone", "weights", "min_size",
                                                               "max_size")}},
        "speed": {"batch_size": BATCH, "bare_forward": best["bare"], "runner": best["runner"],
                  "overhead": overhead, "rounds": speed},
        "accuracy": accuracy,
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\nTrained detector_cpu for {epochs} epochs in {train_seconds / 60:.1f} min "
          f"on {len(dataset.train)} images ({args.device}).\n")
    print("| measurement | images/s | peak RSS (MB) |")
    print("|---|---|---|")
    for name, key in (("bare torchvision forward (decoded tensors)", "bare"),
                      ("psearch detect runner (files -> crops + manifest)", "runner")):
        print(f"| {name} | {best[key]['images_per_s']:.2f} | {best[key]['peak_rss_mb']:.0f} |")
    print(f"\noverhead of the runner: {overhead:.3f}x (target <= 1.15x)\n")
    print("| detector | AP all | recall all | AP labeled | recall labeled |")
    print("|---|---|---|---|---|")
    for name, m in accuracy.items():
        print(f"| {name} | {100 * m['all']['ap']:.1f} | {100 * m['all']['recall']:.1f} | "
              f"{100 * m['labeled']['ap']:.1f} | {100 * m['labeled']['recall']:.1f} |")
    print(f"\nwritten {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
