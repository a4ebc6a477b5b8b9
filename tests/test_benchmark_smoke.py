"""End-to-end smoke of ``benchmarks/cascade_vs_joint.py`` (minutes): marked slow, so the default
run (and CI) skips it; run it with ``python -m pytest -m slow tests/test_benchmark_smoke.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_cascade_vs_joint_smoke(tmp_path: Path) -> None:
    out = tmp_path / "cvj.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "cascade_vs_joint.py"), "--smoke",
               "--work", str(tmp_path / "work"), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    for fmt, world in result["worlds"].items():
        for name, model in world["models"].items():
            assert model["status"] == "finished", (fmt, name, model.get("reason"))
        cascade = world["models"]["cascade"]
        assert set(cascade["cost"]["per_query"]) == {"1000", "10000", "100000", "1000000"}
        assert len(cascade["accuracy"]["detected"][next(iter(cascade["accuracy"]["detected"]))]
                   ["cmc"]) == 20
        assert world["models"]["qeeps"]["cost"]["seconds_per_pair"] > 0
    assert not result["partial"] and not result["missing"]
    for suffix in (".md", "_cmc.png", "_cost.png"):
        assert out.with_name(out.stem + suffix).stat().st_size > 0
    assert "**Conclusion.**" in out.with_suffix(".md").read_text()

    # a re-run reuses every stage and the scores
    again = subprocess.run(command + ["--models", "cascade", "--formats", "cuhk"], env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    cascade = json.loads(out.read_text())["worlds"]["cuhk"]["models"]["cascade"]
    assert cascade["this_run"] == "checked; scores reused"
    assert all(stage["reused"] for stage in cascade["stages"].values())
    again = json.loads(out.read_text())
    prw = again["worlds"]["prw"]["models"]["oim"]
    assert prw["this_run"] == "not selected; figures of an earlier run"
    assert not again["partial"]

    # a model whose checkpoint changed since it was scored is "not run yet": partial results
    checkpoint = Path(prw["checkpoints"]["joint"])
    os.utime(checkpoint, ns=(checkpoint.stat().st_atime_ns, checkpoint.stat().st_mtime_ns + 1))
    third = subprocess.run(command + ["--models", "cascade", "--formats", "cuhk"], env=env,
                           capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stdout[-2000:] + third.stderr[-2000:]
    partial = json.loads(out.read_text())
    assert partial["worlds"]["prw"]["models"]["oim"]["status"] == "not run yet"
    assert partial["partial"] and any(m.startswith("prw/oim") for m in partial["missing"])
    assert "not run yet" in out.with_suffix(".md").read_text()

    # records scored on another subset are not mixed into the subset table: "not run yet"
    fourth = subprocess.run(command + ["--models", "cascade", "--formats", "cuhk",
                                       "--qeeps-queries", "1"], env=env,
                            capture_output=True, text=True, timeout=600)
    assert fourth.returncode == 0, fourth.stdout[-2000:] + fourth.stderr[-2000:]
    other = json.loads(out.read_text())
    assert other["worlds"]["cuhk"]["models"]["cascade"]["status"] == "finished"
    assert "another subset" in other["worlds"]["cuhk"]["models"]["dcinet"]["reason"]
    assert other["partial"]
