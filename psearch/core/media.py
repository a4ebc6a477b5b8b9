"""Reading images and video frames. Arrays are RGB uint8 [H, W, 3] throughout psearch."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from psearch.core.errors import PsearchError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg")
IMAGE, VIDEO, SEQUENCE = "image", "video", "sequence"


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 [H, W, 3]; ``PsearchError`` if missing or undecodable."""
    path = Path(path)
    if not path.is_file():
        raise PsearchError(f"{path}: image file not found")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise PsearchError(f"{path}: cannot decode image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_image(path: str | os.PathLike, rgb: np.ndarray, jpeg_quality: int = 95) -> None:
    """Write an RGB uint8 image; the format follows the file suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    is_jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if is_jpeg else []
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise PsearchError(f"{path}: cannot write image")


def read_video_frame(path: str | os.PathLike, frame_index: int) -> np.ndarray:
    """Read frame ``frame_index`` (0-based) of a video file as RGB uint8 [H, W, 3]."""
    path = Path(path)
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise PsearchError(f"{path}: cannot open video")
        capture.set(cv2.CAP_PROP_POS_FRAMES, frame_index)
        ok, bgr = capture.read()
        if not ok or bgr is None:
            raise PsearchError(f"{path}: cannot read frame {frame_index}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


def sequence_files(folder: str | os.PathLike) -> list[Path]:
    """The frames of an image sequence: the folder's image files, sorted by name."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_source_frame(source: str | os.PathLike, frame_index: int) -> np.ndarray:
    """A manifest row's picture: the image itself (``frame_index < 0``), a video frame, or the
    ``frame_index``-th image of a sequence folder."""
    if frame_index < 0:
        return read_image(source)
    if Path(source).is_dir():
        files = sequence_files(source)
        if frame_index >= len(files):
            raise PsearchError(f"{source}: sequence has no frame {frame_index}")
        return read_image(files[frame_index])
    return read_video_frame(source, frame_index)


@dataclass(frozen=True)
class Source:
    """One input of a detect run: an image (one picture) or a video (its sampled frames)."""

    path: Path  # absolute
    kind: str  # IMAGE, VIDEO or SEQUENCE (a folder)
    fps: float | None = None  # SEQUENCE: its frame rate


@dataclass(frozen=True)
class FrameSampling:
    """Which video frames to process: every ``every``-th frame, or ``fps`` frames per second."""

    every: int = 1
    fps: float | None = None

    def step(self, video_fps: float) -> float:
        """Frames between two kept frames (>= 1)."""
        if self.fps is not None and video_fps > 0:
            return max(1.0, video_fps / self.fps)
        return float(max(1, self.every))


def _open_video(path: Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise PsearchError(f"{path}: cannot open video")
    return capture


def iter_pictures(source: Source, sampling: FrameSampling = FrameSampling()
                  ) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame index, RGB uint8 [H, W, 3])``; the index is -1 for an image.

    Skipped video frames are grabbed without decoding. ``PsearchError`` if the file cannot be
    read at all (an unreadable image, a video that opens to no frame).
    """
    if source.kind == IMAGE:
        yield -1, read_image(source.path)
        return
    if source.kind == SEQUENCE:
        files = sequence_files(source.path)
        step = sampling.step(source.fps)
        for index in np.unique(np.floor(np.arange(0, len(files), step) + 1e-6).astype(int)):
            yield int(index), read_image(files[index])
        return
    capture = _open_video(source.path)
    try:
        step = sampling.step(capture.get(cv2.CAP_PROP_FPS))
        index, next_kept, grabbed = 0, 0.0, False
        while capture.grab():
            grabbed = True
            if index >= next_kept - 1e-6:
                ok, bgr = capture.retrieve()
                if ok:
                    yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                next_kept += step
            index += 1
        if not grabbed:
            raise PsearchError(f"{source.path}: cannot read any video frame")
    finally:
        capture.release()
