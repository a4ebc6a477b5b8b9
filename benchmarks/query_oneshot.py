"""One-shot ``psearch`` commands against the in-process query latency.

A user who types ``psearch query ...`` pays for the interpreter, the imports and loading the
gallery and the model before the search itself, which takes milliseconds. This script measures,
on a small gallery it builds itself (the tiny generated world, HOG detections, an untrained
resnet18 re-ID checkpoint: accuracy is not the point), the wall time of fresh processes:

- ``psearch --version`` and ``psearch --help`` (start-up and command registration);
- ``psearch data info`` (a dataset read, no torch);
- ``psearch query`` (imports, gallery and checkpoint loading, one embedding, one search);

next to ``PersonSearch.query`` in a warm process (embedding the query box plus the search) and
``Gallery.matches`` alone (the search plus the metadata lookup). Each is repeated and the median
and the best are reported. Results: ``benchmarks/results/query_oneshot.json`` and a table.

    python benchmarks/query_oneshot.py [--repeat 5] [--work runs/bench_oneshot]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "query_oneshot.json"


def psearch(args: list, env: dict[str, str]) -> float:
    """Run ``psearch args`` in a fresh interpreter; its wall time in seconds."""
    tic = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "psearch", *map(str, args)], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - tic
    if done.returncode != 0:
        sys.exit(f"error: psearch {' '.join(map(str, args))} failed: {done.stderr.strip()[-300:]}")
    return seconds


def build_gallery(work: Path, env: dict[str, str]) -> tuple[Path, Path, list]:
    """World, HOG detections, untrained re-ID checkpoint, embeddings, gallery (reused)."""
    import torch

    from psearch.core.checkpoint import save_checkpoint
    from psearch.reid.config import reid_config
    from psearch.reid.model import CHECKPOINT_KIND, build_reid_net

    world, gallery = work / "world", work / "gallery"
    if not (world / "synth_summary.json").is_file():
        psearch(["synth", world, "--format", "cuhk", "--preset", "tiny"], env)
    checkpoint = work / "reid.pt"
    if not checkpoint.is_file():
        torch.manual_seed(0)
        config = reid_config()
        save_checkpoint(checkpoint, CHECKPOINT_KIND, config,
                        build_reid_net(config["model"]).state_dict())
    if not (gallery / "gallery.json").is_file():
        psearch(["detect", "--weights", "hog", "--hog-upscale", "2", "-q", world / "Image" / "SSM",
                 "--out", work / "dets"], env)
        psearch(["embed", "--weights", checkpoint, "--manifest", work / "dets", "--out",
                 work / "emb", "--quiet", "--restart"], env)
        psearch(["index", "--embeddings", work / "emb", "--out", gallery, "--overwrite"], env)
    from psearch.data import load_dataset

    query = load_dataset(world, "cuhk").queries[0]
    return world, gallery, [world / "Image" / "SSM" / query.image,
                            ",".join(f"{v:.0f}" for v in query.box)]


def stats(samples: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(samples), "best_s": min(samples), "runs": len(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench_oneshot"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    world, gallery, (image, box) = build_gallery(args.work, env)

    rows: dict[str, dict[str, float]] = {}
    commands = {
        "psearch --version": ["--version"],
        "psearch --help": ["--help"],
        "psearch data info": ["data", "info", world, "--json"],
        "psearch query (one-shot)": ["query", "--gallery", gallery, "--image", image, "--box", box,
                                     "--device", "cpu"],
    }
    for name, argv in commands.items():
        rows[name] = stats([psearch(argv, env) for _ in range(args.repeat)])

    import numpy as np

    from psearch.core.boxes import as_rgb
    from psearch.search.person_search import PersonSearch

    search = PersonSearch(gallery, device="cpu")
    rgb = as_rgb(image)
    query_box = [float(v) for v in box.split(",")]
    search.query(rgb, query_box)  # warm-up
    latencies, lookups = [], []
    embedding = search.embed(rgb, [query_box])
    for _ in range(max(20, args.repeat)):
        tic = time.perf_counter()
        search.query(rgb, query_box)
        latencies.append(time.perf_counter() - tic)
        tic = time.perf_counter()
        search.gallery.matches(np.ascontiguousarray(embedding), 10)
        lookups.append(time.perf_counter() - tic)
    rows["PersonSearch.query (warm process)"] = stats(latencies)
    rows["Gallery.matches (warm process)"] = stats(lookups)

    result = {"command": " ".join(["python", *sys.argv]), "gallery_rows": len(search.gallery),
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "load_average_1min": os.getloadavg()[0]},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"gallery of {len(search.gallery)} detections; {args.repeat} runs each\n")
    print("| what | median | best |\n|---|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['median_s'] * 1000:.1f} ms | {row['best_s'] * 1000:.1f} ms |")


if __name__ == "__main__":
    main()
