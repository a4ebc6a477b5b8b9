"""Every benchmark script starts as a user runs it (``python benchmarks/NAME.py --help``):
its imports (``from common import ...``, sibling scripts, psearch) resolve without any change
to the module path, and no benchmark edits ``sys.path`` or reads click's internals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if "__main__" in p.read_text())


def test_every_benchmark_script_is_found() -> None:
    assert {"cascade.py", "cascade_vs_joint.py", "joint_oim.py", "qeeps_rerank.py",
            "joint_ablation.py", "reid_cross_dataset.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_help_runs(script: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], env=env,
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_no_benchmark_edits_the_module_path_or_reads_click_internals() -> None:
    for path in [*BENCHMARKS.glob("*.py"), *BENCHMARKS.glob("common/*.py")]:
        text = path.read_text()
        assert "sys.path" not in text, path
        assert ".params" not in text, path
