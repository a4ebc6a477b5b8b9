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
    python benchmarks/query_oneshot.py --rows 1000000 --onnx    # 1M-row gallery, ONNX re-ID

``--rows N``: a flat gallery of N rows (the small gallery's rows repeated, vectors synthetic
unit vectors) searched by one-shot queries; ``--onnx``: its re-ID model is the checkpoint
exported by ``psearch export onnx`` (no torch in the query). The phases of one query are timed
in a fresh process (``phases``). The machine is shared: the load average is recorded.
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


def big_gallery(work: Path, small: Path, n: int, checkpoint: Path, env: dict[str, str]) -> Path:
    """A flat gallery of ``n`` rows (reused): the small gallery's rows repeated, vectors random
    unit vectors of its dimension, recording ``checkpoint`` as its re-ID model."""
    import numpy as np

    from psearch.core.io import file_sha256
    from psearch.gallery.store import Gallery

    out = work / f"gallery_{n}_{checkpoint.suffix[1:]}"
    if (out / "gallery.json").is_file():
        return out
    base = Gallery.load(small)
    vectors = np.random.default_rng(0).standard_normal((n, base.dim), dtype=np.float32)
    rows = base.rows.take(np.arange(n) % len(base))
    reid = {"checkpoint": str(checkpoint.resolve()), "checkpoint_sha256": file_sha256(checkpoint),
            "model": base.header["reid"].get("model")}
    Gallery.build(vectors, rows, index="flat", reid=reid).save(out)
    return out


PHASES = """
import sys, time
t0 = time.perf_counter(); marks = []
def mark(name):
    marks.append((name, time.perf_counter()))
import psearch.cli.main; mark("import psearch CLI (click, commands)")
from psearch.gallery.store import Gallery
from psearch.search.person_search import load_gallery_embedder
from psearch.core.boxes import as_rgb
mark("import gallery + search (numpy, faiss, cv2)")
g = Gallery.load(sys.argv[1], mmap=True); mark("open gallery (index mmap + rows)")
e = load_gallery_embedder(g.header["reid"], "cpu"); mark("re-ID model: sha256 + load")
rgb = as_rgb(sys.argv[2]); mark("read query image")
box = [float(v) for v in sys.argv[3].split(",")]
q = e.embed_boxes(rgb, __import__("numpy").array([box], "float32")); mark("embed query box")
m = g.matches(q, 10); mark("FAISS search + matches (top 10)")
last = t0
for name, t in marks:
    print(f"{name}\t{t - last:.4f}"); last = t
print(f"torch imported\t{'torch' in sys.modules}")
"""


def phases(gallery: Path, image: Path, box: str, env: dict[str, str]) -> dict[str, float]:
    """Seconds of each phase of one query in a fresh process (interpreter start excluded)."""
    done = subprocess.run([sys.executable, "-c", PHASES, str(gallery), str(image), box],
                          env=env, capture_output=True, text=True, check=True)
    out = {}
    for line in done.stdout.strip().splitlines():
        name, value = line.split("\t")
        out[name] = value == "True" if value in ("True", "False") else float(value)
    return out


def stats(samples: list[float]) -> dict[str, float]:
    return {"median_s": statistics.median(samples), "best_s": min(samples), "runs": len(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench_oneshot"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--rows", type=int, default=0, help="Also query a flat gallery of N rows.")
    parser.add_argument("--onnx", action="store_true", help="Its re-ID model as ONNX.")
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
    load_before = os.getloadavg()
    extra: dict = {}
    if args.rows:
        checkpoint = args.work / "reid.pt"
        if args.onnx:
            onnx_path = args.work / "reid.onnx"
            if not onnx_path.is_file():
                psearch(["export", "onnx", "--weights", checkpoint, "--out", onnx_path], env)
            checkpoint = onnx_path
        big = big_gallery(args.work, gallery, args.rows, checkpoint, env)
        name = f"psearch query (one-shot, {args.rows} rows, {checkpoint.suffix[1:]} re-ID)"
        commands[name] = ["query", "--gallery", big, "--image", image, "--box", box,
                          "--device", "cpu"]
        extra["phases"] = [phases(big, image, box, env) for _ in range(args.repeat)]
        extra["phases_median_s"] = {k: statistics.median(p[k] for p in extra["phases"])
                                    for k in extra["phases"][0] if k != "torch imported"}
        extra["torch_imported"] = extra["phases"][0]["torch imported"]
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
                          "load_average_1min": os.getloadavg()[0],
                          "load_average_before": list(load_before),
                          "load_average_after": list(os.getloadavg())},
              "rows": rows, **extra}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"gallery of {len(search.gallery)} detections; {args.repeat} runs each\n")
    print("| what | median | best |\n|---|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['median_s'] * 1000:.1f} ms | {row['best_s'] * 1000:.1f} ms |")
    if extra:
        print(f"\nphases of one query (median of {args.repeat}; torch imported: "
              f"{extra['torch_imported']})\n| phase | median |\n|---|---:|")
        for name, value in extra["phases_median_s"].items():
            print(f"| {name} | {value * 1000:.1f} ms |")
    print(f"load average before/after: {load_before} / {os.getloadavg()}")


if __name__ == "__main__":
    main()
