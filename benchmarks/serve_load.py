"""Load test of ``psearch serve`` on loopback: N concurrent clients (1, 4, 16, 64) query a
gallery of 10k and 1M rows while a writer publishes new generations (as ``index --add`` does).

The index holds synthetic unit vectors (clustered, dim 32) with the embedder of a tiny untrained
re-ID checkpoint (``test_resnet``, dim 32): every request uploads a picture and a box, so the
query embedding is included in the latency. The ceiling is the same model and index in one
process with batched queries. Bounded: ``--seconds`` per cell, one server process per gallery.

    python benchmarks/serve_load.py --out benchmarks/results/serve_load.json
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_gallery(directory: Path, n: int, checkpoint: Path) -> None:
    from psearch.core.io import file_sha256
    from psearch.gallery.store import Gallery
    from psearch.pipeline.toys import clustered, fake_rows

    reid = {"checkpoint": str(checkpoint), "checkpoint_sha256": file_sha256(checkpoint),
            "model": "test_resnet"}
    kind = "flat" if n <= 100_000 else "ivf"
    Gallery.build(clustered(n, 32, seed=1), fake_rows(n), kind, reid=reid,
                  nlist=None if kind == "flat" else 1024).save(directory)


def multipart(fields: dict, image: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for k, v in fields.items():
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n"
                  f"{v}\r\n".encode())
    out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
              f"filename=\"q.png\"\r\nContent-Type: image/png\r\n\r\n".encode())
    out.write(image + f"\r\n--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_cell(port: int, clients: int, seconds: float, body: bytes, ctype: str,
             generations: dict) -> dict:
    latencies, errors, inconsistent, stop = [], [], [], time.time() + seconds
    lock = threading.Lock()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.time() < stop:
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/query", body, {"Content-Type": ctype})
                resp = conn.getresponse()
                data = resp.read()
                ms = 1000 * (time.perf_counter() - t0)
                if resp.status != 200:
                    with lock:
                        errors.append(data[:200].decode(errors="replace"))
                    continue
                answer = json.loads(data)
                ok = generations.get(answer["generation"], answer["rows"]) == answer["rows"]
                with lock:
                    latencies.append(ms)
                    if not ok or len(answer["results"]) != 10:
                        inconsistent.append(answer["generation"])
            except Exception as exc:  # noqa: BLE001 - counted as an error
                with lock:
                    errors.append(repr(exc))
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {"clients": clients, "requests": len(latencies), "seconds": round(wall, 2),
            "throughput_qps": round(len(latencies) / wall, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p95_ms": round(float(np.percentile(lat, 95)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "errors": len(errors), "inconsistent": len(inconsistent),
            "first_error": errors[0] if errors else None}


def writer(directory: Path, generations: dict, stop: threading.Event, add: int) -> None:
    from psearch.gallery.store import Gallery
    from psearch.pipeline.toys import clustered

    while not stop.is_set():
        g = Gallery.load(directory)
        g.add(clustered(add, 32, seed=len(g)), g.rows.take(np.arange(add)), reid=g.header["reid"])
        g.save(directory)
        generations[g.header["generation"]] = len(g)
        stop.wait(2.0)


def ceiling(gallery_dir: Path, image: np.ndarray, box: np.ndarray, batch: int,
            seconds: float) -> float:
    """Queries per second of the same model and index in one process, ``batch`` at a time."""
    from psearch.search.person_search import PersonSearch

    ps = PersonSearch(gallery_dir, device="cpu")
    boxes = np.tile(box, (batch, 1))
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        ps.search(ps.embed(image, boxes), 10)
        done += batch
    return done / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/serve_load.json")
    args = parser.parse_args()
    from PIL import Image

    from psearch.pipeline.toys import person_images, tiny_checkpoint

    work = Path(tempfile.mkdtemp(prefix="serve_load_"))
    checkpoint = tiny_checkpoint(work / "reid.pt").resolve()
    [(path, boxes)] = person_images(work / "img", n_images=1)
    rgb = np.asarray(Image.open(path).convert("RGB"))
    body, ctype = multipart({"box": ",".join(f"{v:g}" for v in boxes[1]), "top_k": 10,
                             "mode": "frames"}, path.read_bytes())
    report = {"host": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
              "note": "synthetic clustered vectors (dim 32) in the index; the query is embedded "
                      "per request by a tiny untrained test_resnet re-ID net", "galleries": []}
    for n in args.sizes:
        gdir = work / f"g{n}"
        t0 = time.time()
        make_gallery(gdir, n, checkpoint)
        build_s = time.time() - t0
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        server = subprocess.Popen([sys.executable, "-m", "psearch", "serve", "--gallery",
                                   str(gdir), "--port", str(port)], env=env,
                                  stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET",
                                                                                   "/health")
                    break
                except OSError:
                    time.sleep(0.2)
            generations: dict = {}
            stop = threading.Event()
            w = threading.Thread(target=writer, args=(gdir, generations, stop, 100))
            w.start()
            cells = [run_cell(port, c, args.seconds, body, ctype, generations)
                     for c in args.clients]
            stop.set()
            w.join()
            memory = rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(30)
        top = ceiling(gdir, rgb, boxes[1], 64, min(args.seconds, 5.0))
        for cell in cells:
            cell["vs_ceiling"] = round(cell["throughput_qps"] / top, 3)
            cell["p99_over_p50"] = round(cell["p99_ms"] / cell["p50_ms"], 2)
        report["galleries"].append({"rows": n, "build_s": round(build_s, 1),
                                    "generations_published": len(generations),
                                    "server_rss_mb": round(memory, 1),
                                    "ceiling_qps_batch64": round(top, 1), "cells": cells})
        print(json.dumps(report["galleries"][-1]), flush=True)
    report["host"]["loadavg_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out.with_suffix(".png"))


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    for g in report["galleries"]:
        c = [x["clients"] for x in g["cells"]]
        a.plot(c, [x["p50_ms"] for x in g["cells"]], "o-", label=f"{g['rows']:,} p50")
        a.plot(c, [x["p99_ms"] for x in g["cells"]], "x--", label=f"{g['rows']:,} p99")
        b.plot(c, [x["throughput_qps"] for x in g["cells"]], "o-", label=f"{g['rows']:,}")
        b.axhline(g["ceiling_qps_batch64"], ls=":", color=b.lines[-1].get_color())
    for ax, y in ((a, "latency ms"), (b, "queries/s (dotted: in-process batch ceiling)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(y)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    main()
