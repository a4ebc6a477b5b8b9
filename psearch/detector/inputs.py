"""What ``psearch detect`` reads: image files, folders of them, video files (sampled frames), and
image sequences: a folder whose images, sorted by name, are the frames of one camera at a given
frame rate (``sequence_fps``); its frame ``i`` is its ``i``-th image (``psearch.core.media``)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2

from psearch.core.errors import PsearchError
from psearch.core.media import (
    IMAGE,
    IMAGE_SUFFIXES,
    SEQUENCE,
    VIDEO,
    VIDEO_SUFFIXES,
    FrameSampling,
    Source,
    sequence_files,
)


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return IMAGE if suffix in IMAGE_SUFFIXES else VIDEO if suffix in VIDEO_SUFFIXES else None


def collect_sources(inputs: list[str | os.PathLike], recursive: bool = False,
                    exclude: str | os.PathLike | None = None,
                    sequence_fps: float | None = None) -> list[Source]:
    """Expand files and folders into sources, folders sorted by name, duplicates dropped.

    Files under ``exclude`` (the output folder, whose crops are images too) are left out of
    folders. With ``sequence_fps`` each folder is one image sequence at that frame rate instead
    of a set of separate images. Raises ``PsearchError`` for a missing path, a file that is
    neither image nor video, or a folder without any.
    """
    skip = Path(exclude).expanduser().absolute() if exclude is not None else None
    sources: dict[Path, Source] = {}
    for item in inputs:
        path = Path(item).expanduser().absolute()
        if path.is_dir() and sequence_fps is not None:
            if not sequence_files(path):
                raise PsearchError(f"{path}: folder holds no image files for a sequence")
            sources.setdefault(path, Source(path, SEQUENCE, float(sequence_fps)))
        elif path.is_dir():
            files = sorted(p for p in (path.rglob("*") if recursive else path.iterdir())
                           if p.is_file() and _kind(p) is not None
                           and (skip is None or not p.is_relative_to(skip)))
            if not files:
                hint = "" if recursive else " (use --recursive for subfolders)"
                raise PsearchError(f"{path}: folder holds no image or video files{hint}")
            for f in files:
                sources.setdefault(f, Source(f, _kind(f)))
        elif path.is_file():
            kind = _kind(path)
            if kind is None:
                raise PsearchError(f"{path}: not an image or video file (known suffixes: "
                                   f"{' '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})")
            sources.setdefault(path, Source(path, kind))
        else:
            raise PsearchError(f"{path}: no such file or folder")
    return list(sources.values())


def estimate_pictures(source: Source, sampling: FrameSampling) -> int:
    """How many pictures ``iter_pictures`` will yield (from the video header; for progress)."""
    if source.kind == IMAGE:
        return 1
    if source.kind == SEQUENCE:
        return max(1, math.ceil(len(sequence_files(source.path)) / sampling.step(source.fps)))
    capture = cv2.VideoCapture(str(source.path))
    try:
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        step = sampling.step(capture.get(cv2.CAP_PROP_FPS))
    finally:
        capture.release()
    return max(1, math.ceil(frames / step)) if frames > 0 else 1


def video_timing(source: Source, sampling: FrameSampling) -> tuple[float | None, float | None]:
    """(frame rate, frames between two processed frames) of a video; (None, None) for an image.
    The rate is None when the file does not declare one."""
    if source.kind == SEQUENCE:
        return source.fps, sampling.step(source.fps)
    if source.kind != VIDEO:
        return None, None
    capture = cv2.VideoCapture(str(source.path))
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS))
    finally:
        capture.release()
    fps = fps if math.isfinite(fps) and fps > 0 else None
    return fps, sampling.step(fps or 0.0)
