"""``psearch detect``: images, folders and videos in; crops and a consistent manifest out."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import torch
from support import run_cli, write_video

from psearch.core.boxes import crop_boxes
from psearch.core.checkpoint import save_checkpoint
from psearch.core.media import read_image
from psearch.detector.detect import DetectSettings, run_detect
from psearch.detector.inputs import collect_sources
from psearch.detector.model import build_detector
from psearch.detector.train import resolve_config
from psearch.formats.manifest import read_manifest

TINY_MODEL = {"fpn_channels": 32, "box_head_dim": 64, "min_size": 96, "max_size": 160,
              "returned_layers": [3, 5], "anchor_sizes": [[16, 32], [64, 96], [128, 192]],
              "rpn": {"post_nms_top_n_test": 50}}



@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread, above all on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """An untrained tiny detector: its scores sit near 0.5, so threshold 0.3 keeps boxes."""
    torch.manual_seed(0)
    config = resolve_config({"model": TINY_MODEL})
    path = tmp_path_factory.mktemp("ckpt") / "det.pt"
    save_checkpoint(path, "detector", config, build_detector(config["model"]).state_dict())
    return str(path)


@pytest.fixture()
def images(tmp_path) -> list[str]:
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for i, (h, w) in enumerate([(120, 90), (100, 140), (96, 96)]):
        path = folder / f"im{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), np.uint8))
        paths.append(str(path))
    return paths


class FixedDetector:
    """Two fixed boxes per picture; ``interrupt_after`` calls raise KeyboardInterrupt."""

    def __init__(self, interrupt_after: int | None = None) -> None:
        self.calls, self.interrupt_after = 0, interrupt_after

    def detect(self, images, score_thresh=0.5, max_detections=None):
        self.calls += 1
        if self.interrupt_after is not None and self.calls > self.interrupt_after:
            raise KeyboardInterrupt
        boxes = np.array([[2.4, 3.6, 20.5, 50.2], [10, 10, 30, 14]], np.float32)
        return [(boxes, np.array([0.9, 0.7], np.float32)) for _ in images]

    def describe(self):
        return {"backend": "fixed", "checkpoint": None}


def test_crops_cover_the_box_pixels_clipped_to_the_image() -> None:
    image = np.arange(50 * 40 * 3, dtype=np.uint8).reshape(50, 40, 3)
    boxes = np.array([[2.4, 3.6, 20.5, 30.0], [35.2, 40.0, 45.0, 60.0], [5, 5, 5, 5]], np.float32)
    crops = crop_boxes(image, boxes)
    assert [c.shape[:2] for c in crops] == [(27, 19), (10, 5), (1, 1)]
    assert np.array_equal(crops[0], image[3:30, 2:21])


def test_detect_images_writes_crops_and_a_consistent_manifest(checkpoint, images, tmp_path,
                                                             capsys) -> None:
    out = tmp_path / "dets"
    code, stdout, _ = run_cli(["detect", "--weights", checkpoint, *images, "--out", str(out),
                               "--score-thresh", "0.3", "--max-detections", "4", "-q"], capsys)
    assert code == 0 and "3 inputs done" in stdout
    manifest = read_manifest(out)
    assert set(manifest.finished) == set(images) and len(manifest) > 0
    assert np.all(manifest.frames == -1) and np.all(manifest.scores >= 0.3)
    for source in images:
        assert np.sum(manifest.sources == source) <= 4
    for i in range(len(manifest)):
        h, w = read_image(manifest.sources[i]).shape[:2]
        x1, y1, x2, y2 = manifest.boxes[i]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        crop = read_image(manifest.crop_path(i))
        # Crops span floor(x1)..ceil(x2); the manifest rounds boxes to 0.01 px.
        assert abs(crop.shape[1] - (x2 - x1)) <= 2 and abs(crop.shape[0] - (y2 - y1)) <= 2
    assert (out / "detect.json").is_file()


def test_detect_video_every_n_and_fps(checkpoint, tmp_path, capsys) -> None:
    video = write_video(tmp_path / "clip.avi", n_frames=7, fps=10)
    for option, expected in ((["--every", "3"], {0, 3, 6}), (["--fps", "5"], {0, 2, 4, 6})):
        out = tmp_path / f"dets{option[0]}"
        code, _, _ = run_cli(["detect", "--weights", checkpoint, video, "--out", str(out),
                              "--score-thresh", "0.3", "--max-detections", "2", "-q", *option],
                             capsys)
        assert code == 0
        manifest = read_manifest(out)
        assert set(manifest.frames.tolist()) == expected
        with open(out / "sources.csv", newline="") as f:
            [row] = list(csv.DictReader(f))
        assert row["kind"] == "video" and int(row["frames"]) == len(expected)
        assert int(row["detections"]) == len(manifest)


def test_a_rerun_skips_finished_inputs(images, tmp_path) -> None:
    out = tmp_path / "dets"
    detector = FixedDetector()
    first = run_detect(detector, collect_sources(images[:2]), out, progress=False)
    assert (first.finished, first.skipped, first.detections) == (2, 0, 4)
    calls = detector.calls
    second = run_detect(detector, collect_sources(images), out, progress=False)
    assert (second.finished, second.skipped) == (1, 2)
    assert detector.calls == calls + 1  # only the new image went through the detector
    assert len(read_manifest(out)) == 6


def test_an_interrupted_run_leaves_a_valid_manifest(images, tmp_path) -> None:
    out = tmp_path / "dets"
    settings = DetectSettings(batch_size=1)
    with pytest.raises(KeyboardInterrupt):
        run_detect(FixedDetector(interrupt_after=2), collect_sources(images), out, settings,
                   progress=False)
    manifest = read_manifest(out)
    assert set(manifest.finished) == set(images[:2]) and len(manifest) == 4
    assert all(manifest.crop_path(i).is_file() for i in range(len(manifest)))
    summary = run_detect(FixedDetector(), collect_sources(images), out, settings, progress=False)
    assert (summary.finished, summary.skipped) == (1, 2) and len(read_manifest(out)) == 6


def test_an_unreadable_image_among_others_is_skipped_and_reported(images, tmp_path,
                                                                   capsys) -> None:
    bad = tmp_path / "imgs" / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    code, stdout, stderr = run_cli(["detect", "--weights", "hog", str(tmp_path / "imgs"),
                                    "--out", str(tmp_path / "dets"), "-q"], capsys)
    assert code == 0 and "3 inputs done" in stdout
    assert "skipped 1 unreadable" in stderr and "broken.jpg" in stderr
    assert str(bad) not in read_manifest(tmp_path / "dets").finished


@pytest.mark.parametrize("case", ["missing", "empty_folder", "not_media", "corrupt_checkpoint",
                                  "reid_checkpoint", "unreadable_image", "unreadable_video",
                                  "other_settings"])
def test_bad_input_is_one_line_error(case, checkpoint, images, tmp_path, capsys) -> None:
    weights, inputs = checkpoint, [images[0]]
    if case == "missing":
        inputs = [str(tmp_path / "nope.jpg")]
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        inputs = [str(tmp_path / "empty")]
    elif case == "not_media":
        (tmp_path / "notes.txt").write_text("hi")
        inputs = [str(tmp_path / "notes.txt")]
    elif case == "corrupt_checkpoint":
        weights = str(tmp_path / "det.pt")
        (tmp_path / "det.pt").write_bytes(b"\x00garbage")
    elif case == "reid_checkpoint":
        weights = str(tmp_path / "reid.pt")
        save_checkpoint(weights, "reid", {}, {})
    elif case == "unreadable_image":
        (tmp_path / "bad.png").write_bytes(b"png?")
        inputs = [str(tmp_path / "bad.png")]
    elif case == "unreadable_video":
        (tmp_path / "bad.avi").write_bytes(b"avi?")
        inputs = [str(tmp_path / "bad.avi")]
    elif case == "other_settings":
        run_detect(FixedDetector(), collect_sources(images), tmp_path / "dets", progress=False)
        weights = "hog"
    code, _, stderr = run_cli(["detect", "--weights", weights, *inputs, "--out",
                               str(tmp_path / "dets"), "-q"], capsys)
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr


def test_folders_are_sorted_and_the_output_folder_is_not_an_input(images, tmp_path) -> None:
    folder = tmp_path / "imgs"
    out = folder / "dets"
    run_detect(FixedDetector(), collect_sources([folder]), out, progress=False)
    sources = collect_sources([folder, images[0]], recursive=True, exclude=out)
    assert [str(s.path) for s in sources] == images  # crops under dets/ left out, no duplicate
