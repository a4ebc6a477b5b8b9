"""The stage runner: finished stages are reused, the others timed; an interrupted training
resumes; a stage that ends without its output, or a failing command, is one clear error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from psearch.pipeline.stages import (
    Stage,
    StageFailed,
    StageRunner,
    log_name,
    psearch_command,
    train,
)


def writer(path: Path, calls: list[bool]):
    def run(resume: bool) -> str:
        calls.append(resume)
        path.write_text("done")
        return "result"
    return run


def test_a_stage_runs_once_then_is_reused_with_its_recorded_time(tmp_path: Path) -> None:
    lines: list[str] = []
    calls: list[bool] = []
    out, record = tmp_path / "out.txt", tmp_path / "stages.json"
    runner = StageRunner(log=lines.append, record=record)
    assert runner.run(Stage("make", writer(out, calls), [out])) == "result"
    assert calls == [False] and runner.ran == {"make"}
    assert lines[-1].startswith("make: ran in ") and lines[-1].endswith(" s")
    assert set(json.loads(record.read_text())) == {"make"}

    again = StageRunner(log=lines.append, record=record)  # a later run of the script
    assert again.run(Stage("make", writer(out, calls), [out])) is None
    assert calls == [False] and not again.ran and "make" in again.seconds
    assert lines[-1].startswith("make: reused (")


def test_output_made_elsewhere_is_kept_and_said_so(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    out.write_text("by hand")
    lines: list[str] = []
    calls: list[bool] = []
    StageRunner(log=lines.append, prefix="== ").run(Stage("make", writer(out, calls), [out]))
    assert calls == [] and lines == ["== make: done before this script ran (kept)"]
    assert out.read_text() == "by hand"


def test_a_checkpoint_without_the_output_resumes_through_the_trainer(tmp_path: Path) -> None:
    seen: list[dict] = []

    def trainer(data: str, out: Path, *, resume: bool, epochs: int) -> dict:
        seen.append({"data": data, "resume": resume, "epochs": epochs})
        (out / "metrics.json").write_text("{}")
        return {"any": "result type"}

    (tmp_path / "last.pt").write_text("interrupted")
    lines: list[str] = []
    stage = Stage("train", train(trainer, "world", tmp_path, epochs=3),
                  [tmp_path / "metrics.json"], checkpoint=tmp_path / "last.pt")
    assert StageRunner(log=lines.append).run(stage) is None  # the trainer's result is not kept
    assert seen == [{"data": "world", "resume": True, "epochs": 3}]
    assert lines[0] == "train (resuming)"


def test_a_stage_without_outputs_always_runs(tmp_path: Path) -> None:
    calls: list[bool] = []
    runner = StageRunner(log=lambda _: None)
    for _ in range(2):
        runner.run(Stage("detect", lambda resume: calls.append(resume)))
    assert calls == [False, False]


def test_a_stage_that_leaves_no_output_fails(tmp_path: Path) -> None:
    runner = StageRunner(log=lambda _: None, record=tmp_path / "stages.json")
    with pytest.raises(StageFailed, match="make finished without its output"):
        runner.run(Stage("make", lambda _: None, [tmp_path / "never.txt"]))
    assert not (tmp_path / "stages.json").exists()


def test_a_failing_command_is_one_line_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / log_name("Train re-ID")
    assert log.name == "train_re_id.log"
    run = psearch_command(["no-such-command"], log, env=None)
    with pytest.raises(StageFailed, match=r"psearch no-such-command failed \(exit 2\)"):
        run(False)
    assert "No such command" in log.read_text()


def test_a_command_stage_adds_resume_when_resuming(tmp_path: Path, monkeypatch) -> None:
    argvs: list[list[str]] = []

    def call(argv, **_) -> int:
        argvs.append(argv)
        return 0

    monkeypatch.setattr("psearch.pipeline.stages.subprocess.call", call)
    run = psearch_command(["train-reid", "--out", tmp_path], tmp_path / "x.log",
                          resume_flag=True)
    run(True)
    run(False)
    assert argvs[0] == [sys.executable, "-m", "psearch", "train-reid", "--out", str(tmp_path),
                        "--resume"]
    assert argvs[1][-1] == str(tmp_path)
