"""Sightings: grouping hits of nearby video frames, and a generated video searched end to end."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from support import run_cli, tiny_checkpoint

from psearch.core.media import read_image
from psearch.data import load_dataset
from psearch.detector.detect import DetectSettings, run_detect
from psearch.detector.inputs import collect_sources
from psearch.formats.manifest import read_manifest
from psearch.gallery.rows import Rows
from psearch.gallery.sightings import format_time, group_sightings
from psearch.gallery.store import Gallery

VIDEO_FPS = 10.0


def test_format_time():
    assert format_time(0) == "0:00:00.000"
    assert format_time(3725.5) == "1:02:05.500"
    assert format_time(59.9996) == "0:01:00.000"
    assert format_time(float("nan")) == "-"


def rows_of(sources, frames, fps, steps=None, times=None, boxes=None) -> Rows:
    frames = np.asarray(frames)
    n = len(frames)
    boxes = np.tile([0, 0, 10, 20], (n, 1)) if boxes is None else boxes
    videos = {s: (f, (steps or {}).get(s, 1.0)) for s, f in fps.items()}
    if times is None:
        times = [fr / fps[s] if s in fps and fr >= 0 and np.isfinite(fps[s]) else np.nan
                 for s, fr in zip(sources, frames, strict=True)]
    return Rows.from_columns(sources, frames, boxes, np.ones(n), [""] * n,
                             np.asarray(times, float), videos)


def lookup_for(rows: Rows):
    return Gallery(_flat(len(rows)), rows, {"index": {"kind": "flat"}}).lookup


def _flat(n: int):
    import faiss

    index = faiss.IndexFlatIP(4)
    index.add(np.eye(4, dtype=np.float32)[np.arange(n) % 4])
    return index


def test_group_sightings_splits_on_gaps_sources_and_images():
    # a.mp4 at 10 fps: frames 0-4 (one run), 40-42 (3.6 s later: another), and in frame 2 a
    # second person far away (row 3); b.mp4 frames 0-1; one image.
    sources = ["a.mp4"] * 9 + ["b.mp4"] * 2 + ["img.jpg"]
    frames = [0, 1, 2, 2, 3, 4, 40, 41, 42, 0, 1, -1]
    boxes = np.tile([0, 0, 10, 20], (12, 1))
    boxes[3] = [300, 0, 310, 20]
    rows = rows_of(sources, frames, {"a.mp4": 10.0, "b.mp4": 25.0}, boxes=boxes)
    ids = np.array([5, 0, 7, 2, 3, 9, 11, 1, 6, 4, 8, 10, -1])
    scores = np.array([.99, .98, .97, .96, .95, .94, .93, .92, .91, .9, .89, .88, 0.0])
    got = group_sightings(rows, ids, scores, top_k=10, gap=2.0, lookup=lookup_for(rows))
    summary = [(s.source, s.start_frame, s.end_frame, s.frames, s.hits, s.best.row) for s in got]
    assert summary == [("a.mp4", 0, 4, 5, 5, 5), ("a.mp4", 40, 42, 3, 3, 7),
                       ("a.mp4", 2, 2, 1, 1, 3), ("b.mp4", 0, 1, 2, 2, 9),
                       ("img.jpg", -1, -1, 1, 1, 11)]
    assert [s.rank for s in got] == [1, 2, 3, 4, 5] == [s.best.rank for s in got]
    assert got[0].score == pytest.approx(.99) and got[0].bounds() == ("0:00:00.000",
                                                                      "0:00:00.400")
    assert got[0].best_time == pytest.approx(0.4)
    assert got[3].span == "0:00:00.000-0:00:00.040"
    assert got[4].bounds() == ("-", "-") and not got[4].is_video
    assert len(group_sightings(rows, ids, scores, 2, 2.0, lookup_for(rows))) == 2
    # a 4 s gap joins a's two runs
    joined = group_sightings(rows, ids, scores, 10, 4.0, lookup_for(rows))
    assert (joined[0].start_frame, joined[0].end_frame, joined[0].frames) == (0, 42, 8)


def test_sparse_sampling_and_unknown_rates_join_neighbouring_samples():
    # sampled every 50 frames at 10 fps (5 s apart) > 2 s gap: neighbours still join; a
    # missing sample (frames 100 -> 200) splits. c.avi has no frame rate: 25 fps assumed.
    sources = ["a.mp4"] * 4 + ["c.avi"] * 3
    frames = [0, 50, 100, 200, 0, 3, 90]
    rows = rows_of(sources, frames, {"a.mp4": 10.0, "c.avi": np.nan},
                   steps={"a.mp4": 50.0, "c.avi": 3.0})
    ids = np.arange(7)
    scores = np.linspace(1, 0.5, 7)
    got = group_sightings(rows, ids, scores, 10, 2.0, lookup_for(rows))
    assert [(s.source, s.start_frame, s.end_frame) for s in got] == [
        ("a.mp4", 0, 100), ("a.mp4", 200, 200), ("c.avi", 0, 3), ("c.avi", 90, 90)]
    assert got[2].bounds() == ("frame 0", "frame 3")


def test_people_in_the_same_frames_stay_apart_and_jumps_split():
    # 10 fps; person p walks right 10 px per frame (box height 100); q stands 300 px away;
    # at frame 5 p's box jumps 400 px within 0.1 s: no walking person does that.
    frames = np.r_[np.arange(5), np.arange(5), 5]
    p_boxes = np.array([[10 * f, 0, 10 * f + 40, 100] for f in range(5)])
    q_boxes = np.tile([300, 0, 340, 100], (5, 1))
    boxes = np.concatenate([p_boxes, q_boxes, [[450, 0, 490, 100]]])
    times = frames / 10.0
    rows = Rows.from_columns(["v.mp4"] * 11, frames, boxes, np.ones(11), [""] * 11, times,
                             {"v.mp4": (10.0, 1.0)})
    ids = np.arange(11)
    scores = np.r_[np.full(5, 0.9), np.full(5, 0.5), 0.8]
    got = group_sightings(rows, ids, scores, 10, 2.0, lookup_for(rows))
    assert [(s.score, s.start_frame, s.end_frame, s.frames) for s in got] == [
        (pytest.approx(0.9), 0, 4, 5), (pytest.approx(0.8), 5, 5, 1), (0.5, 0, 4, 5)]


def test_two_people_walking_side_by_side_stay_two_sightings():
    # 10 fps, boxes 100 high, 30 px apart (closer than the 0.6 box heights a person may move
    # in 0.1 s): only mutual nearest boxes link, so each keeps its own track.
    frames = np.repeat(np.arange(6), 2)
    x = np.tile([0, 30], 6) + 5 * frames
    boxes = np.stack([x, np.zeros(12), x + 40, np.full(12, 100)], 1)
    rows = Rows.from_columns(["v.mp4"] * 12, frames, boxes, np.ones(12), [""] * 12,
                             frames / 10.0, {"v.mp4": (10.0, 1.0)})
    scores = np.where(np.arange(12) % 2 == 0, 0.9, 0.6)
    got = group_sightings(rows, np.arange(12), scores, 10, 2.0, lookup_for(rows))
    assert [(s.frames, s.hits, s.best.box[0] % 5 == 0) for s in got] == [(6, 6, True)] * 2
    assert [round(s.score, 2) for s in got] == [0.9, 0.6]


def _alone(boxes: np.ndarray, k: int) -> bool:
    """Box k's centre lies more than one box height from every other box's centre."""
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    far = np.linalg.norm(centres - centres[k], axis=1) > boxes[k, 3] - boxes[k, 1]
    return bool(np.delete(far, k).all())


# -- a generated video, end to end -------------------------------------------------------------

class ScriptedDetector:
    """Returns given boxes for the frames in the order the detect runner feeds them."""

    def __init__(self, boxes_per_frame: list[np.ndarray]) -> None:
        self.queue = list(boxes_per_frame)

    def detect(self, images, score_thresh=0.5, max_detections=None):
        out = []
        for _ in images:
            boxes = self.queue.pop(0)
            out.append((boxes.astype(np.float32), np.full(len(boxes), 0.9, np.float32)))
        return out

    def describe(self):
        return {"backend": "scripted", "checkpoint": None}


@pytest.fixture(scope="module")
def video_world(cuhk_world, tmp_path_factory):
    """street.avi (10 fps, MJPG): a generated scene for frames 0-9, the empty street for 10-39,
    the scene again for 40-49; detected every 2nd frame (the world's boxes, in order)."""
    root = tmp_path_factory.mktemp("video")
    dataset = load_dataset(cuhk_world, "cuhk")
    scene_a, person = next((r, pid) for r in dataset.gallery for k, pid in enumerate(r.pids)
                           if pid >= 0 and len(r.boxes) >= 2 and _alone(r.boxes, k))
    empty = np.full_like(read_image(scene_a.path), 128)  # the street with nobody in it
    plan = [read_image(scene_a.path)] * 10 + [empty] * 30 + [read_image(scene_a.path)] * 10
    boxes = [scene_a.boxes] * 10 + [np.zeros((0, 4))] * 30 + [scene_a.boxes] * 10
    h, w = empty.shape[:2]
    video = root / "street.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), VIDEO_FPS, (w, h))
    assert writer.isOpened()
    for picture in plan:
        writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    writer.release()
    dets = root / "dets"
    run_detect(ScriptedDetector(boxes[::2]), collect_sources([video]), dets,
               DetectSettings(every=2, score_thresh=0.5), progress=False)
    checkpoint = tiny_checkpoint(root / "reid.pt")
    query_box = scene_a.boxes[np.argmax(scene_a.pids == person)]
    return root, video, dets, checkpoint, scene_a, query_box


def test_video_manifest_records_frame_times(video_world):
    _, video, dets, *_ = video_world
    manifest = read_manifest(dets)
    assert manifest.videos == {str(video): (VIDEO_FPS, 2.0)}
    assert set(manifest.frames.tolist()) == {*range(0, 10, 2), *range(40, 50, 2)}
    np.testing.assert_allclose(manifest.times, manifest.frames / VIDEO_FPS)


def test_generated_video_searched_end_to_end_gives_sightings_with_times(video_world, capsys):
    root, video, dets, checkpoint, scene_a, box = video_world
    emb, gallery = root / "emb", root / "gallery"
    for argv in (["embed", "--weights", str(checkpoint), "--manifest", str(dets), "--out",
                  str(emb), "--quiet", "--device", "cpu"],
                 ["index", "--embeddings", str(emb), "--out", str(gallery)]):
        code, _, err = run_cli(argv, capsys)
        assert code == 0, err
    rows = Gallery.load(gallery).rows
    np.testing.assert_allclose(rows.times, rows.frames / VIDEO_FPS)
    query = ["query", "--gallery", str(gallery), "--image", str(scene_a.path), "--box",
             ",".join(f"{v:g}" for v in box), "--device", "cpu", "--top-k", "3"]
    code, out, err = run_cli([*query, "--json", "--show", str(root / "sheet.html")], capsys)
    assert code == 0, err
    [result] = json.loads(out)["queries"]
    top = result["sightings"][:2]
    # The person is in frames 0-9 and 40-49, processed every 2nd frame: 0..8 and 40..48.
    assert sorted((s["start"], s["end"], s["frames"]) for s in top) == [
        ("0:00:00.000", "0:00:00.800", 5), ("0:00:04.000", "0:00:04.800", 5)]
    for s in top:
        assert s["source"] == str(video) and s["best"]["box"] == pytest.approx(box.tolist())
        assert s["best"]["frame"] in range(s["start_frame"], s["end_frame"] + 1)
    assert top[0]["score"] >= top[1]["score"] > result["sightings"][2]["score"]
    assert "0:00:04.000-0:00:04.800" in (root / "sheet.html").read_text()

    code, out, err = run_cli(query, capsys)
    assert code == 0, err
    assert "sightings" in out and "0:00:00.000" in out and "0:00:04.800" in out
    code, out, err = run_cli([*query, "--per-frame", "--json"], capsys)
    [result] = json.loads(out)["queries"]
    assert len(result["matches"]) == 3 and "sightings" not in result


def test_image_sequence_folder_gives_sightings_with_times(video_world, tmp_path, capsys):
    """The same footage as 50 PNG frames of one camera at 10 fps (--sequence-fps)."""
    root, video, dets, checkpoint, scene_a, box = video_world
    capture = cv2.VideoCapture(str(video))
    frames = tmp_path / "cam1"
    frames.mkdir()
    boxes = []
    for i in range(50):
        ok, bgr = capture.read()
        assert ok
        cv2.imwrite(str(frames / f"{i:05d}.png"), bgr)
        boxes.append(scene_a.boxes if i < 10 or i >= 40 else np.zeros((0, 4)))
    capture.release()
    seq_dets = tmp_path / "dets"
    sources = collect_sources([frames], sequence_fps=VIDEO_FPS)
    assert [(s.kind, s.fps) for s in sources] == [("sequence", VIDEO_FPS)]
    run_detect(ScriptedDetector(boxes), sources, seq_dets, DetectSettings(), progress=False)
    manifest = read_manifest(seq_dets)
    assert manifest.videos == {str(frames): (VIDEO_FPS, 1.0)}
    np.testing.assert_allclose(manifest.times, manifest.frames / VIDEO_FPS)
    emb, gallery = tmp_path / "emb", tmp_path / "gallery"
    for argv in (["embed", "--weights", str(checkpoint), "--manifest", str(seq_dets), "--out",
                  str(emb), "--quiet", "--device", "cpu"],
                 ["index", "--embeddings", str(emb), "--out", str(gallery)]):
        assert run_cli(argv, capsys)[0] == 0
    code, out, err = run_cli(["query", "--gallery", str(gallery), "--image", str(scene_a.path),
                          "--box", ",".join(f"{v:g}" for v in box), "--device", "cpu",
                          "--top-k", "2", "--json", "--show", str(tmp_path / "sheet.png")],
                         capsys)
    assert code == 0, err
    top = json.loads(out)["queries"][0]["sightings"]
    assert sorted((s["start"], s["end"], s["frames"]) for s in top) == [
        ("0:00:00.000", "0:00:00.900", 10), ("0:00:04.000", "0:00:04.900", 10)]
    assert (tmp_path / "sheet.png").is_file()
    from psearch.core.media import (
        read_source_frame,  # what the sheet draws: the folder's 41st image
    )

    np.testing.assert_array_equal(read_source_frame(frames, 40), read_image(frames / "00040.png"))
