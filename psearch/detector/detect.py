"""The detect runner: pictures in, person crops and a manifest out (``psearch detect``).

Pictures are decoded by a reader thread while the detector runs on batches that span inputs;
crops are cut by array slicing and encoded by a small thread pool. An input's rows reach the
manifest (``psearch.formats.manifest.ManifestWriter``) only once all its crops are on disk, so an
interrupted run leaves a valid manifest and a rerun skips the inputs already finished.
"""

from __future__ import annotations

import hashlib
import queue
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from psearch.core.boxes import crop_boxes
from psearch.core.errors import PsearchError
from psearch.core.io import write_json_atomic
from psearch.core.media import iter_pictures
from psearch.core.progress import progress_bar
from psearch.detector.inputs import FrameSampling, Source, estimate_pictures, video_timing
from psearch.formats.embeddings import EmbeddingSink
from psearch.formats.manifest import ManifestWriter
from psearch.roles import Detector, DetectorEmbedder

SETTINGS_NAME = "detect.json"
CROPS_DIR = "crops"
_QUEUE_PICTURES = 16  # decoded pictures the reader may run ahead


@dataclass
class DetectSettings:
    """Options of a detect run (recorded in ``detect.json``)."""

    score_thresh: float = 0.5
    min_size: float = 0.0  # minimum box height in pixels
    max_detections: int = 100  # per picture
    batch_size: int = 8
    every: int = 1  # video: keep every N-th frame ...
    fps: float | None = None  # ... or this many frames per second
    jpeg_quality: int = 95
    crop_workers: int = 2
    embed: bool = False  # also write embeddings (a detector with ``detect_and_embed``)


# Settings that change what lands in the manifest: a resumed run must use the same ones.
_RESULT_SETTINGS = ("score_thresh", "min_size", "max_detections", "every", "fps")


@dataclass
class DetectSummary:
    """What a run did: inputs finished now / before, inputs that failed (path, reason)."""

    finished: int = 0
    skipped: int = 0
    pictures: int = 0
    detections: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Pending:
    """Detections of an input whose pictures are still being processed."""

    frames: list[np.ndarray] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    scores: list[np.ndarray] = field(default_factory=list)
    crops: list[str] = field(default_factory=list)
    writes: list[Future] = field(default_factory=list)
    features: list[np.ndarray] = field(default_factory=list)


def crop_prefix(source: Path) -> str:
    """Stable, unique path prefix of a source's crops, e.g. ``crops/3f/cam1-3f9a0c12ab``."""
    digest = hashlib.sha1(str(source).encode()).hexdigest()
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", source.stem)[:40]
    return f"{CROPS_DIR}/{digest[:2]}/{stem}-{digest[:10]}"


def _write_jpeg(path: Path, bgr: np.ndarray, quality: int) -> None:
    if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, quality]):
        raise PsearchError(f"{path}: cannot write crop")


def _reader(sources: list[Source], sampling: FrameSampling, out: queue.Queue,
            stop: threading.Event) -> None:
    """Decode pictures into ``out``: ("pic", i, frame, rgb), then ("end", i, n) or
    ("fail", i, reason) per source, and a final ("done",)."""

    def put(item: tuple) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    for i, source in enumerate(sources):
        n = 0
        try:
            for frame, rgb in iter_pictures(source, sampling):
                if not put(("pic", i, frame, rgb)):
                    return
                n += 1
        except PsearchError as exc:
            if not put(("fail", i, str(exc))):
                return
            continue
        except Exception as exc:  # a decoder crash must not hang the run
            if not put(("fail", i, f"{source.path}: {type(exc).__name__}: {exc}")):
                return
            continue
        if not put(("end", i, n)):
            return
    put(("done",))


def _load_previous_settings(out_dir: Path) -> dict[str, Any] | None:
    import json

    path = out_dir / SETTINGS_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise PsearchError(f"{path}: unreadable; remove it or use another --out") from None


def _check_resumable(out_dir: Path, previous: dict[str, Any] | None,
                     detector: dict[str, Any], settings: DetectSettings) -> None:
    """Refuse to add rows made with another detector or other result settings."""
    if previous is None:
        return
    before = {k: v for k, v in previous.get("detector", {}).items() if k != "device"}
    now = {k: v for k, v in detector.items() if k != "device"}
    if before != now:
        old = before.get("checkpoint") or before.get("backend")
        raise PsearchError(f"{out_dir}: holds detections of another detector ({old}, "
                           f"{before}); use the same one or another --out")
    for key in _RESULT_SETTINGS:
        old = previous.get("settings", {}).get(key)
        if old != getattr(settings, key):
            raise PsearchError(f"{out_dir}: was started with {key}={old}, now "
                               f"{getattr(settings, key)}; use the same value or another --out")


def run_detect(detector: Detector, sources: list[Source], out_dir: str | Path,
               settings: DetectSettings | None = None, progress: bool = True) -> DetectSummary:
    """Detect people in every source, write crops, ``manifest.csv``, ``sources.csv`` and
    ``detect.json`` under ``out_dir``; inputs already finished there are skipped."""
    out_dir = Path(out_dir)
    settings = settings or DetectSettings()
    start = time.perf_counter()
    description = detector.describe()
    previous = _load_previous_settings(out_dir)
    _check_resumable(out_dir, previous, description, settings)
    record = {"detector": description, "settings": asdict(settings), "status": "running"}
    summary = DetectSummary()
    sampling = FrameSampling(settings.every, settings.fps)

    with ManifestWriter(out_dir) as writer:
        sink = _embedding_sink(out_dir, detector) if settings.embed else None
        done = writer.finished_sources()
        todo = [s for s in sources if str(s.path) not in done]
        summary.skipped = len(sources) - len(todo)
        write_json_atomic(out_dir / SETTINGS_NAME, record)
        if todo:
            _process(detector, todo, sampling, settings, writer, summary, progress, sink)
    if sink is not None:
        sink.finish()
    summary.seconds = time.perf_counter() - start
    record.update(status="finished", inputs=len(sources), summary=asdict(summary))
    write_json_atomic(out_dir / SETTINGS_NAME, record)
    return summary


def _embedding_sink(out_dir: Path, detector: Detector) -> EmbeddingSink:
    """Where ``--embed`` appends embeddings (``psearch.formats.embeddings.EmbeddingSink``)."""
    if not isinstance(detector, DetectorEmbedder):
        raise PsearchError("--embed needs a model that detects and embeds in one pass (a "
                           "train-joint checkpoint)")
    return EmbeddingSink(out_dir, detector)


def _process(detector: Detector, todo: list[Source], sampling: FrameSampling,
             settings: DetectSettings, writer: ManifestWriter, summary: DetectSummary,
             progress: bool, sink: Any = None) -> None:
    pictures: queue.Queue = queue.Queue(maxsize=_QUEUE_PICTURES)
    stop = threading.Event()
    reader = threading.Thread(target=_reader, args=(todo, sampling, pictures, stop), daemon=True)
    pool = ThreadPoolExecutor(max_workers=max(1, settings.crop_workers))
    pending: dict[int, _Pending] = {}
    total = sum(estimate_pictures(s, sampling) for s in todo)
    bar = progress_bar(total=total, unit="pic", desc="detect", enabled=progress)
    found = 0  # detections so far, finished inputs or not
    reader.start()
    try:
        finished_stream, carry = False, None
        while not finished_stream:
            batch, markers = [], []
            while not finished_stream:
                item, carry = carry or pictures.get(), None
                if item[0] == "done":
                    finished_stream = True
                elif item[0] != "pic":
                    markers.append(item)
                elif len(batch) < settings.batch_size:
                    batch.append(item)
                else:  # full: the markers read up to the next picture finish with this batch
                    carry = item
                    break
            if batch:
                found += _detect_batch(detector, batch, todo, settings, writer.root, pool,
                                       pending)
                summary.pictures += len(batch)
            # Every picture of a marked source was queued before its marker: all are done now.
            for kind, i, info in markers:
                entry = pending.pop(i, _Pending())
                if kind == "fail":
                    summary.failed.append((str(todo[i].path), info))
                    continue
                _finish_source(writer, todo[i], info, entry, sampling, sink)
                summary.finished += 1
                summary.detections += len(entry.crops)
            bar.set_postfix(detections=found, failed=len(summary.failed), refresh=False)
            bar.update(len(batch))
    finally:
        stop.set()
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)


def _detect_batch(detector: Detector, batch: list[tuple], todo: list[Source],
                  settings: DetectSettings, root: Path, pool: ThreadPoolExecutor,
                  pending: dict[int, _Pending]) -> int:
    """Detect on a batch of ("pic", source index, frame, rgb); queue the crops' JPEG writes.
    Returns the number of detections kept."""
    run = detector.detect_and_embed if settings.embed else detector.detect
    results = run([item[3] for item in batch], score_thresh=settings.score_thresh,
                  max_detections=settings.max_detections)
    kept = 0
    for (_, i, frame, rgb), (boxes, scores, *features) in zip(batch, results, strict=True):
        keep = (boxes[:, 3] - boxes[:, 1]) >= settings.min_size
        boxes, scores = boxes[keep], scores[keep]
        entry = pending.setdefault(i, _Pending())
        entry.features.extend(f[keep] for f in features)
        prefix = crop_prefix(todo[i].path) + (f"_f{frame:06d}" if frame >= 0 else "")
        names = [f"{prefix}_{k:03d}.jpg" for k in range(len(boxes))]
        if names:
            (root / names[0]).parent.mkdir(parents=True, exist_ok=True)
        for name, crop in zip(names, crop_boxes(rgb, boxes), strict=True):
            bgr = cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)  # a small copy: the frame can be freed
            entry.writes.append(pool.submit(_write_jpeg, root / name, bgr, settings.jpeg_quality))
        entry.frames.append(np.full(len(boxes), frame, np.int64))
        entry.boxes.append(boxes)
        entry.scores.append(scores)
        entry.crops.extend(names)
        kept += len(names)
    return kept


def _finish_source(writer: ManifestWriter, source: Source, n_pictures: int,
                   entry: _Pending, sampling: FrameSampling, sink: Any = None) -> None:
    """Wait for the source's crops (and store its embeddings), then append its rows and mark
    it finished."""
    wait(entry.writes)
    for write in entry.writes:
        write.result()  # re-raise a failed write
    if sink is not None:
        sink.append(np.concatenate(entry.features) if entry.features
                    else np.zeros((0, sink.dim), np.float32))
    frames = np.concatenate(entry.frames) if entry.frames else np.zeros(0, np.int64)
    boxes = np.concatenate(entry.boxes) if entry.boxes else np.zeros((0, 4), np.float32)
    scores = np.concatenate(entry.scores) if entry.scores else np.zeros(0, np.float32)
    fps, step = video_timing(source, sampling)
    writer.add_source(str(source.path), source.kind, n_pictures, frames, boxes, scores,
                      entry.crops, fps=fps, step=step)
