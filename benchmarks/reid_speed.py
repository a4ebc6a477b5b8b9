"""Re-ID embedding speed: the ``psearch embed`` runner vs the bare timm forward, same batches.

Three measurements of the same crops in the same run, each in a fresh process (so that its peak
memory is its own), after one warm-up batch:

- ``timm forward``: the backbone alone (``timm.create_model(..., num_classes=0)``) on batches
  that are already resized, normalised and on the device: the floor.
- ``embed_crops``: ``ReidModel.embed_crops`` on decoded crops in memory (resize, normalise,
  backbone, neck, L2 normalisation, copy back).
- ``embed runner``: ``psearch embed`` end to end on a detect manifest (JPEG decoding and resizing
  in background threads, memory-mapped output, progress files).

Overhead = time / timm-forward time (target <= 1.1x for the runner on a GPU, where decoding
overlaps the forward pass; on a 2-core CPU the decoding competes with the forward for the cores).
CPU budget: about 1-3 minutes with the defaults (resnet18 at 128x64, 512 crops).

    python benchmarks/reid_speed.py                       # CPU defaults
    python benchmarks/reid_speed.py --device cuda         # resnet50 at 256x128, 8192 crops
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results" / "reid_speed.json"


def make_crops(root: Path, n: int, seed: int = 0) -> Path:
    """A detect directory of ``n`` JPEG crops of person-like sizes (40-300 px tall)."""
    from psearch.core.media import write_image
    from psearch.formats.manifest import ManifestWriter

    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        h = int(rng.integers(40, 300))
        w = max(8, int(h * rng.uniform(0.3, 0.6)))
        base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
        image = np.kron(base, np.ones((8, 8, 1), np.uint8))[:h, :w]
        crops.append(f"crops/{i:06d}.jpg")
        write_image(root / crops[-1], image)
    with ManifestWriter(root) as writer:
        writer.add_source(str(root / "scene.jpg"), "image", 1, np.full(n, -1),
                          np.tile([0.0, 0.0, 10.0, 20.0], (n, 1)), np.full(n, 0.9), crops)
    return root


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def phase(name: str, ckpt: str, det: str, out: str, device: str, batch_size: int,
          threads: int) -> dict:
    """One measurement, run in a fresh process; returns seconds and peak memory."""
    torch.set_num_threads(threads)
    from psearch.core.media import read_image
    from psearch.formats.manifest import read_manifest
    from psearch.reid.embed import embed_manifest
    from psearch.reid.model import ReidModel, resize_crops

    model = ReidModel.from_checkpoint(ckpt, device=device, batch_size=batch_size)
    dev = model.device
    manifest = read_manifest(det)
    n = len(manifest)
    warm = np.zeros((min(batch_size, n), *model.input_size, 3), np.uint8)
    if name == "timm forward":
        crops = resize_crops([read_image(manifest.crop_path(i)) for i in range(n)],
                             model.input_size)
        net = model.net
        batches = [((torch.from_numpy(crops[i:i + batch_size]).to(dev).permute(0, 3, 1, 2)
                     .float() - net.mean) / net.std) for i in range(0, n, batch_size)]
        with torch.inference_mode(), torch.autocast(dev.type, torch.float16,
                                                    enabled=dev.type == "cuda"):
            net.backbone(batches[0])
            sync(dev)
            start = time.perf_counter()
            for batch in batches:
                net.backbone(batch)
            sync(dev)
    elif name == "embed_crops":
        crops = [read_image(manifest.crop_path(i)) for i in range(n)]
        model.embed_batch(warm)
        sync(dev)
        start = time.perf_counter()
        model.embed_crops(crops)
        sync(dev)
    else:
        model.embed_batch(warm)
        sync(dev)
        start = time.perf_counter()
        embed_manifest(model, det, out, batch_size=batch_size, progress=False, log=lambda _: None)
        sync(dev)
    seconds = time.perf_counter() - start
    return {"name": name, "seconds": seconds, "crops_per_s": n / seconds,
            "peak_memory_mb": peak_memory_mb(dev)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbone", default=None, help="default: resnet18 (CPU) / resnet50")
    parser.add_argument("--input-size", default=None, help="H,W; default 128,64 (CPU) / 256,128")
    parser.add_argument("--crops", type=int, default=None, help="default 512 (CPU) / 8192")
    parser.add_argument("--batch-size", type=int, default=None, help="default 64 (CPU) / 256")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    backbone = args.backbone or ("resnet50" if gpu else "resnet18")
    size = [int(v) for v in (args.input_size or ("256,128" if gpu else "128,64")).split(",")]
    n = args.crops or (8192 if gpu else 512)
    batch_size = args.batch_size or (256 if gpu else 64)

    from psearch.core.checkpoint import save_checkpoint
    from psearch.core.io import write_json_atomic
    from psearch.reid.model import build_reid_net

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = {"model": {"backbone": backbone, "input_size": size}}
        torch.manual_seed(0)
        save_checkpoint(tmp / "reid.pt", "reid", config,
                        build_reid_net(config["model"]).state_dict())
        make_crops(tmp / "dets", n)
        rows = []
        for name in ("timm forward", "embed_crops", "embed runner"):
            with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
                rows.append(pool.submit(phase, name, str(tmp / "reid.pt"), str(tmp / "dets"),
                                        str(tmp / "emb"), args.device, batch_size,
                                        args.threads).result())
    floor = rows[0]["seconds"]
    for row in rows:
        row["overhead"] = row["seconds"] / floor
    device_name = (torch.cuda.get_device_name() if gpu
                   else f"{platform.machine()}, {os.cpu_count()} cores")
    print(f"\n{backbone} at {size[0]}x{size[1]}, {n} crops, batch {batch_size}, "
          f"{args.device} ({device_name}, {args.threads} threads)\n")
    print("| measurement | crops/s | seconds | overhead vs timm | peak memory (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['crops_per_s']:.0f} | {r['seconds']:.2f} | "
              f"{r['overhead']:.2f}x | {r['peak_memory_mb']:.0f} |")
    result = {"backbone": backbone, "input_size": size, "crops": n, "batch_size": batch_size,
              "device": args.device, "device_name": device_name, "threads": args.threads,
              "memory": "CUDA max allocated" if gpu else "process peak RSS", "rows": rows}
    write_json_atomic(args.out, result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
