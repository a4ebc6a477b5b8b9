"""Running a pipeline as stages: reuse the finished ones, time the rest, resume trainings.

A stage is a name, the files it writes and a function that writes them. Its output complete,
the stage is skipped (a re-run continues where the run before stopped); a stage with a
checkpoint that exists but is not complete was interrupted, and its function is told to resume.
``psearch demo`` and the benchmarks run their stages through ``StageRunner``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psearch.core.errors import PsearchError
from psearch.core.io import write_json_atomic


class StageFailed(PsearchError):
    """A stage did not finish (or finished without its output)."""


@dataclass
class Stage:
    """``run(resume)`` writes ``outputs``; ``done`` (default: every output is a file) says
    whether it has. ``checkpoint``: a file an interrupted run leaves (resume when it exists).
    A stage without outputs and ``done`` always runs (one that skips its finished inputs
    itself, or rewrites its output)."""

    name: str
    run: Callable[[bool], Any]
    outputs: Sequence[Path] = ()
    done: Callable[[], bool] | None = None
    checkpoint: Path | None = None
    describe: str = ""
    """Shown when the stage starts (e.g. its command line)."""

    def is_complete(self) -> bool:
        if self.done is not None:
            return bool(self.done())
        return bool(self.outputs) and all(Path(p).is_file() for p in self.outputs)

    def resumable(self) -> bool:
        return self.checkpoint is not None and Path(self.checkpoint).is_file()


@dataclass
class StageRunner:
    """Runs stages, logging one line each; ``seconds`` of every stage run (and, with a
    ``record`` file, of those run by earlier processes: kept across runs)."""

    log: Callable[[str], None] = print
    record: Path | None = None
    prefix: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    ran: set[str] = field(default_factory=set)
    """Stages run (not reused) by this runner."""

    def __post_init__(self) -> None:
        if self.record is not None and Path(self.record).is_file():
            self.seconds = {**json.loads(Path(self.record).read_text()), **self.seconds}

    def run(self, stage: Stage) -> Any:
        """The stage's result (None when it was reused)."""
        name = f"{self.prefix}{stage.name}"
        if stage.is_complete():
            if stage.name in self.seconds:
                self.log(f"{name}: reused ({self.seconds[stage.name]:.0f} s when it ran)")
            else:
                self.log(f"{name}: done before this script ran (kept)")
            return None
        resume = stage.resumable()
        self.log(f"{name}{': ' + stage.describe if stage.describe else ''}"
                 f"{' (resuming)' if resume else ''}")
        start = time.perf_counter()
        result = stage.run(resume)
        seconds = time.perf_counter() - start
        if (stage.outputs or stage.done) and not stage.is_complete():
            raise StageFailed(f"{stage.name} finished without its output")
        self.add(stage.name, seconds)
        return result

    def add(self, name: str, seconds: float) -> None:
        """Record ``seconds`` for a step timed outside ``run`` (and log it)."""
        self.seconds[name] = round(seconds, 1)
        self.ran.add(name)
        if self.record is not None:
            write_json_atomic(self.record, self.seconds)
        self.log(f"{self.prefix}{name}: ran in {seconds:.0f} s")


def train(trainer: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[bool], None]:
    """A stage's run function for ``trainer(*args, resume=..., **kwargs)`` (train_detector,
    train_reid, train_joint): its result is not the stage's, the files it writes are."""
    def run(resume: bool) -> None:
        trainer(*args, resume=resume, **kwargs)
    return run


def psearch_command(args: Sequence[Any], log_path: Path, env: dict[str, str] | None = None,
                    resume_flag: bool = False) -> Callable[[bool], None]:
    """A stage's run function for ``psearch ARGS`` in a subprocess (output to ``log_path``;
    ``--resume`` added when resuming if ``resume_flag``). A non-zero exit raises StageFailed
    with the log's last lines."""
    def run(resume: bool) -> None:
        argv = [sys.executable, "-m", "psearch", *map(str, args),
                *(["--resume"] if resume and resume_flag else [])]
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as out:
            rc = subprocess.call(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        if rc != 0:
            tail = Path(log_path).read_text().strip().splitlines()[-3:]
            raise StageFailed(f"psearch {args[0]} failed (exit {rc}); {log_path}: "
                              f"{' | '.join(tail)}")
    return run


def log_name(name: str) -> str:
    """A stage name as a file name: ``train re-ID`` -> ``train_re_id.log``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") + ".log"
