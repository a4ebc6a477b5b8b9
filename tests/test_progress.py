"""progress_bar: a redrawn bar on a terminal, plain timed lines elsewhere; detect's live count."""

from __future__ import annotations

import io
import re

import numpy as np
from tqdm import tqdm

import psearch.core.progress as progress
from psearch.core.progress import LineProgress, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_progress_is_whole_lines_with_elapsed_and_remaining():
    out = io.StringIO()
    bar = progress_bar(total=40, desc="embed", unit="crop", file=out)
    assert isinstance(bar, LineProgress)
    for i in range(40):
        bar.update(1)
        bar.set_postfix(done=i + 1)  # no line of its own
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and out.getvalue().endswith("\n")
    assert len(lines) == 2  # the start, then the end: updates were within LINE_INTERVAL_S
    assert re.fullmatch(r"embed: 100% 40/40 crop \[00:00<00:00, .*done=40\]", lines[-1])


def test_lines_come_every_interval(monkeypatch):
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
    out = io.StringIO()
    for _ in progress_bar(range(5), desc="x", file=out, leave=False):
        pass
    assert len(out.getvalue().splitlines()) == 6  # start + one per step; the end not repeated


def test_on_a_terminal_a_bar_and_none_when_disabled():
    term = Terminal()
    bar = progress_bar(total=3, file=term)
    assert type(bar) is tqdm
    bar.close()
    quiet = io.StringIO()
    for _ in progress_bar(range(3), enabled=False, file=quiet):
        pass
    for _ in progress_bar(range(3), enabled=None, file=quiet):  # only on a terminal
        pass
    assert quiet.getvalue() == ""


def test_detect_counts_detections_before_the_input_is_finished(tmp_path, monkeypatch, capsys):
    import cv2

    from psearch.detector.detect import DetectSettings, run_detect
    from psearch.detector.inputs import collect_sources

    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    for _ in range(6):
        writer.write(np.full((48, 64, 3), 100, np.uint8))
    writer.release()

    class TwoPerFrame:
        def detect(self, images, score_thresh=0.5, max_detections=None):
            box = np.array([[4, 4, 20, 40], [30, 4, 50, 40]], np.float32)
            return [(box, np.array([0.9, 0.8], np.float32)) for _ in images]

        def describe(self):
            return {"backend": "two"}

    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
    run_detect(TwoPerFrame(), collect_sources([video]), tmp_path / "dets",
               DetectSettings(batch_size=2), progress=True)
    counts = [int(n) for n in re.findall(r"detections=(\d+)", capsys.readouterr().err)]
    assert counts[:3] == [4, 8, 12]  # one video: counted per batch, not at its end
