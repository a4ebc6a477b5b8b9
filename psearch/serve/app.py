"""The HTTP service: ``create_app(gallery_dir)`` -> a FastAPI app (JSON API + the browser page).

Every path a client names is checked against the loaded gallery: ``source`` must be one of its
sources, exactly, so no file outside the gallery is ever read or served. Every failure is a
4xx/5xx with a one-line ``{"detail": ...}``, never a traceback.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import cv2
import numpy as np
from fastapi import FastAPI, File, Form, Header, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

from psearch.core.boxes import check_box, crop_box, parse_box
from psearch.core.errors import PsearchError
from psearch.core.media import read_source_frame, write_image
from psearch.serve.state import GalleryState, Snapshot, row_vectors
from psearch.serve.uploads import MAX_UPLOAD_BYTES, decode_upload

PAGE = Path(__file__).with_name("static") / "index.html"
MAX_TOP_K = 200
VIDEO_TYPES = {".mp4": "video/mp4", ".webm": "video/webm", ".ogv": "video/ogg",
               ".mkv": "video/x-matroska", ".avi": "video/x-msvideo", ".mov": "video/quicktime"}


def create_app(gallery_dir: str | os.PathLike, device: str = "cpu",
               checkpoint: str | os.PathLike | None = None, token: str | None = None,
               state: GalleryState | None = None) -> FastAPI:
    """The service for ``gallery_dir``; ``token``: enables ``POST /add`` for clients that send
    it as ``Authorization: Bearer TOKEN`` (without a token the gallery is read-only)."""
    state = state or GalleryState(gallery_dir, device=device, checkpoint=checkpoint)
    app = FastAPI(title="psearch serve", version="1",
                  description="Person search over a psearch gallery: query by picture and box.")
    app.state.gallery = state
    write_lock = threading.Lock()

    @app.exception_handler(PsearchError)
    async def _user_error(_: Request, exc: PsearchError) -> JSONResponse:
        return JSONResponse({"detail": str(exc).splitlines()[0]}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid request')}"},
                            status_code=422)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"internal error ({type(exc).__name__})"}, status_code=500)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):  # refuse big bodies before parsing
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_UPLOAD_BYTES + 65536):
            return JSONResponse({"detail": f"request larger than {MAX_UPLOAD_BYTES} bytes"},
                                status_code=413)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/health", summary="Liveness: the served generation")
    def health() -> dict:
        return {"status": "ok", "generation": state.current().generation}

    @app.get("/stats", summary="Rows, generation, model, index and uptime")
    def stats() -> dict:
        snap = state.current()
        header = snap.gallery.header
        return {"rows": len(snap.gallery), "generation": snap.generation,
                "dim": snap.gallery.dim, "index": snap.gallery.kind,
                "model": header["reid"].get("model"), "sources": len(snap.sources),
                "has_video": bool(snap.gallery.rows.has_video), "reloads": state.reloads,
                "uptime_s": round(time.time() - state.started, 3),
                "writable": token is not None}

    @app.get("/sources", summary="The gallery's sources and (some of) their frames")
    def sources(limit: Annotated[int, Query(ge=1, le=1000)] = 200) -> dict:
        rows = state.current().gallery.rows
        out = []
        for sid, source in enumerate(rows.sources.tolist()[:limit]):
            frames = np.unique(rows.frames[rows.source_ids == sid])[:limit].tolist()
            out.append({"source": source, "name": Path(source).name, "frames": frames,
                        "video": _is_video(source, frames)})
        return {"sources": out}

    @app.get("/detections", summary="The gallery's boxes in one frame of a source")
    def detections(source: str, frame: int = -1) -> dict:
        snap = _snap_with(state, source)
        return {"source": source, "frame": frame,
                "boxes": _frame_rows(snap, source, frame)[1].round(2).tolist()}

    @app.get("/frames", summary="A gallery frame as JPEG, its gallery boxes drawn",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def frames(source: str, frame: int = -1, boxes: bool = True, box: str | None = None,
               ) -> Response:
        snap = _snap_with(state, source)
        rgb = _frame(source, frame).copy()
        if boxes:
            for b in _frame_rows(snap, source, frame)[1]:
                _rect(rgb, b, (0, 200, 0), 1)
        if box:
            _rect(rgb, _parse_box(box, rgb), (255, 40, 40), 2)
        return _jpeg(rgb)

    @app.get("/crops/{row}", summary="Thumbnail of one gallery row's detection (JPEG)",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
    def crops(row: int, height: Annotated[int, Query(ge=16, le=512)] = 128) -> Response:
        rows = state.current().gallery.rows
        if not 0 <= row < len(rows):
            raise HTTPException(404, f"row {row} is not in the gallery")
        source = str(rows.sources[rows.source_ids[row]])
        rgb = _frame(source, int(rows.frames[row]))
        crop = crop_box(rgb, check_box(rows.boxes[row], rgb.shape[1], rgb.shape[0]))
        scale = height / max(1, crop.shape[0])
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * scale)), height))
        return _jpeg(crop)

    @app.get("/video", summary="A gallery video file (supports HTTP range requests)",
             response_class=FileResponse)
    def video(source: str) -> FileResponse:
        _snap_with(state, source)
        path = Path(source)
        if not path.is_file() or path.suffix.lower() not in VIDEO_TYPES:
            raise HTTPException(404, "not a video file of this gallery")
        return FileResponse(path, media_type=VIDEO_TYPES[path.suffix.lower()])

    @app.post("/query", summary="Rank gallery detections (or sightings) by similarity")
    async def query(
        image: Annotated[UploadFile | None, File(description="query picture")] = None,
        source: Annotated[str | None, Form(description="or: a gallery source ...")] = None,
        frame: Annotated[int, Form(description="... and its frame (-1: an image)")] = -1,
        box: Annotated[str | None, Form(description="x1,y1,x2,y2; none: the whole picture")
                       ] = None,
        top_k: Annotated[int, Form(ge=1, le=MAX_TOP_K)] = 10,
        mode: Annotated[Literal["auto", "frames", "sightings"], Form()] = "auto",
        gap: Annotated[float | None, Form(gt=0, le=3600)] = None,
        expand: Annotated[str | None, Form(description="rows marked 'same person': comma "
                                           "separated; the query is their mean embedding")
                          ] = None,
        t_min: Annotated[float | None, Form(description="video time filter, seconds")] = None,
        t_max: Annotated[float | None, Form()] = None,
    ) -> dict:
        data = await _read_upload(image) if image is not None else None
        return await _run(_answer, state, data, source, frame, box, top_k, mode, gap, expand,
                          t_min, t_max)

    @app.post("/add", summary="Add a picture's people to the gallery (needs --token)")
    async def add(
        image: Annotated[UploadFile, File(description="picture to add")],
        boxes: Annotated[str, Form(description="x1,y1,x2,y2 boxes separated by ';'")],
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict:
        if token is None:
            raise HTTPException(403, "the gallery is read-only (start the server with --token)")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong token (Authorization: Bearer TOKEN)")
        data = await _read_upload(image)
        return await _run(_add, state, write_lock, data, boxes)

    return app


async def _run(fn, *args):
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


async def _read_upload(upload: UploadFile) -> bytes:
    data = await upload.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise HTTPException(413, f"upload larger than {MAX_UPLOAD_BYTES} bytes")
    return data


def _answer(state: GalleryState, data: bytes | None, source: str | None, frame: int,
            box: str | None, top_k: int, mode: str, gap: float | None, expand: str | None,
            t_min: float | None, t_max: float | None) -> dict:
    snap = state.current()  # one generation for the whole request
    t0 = time.perf_counter()
    if (data is None) == (source is None):
        raise PsearchError("give either an image upload or a gallery source (and frame)")
    if data is not None:
        rgb = decode_upload(data)
    else:
        _check_source(snap, source)
        rgb = _frame(source, frame)
    query_box = None if not box else _parse_box(box, rgb)
    embedding = snap.search.embed(rgb, None if query_box is None else [query_box])
    if expand:
        rows = _parse_rows(expand)
        vectors = np.concatenate([_unit(embedding), _unit(row_vectors(snap.gallery, rows))])
        embedding = vectors.mean(0, keepdims=True)
    t1 = time.perf_counter()
    gallery = snap.gallery
    grouped = mode == "sightings" or (mode == "auto" and gallery.rows.has_video)
    filtered = t_min is not None or t_max is not None
    k = min(len(gallery), top_k * 20) if filtered and not grouped else top_k
    results = (snap.search.search_sightings(embedding, k, gap)[0] if grouped
               else snap.search.search(embedding, k)[0])
    if filtered:
        lo, hi = (-np.inf if t_min is None else t_min), (np.inf if t_max is None else t_max)
        if grouped:
            results = [s for s in results if s.is_video and s.end >= lo and s.start <= hi]
        else:
            times = gallery.rows.times
            results = [m for m in results if np.isfinite(times[m.row]) and
                       lo <= times[m.row] <= hi][:top_k]
    items = []
    for rank, r in enumerate(results, 1):
        item = r.to_dict()
        item["rank"] = rank
        item["video"] = _is_video(r.source, [r.best.frame if grouped else r.frame])
        if grouped and item["video"]:
            item["track"] = _track(gallery.rows, r)
        items.append(item)
    return {"generation": snap.generation, "rows": len(gallery),
            "mode": "sightings" if grouped else "frames",
            "query": {"box": None if query_box is None else [float(v) for v in query_box],
                      "source": source, "frame": frame if source else None},
            "results": items, "embed_ms": round(1000 * (t1 - t0), 2),
            "search_ms": round(1000 * (time.perf_counter() - t1), 2)}


def _add(state: GalleryState, lock: threading.Lock, data: bytes, boxes: str) -> dict:
    from psearch.gallery.rows import Rows
    from psearch.gallery.store import Gallery

    rgb = decode_upload(data)
    parsed = np.stack([_parse_box(b, rgb) for b in boxes.split(";") if b.strip()])
    with lock:
        snap = state.current()
        vectors = snap.search.embed(rgb, parsed)
        digest = hashlib.sha256(data).hexdigest()[:16]
        path = state.directory.resolve() / "uploads" / f"{digest}.png"
        if not path.is_file():
            write_image(path, rgb)
        n = len(parsed)
        rows = Rows.from_columns([str(path)] * n, np.full(n, -1), parsed, np.ones(n), [""] * n)
        gallery = Gallery.load(state.directory)
        gallery.add(vectors, rows, reid=gallery.header["reid"], inputs=[{"upload": str(path)}])
        gallery.save(state.directory)
        generation = int(gallery.header["generation"])
    state.current()
    return {"added": n, "rows": len(gallery), "generation": generation}


def _track(rows, sighting, limit: int = 2000) -> list[dict]:
    """The sighting's box in each frame from start to end (for the video overlay): from the best
    hit outwards, in each frame the gallery box whose centre is nearest the previous one's."""
    sid = int(np.searchsorted(rows.sources, sighting.source))
    keep = np.flatnonzero((rows.source_ids == sid) & (rows.frames >= sighting.start_frame)
                          & (rows.frames <= sighting.end_frame))[: limit * 4]
    frames, boxes, times = rows.frames[keep], rows.boxes[keep], rows.times[keep]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    track = {}
    best = sighting.best.frame
    for direction in (range(best, sighting.end_frame + 1),
                      range(best, sighting.start_frame - 1, -1)):
        last = (np.asarray(sighting.best.box[:2]) + np.asarray(sighting.best.box[2:])) / 2
        for f in direction:
            here = np.flatnonzero(frames == f)
            if here.size:
                j = here[np.argmin(np.linalg.norm(centre[here] - last, axis=1))]
                last = centre[j]
                t = float(times[j]) if np.isfinite(times[j]) else None
                track[f] = {"frame": int(f), "time": t,
                            "box": [round(float(v), 1) for v in boxes[j]]}
    return [track[f] for f in sorted(track)][:limit]


def _snap_with(state: GalleryState, source: str) -> Snapshot:
    snap = state.current()
    _check_source(snap, source)
    return snap


def _check_source(snap: Snapshot, source: str) -> None:
    if source not in snap.sources:
        raise HTTPException(404, "not a source of this gallery")


def _frame_rows(snap: Snapshot, source: str, frame: int) -> tuple[np.ndarray, np.ndarray]:
    rows = snap.gallery.rows
    sid = int(np.searchsorted(rows.sources, source))
    keep = np.flatnonzero((rows.source_ids == sid) & (rows.frames == frame))
    return keep, rows.boxes[keep]


@lru_cache(maxsize=64)
def _frame(source: str, frame: int) -> np.ndarray:
    try:
        return read_source_frame(source, frame)
    except PsearchError as exc:
        raise HTTPException(404, str(exc).splitlines()[0]) from None


def _is_video(source: str, frames: list[int]) -> bool:
    return Path(source).suffix.lower() in VIDEO_TYPES and any(f >= 0 for f in frames)


def _parse_box(text: str, rgb: np.ndarray) -> np.ndarray:
    return check_box(parse_box(text, "box"), rgb.shape[1], rgb.shape[0])


def _parse_rows(text: str) -> list[int]:
    try:
        rows = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PsearchError("expand: expected comma-separated gallery row numbers") from None
    if not rows or len(rows) > 100:
        raise PsearchError("expand: give 1 to 100 gallery rows")
    return rows


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32).reshape(len(v), -1)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _rect(rgb: np.ndarray, box: np.ndarray, colour: tuple[int, int, int], width: int) -> None:
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    cv2.rectangle(rgb, (x1, y1), (x2, y2), colour, width)


def _jpeg(rgb: np.ndarray) -> Response:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise PsearchError("cannot encode the frame as JPEG")
    return Response(buf.tobytes(), media_type="image/jpeg")
