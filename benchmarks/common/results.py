"""Reading results files, describing the machine, and the options and world loop every world
benchmark shares."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def json_file(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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
    from psearch.core.errors import PsearchError  # a failed stage (StageFailed) is one

    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", flush=True)

    worlds = {}
    try:
        for fmt in formats:
            log(f"{fmt} world")
            worlds[fmt] = one_world(fmt, log)
    except PsearchError as error:
        sys.exit(f"error: {error}; no results written")
    return worlds, round(time.perf_counter() - started, 1)

