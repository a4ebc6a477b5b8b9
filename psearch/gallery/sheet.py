"""The result sheet: the query crop, then each match's frame with its box drawn, in a grid.

Every tile is ``TILE_W`` x ``TILE_H`` pixels of picture (resized to fit, centred on grey) over a
``CAPTION_H`` caption band; tiles sit ``MARGIN`` apart, ``COLUMNS`` per row, the query first.
``.html`` writes a self-contained page (pictures inlined as JPEG data URIs) with the same tiles.
Results are ``Match`` objects (one detection each) or ``Sighting`` objects (a run of frames of a
video, drawn as its best frame and captioned with its time span).
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import cv2
import numpy as np

from psearch.core.errors import PsearchError
from psearch.core.io import atomic_path, write_text_atomic
from psearch.core.media import read_source_frame
from psearch.gallery.matches import Match
from psearch.gallery.sightings import Sighting, format_time

TILE_W, TILE_H, CAPTION_H, MARGIN, COLUMNS = 240, 180, 40, 8, 6
BACKGROUND, TILE_BACKGROUND = (255, 255, 255), (64, 64, 64)
BOX_COLOUR, QUERY_COLOUR, TEXT_COLOUR = (0, 220, 0), (255, 160, 0), (0, 0, 0)
SHEET_SUFFIXES = (".png", ".jpg", ".jpeg", ".html")


def sheet_size(n_matches: int) -> tuple[int, int]:
    """(width, height) in pixels of the sheet for ``n_matches`` results plus the query."""
    tiles = n_matches + 1
    cols, rows = min(tiles, COLUMNS), -(-tiles // COLUMNS)
    return cols * (TILE_W + MARGIN) + MARGIN, rows * (TILE_H + CAPTION_H + MARGIN) + MARGIN


def tile_origin(i: int) -> tuple[int, int]:
    """Top-left (x, y) of tile ``i`` (0 is the query)."""
    row, col = divmod(i, COLUMNS)
    return MARGIN + col * (TILE_W + MARGIN), MARGIN + row * (TILE_H + CAPTION_H + MARGIN)


def fit(image: np.ndarray) -> tuple[np.ndarray, float, int, int]:
    """``image`` resized to fit a tile, centred on grey -> (tile [TILE_H, TILE_W, 3], scale,
    x offset, y offset) so that a pixel (x, y) lands at (x * scale + dx, y * scale + dy)."""
    h, w = image.shape[:2]
    scale = min(TILE_W / w, TILE_H / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    tile = np.full((TILE_H, TILE_W, 3), TILE_BACKGROUND, np.uint8)
    dx, dy = (TILE_W - nw) // 2, (TILE_H - nh) // 2
    tile[dy:dy + nh, dx:dx + nw] = cv2.resize(image, (nw, nh), interpolation=interp)
    return tile, scale, dx, dy


def match_tile(match: Match, frames: dict) -> np.ndarray:
    """The match's frame (or its crop file, or grey if neither can be read) with the box drawn."""
    key = (match.source, match.frame)
    if key not in frames:
        try:
            frames[key] = read_source_frame(match.source, match.frame)
        except PsearchError:
            frames[key] = None
    picture = frames[key]
    if picture is None:
        try:
            return fit(read_source_frame(match.crop, -1))[0] if match.crop else _blank()
        except PsearchError:
            return _blank()
    tile, scale, dx, dy = fit(picture)
    x1, y1, x2, y2 = (np.asarray(match.box) * scale + [dx, dy, dx, dy]).round().astype(int)
    cv2.rectangle(tile, (x1, y1), (x2, y2), BOX_COLOUR, 2)
    return tile


Result = Match | Sighting


def best_match(result: Result) -> Match:
    """The detection a result tile shows."""
    return result.best if isinstance(result, Sighting) else result


def captions(results: list[Result]) -> list[tuple[str, str]]:
    """Two caption lines per tile, query first."""
    lines = [("query", "")]
    for r in results:
        if isinstance(r, Sighting) and r.is_video:
            lines.append((f"#{r.rank} {r.score:.3f} {r.frames} fr {Path(r.source).name}",
                          r.span))
            continue
        m = best_match(r)
        where = Path(m.source).name + ("" if m.frame < 0 else f":{m.frame}")
        lines.append((f"#{r.rank}  score {r.score:.3f}", where))
    return lines


def render_sheet(query_crop: np.ndarray, matches: list[Result]) -> np.ndarray:
    """The sheet as an RGB uint8 array [H, W, 3] (size ``sheet_size(len(matches))``)."""
    width, height = sheet_size(len(matches))
    sheet = np.full((height, width, 3), BACKGROUND, np.uint8)
    frames: dict = {}
    tiles = [fit(query_crop)[0]] + [match_tile(best_match(m), frames) for m in matches]
    for i, (tile, (line1, line2)) in enumerate(zip(tiles, captions(matches), strict=True)):
        x, y = tile_origin(i)
        sheet[y:y + TILE_H, x:x + TILE_W] = tile
        if i == 0:
            cv2.rectangle(sheet, (x, y), (x + TILE_W - 1, y + TILE_H - 1), QUERY_COLOUR, 2)
        for n, line in enumerate((line1, line2)):
            cv2.putText(sheet, _fit_text(line), (x + 2, y + TILE_H + 16 + 18 * n),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.45, TEXT_COLOUR, 1, cv2.LINE_AA)
    return sheet


def write_sheet(query_crop: np.ndarray, matches: list[Result], out: str | os.PathLike) -> Path:
    """Write the sheet of ``matches`` (or sightings) for RGB ``query_crop`` to ``out`` (.png,
    .jpg or .html)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in SHEET_SUFFIXES:
        raise PsearchError(f"{out}: the result sheet must end in {', '.join(SHEET_SUFFIXES)}")
    if suffix == ".html":
        write_text_atomic(out, sheet_html(query_crop, matches))
        return out
    ok, data = cv2.imencode(suffix, cv2.cvtColor(render_sheet(query_crop, matches),
                                                 cv2.COLOR_RGB2BGR))
    if not ok:
        raise PsearchError(f"{out}: cannot encode the sheet")
    with atomic_path(out) as tmp:
        tmp.write_bytes(data.tobytes())
    return out


def sheet_html(query_crop: np.ndarray, matches: list[Result]) -> str:
    """A self-contained HTML page with the query tile and one figure per match or sighting."""
    frames: dict = {}
    figures = [_figure(fit(query_crop)[0], ["query"])]
    for r in matches:
        m = best_match(r)
        box = ", ".join(f"{v:.0f}" for v in m.box)
        where = m.source if m.frame < 0 else f"{m.source} frame {m.frame}"
        lines = [f"#{r.rank} score {r.score:.3f}", where, f"box {box}"]
        if isinstance(r, Sighting) and r.is_video:
            lines = [f"#{r.rank} score {r.score:.3f}", r.source,
                     f"{r.span} ({r.frames} frames)",
                     f"best: frame {m.frame} at {format_time(r.best_time)}, box {box}"]
        figures.append(_figure(match_tile(m, frames), lines))
    style = ("body{font-family:sans-serif}main{display:flex;flex-wrap:wrap;gap:8px}"
             f"figure{{margin:0;width:{TILE_W}px}}"
             "figcaption{font-size:12px;word-break:break-all}")
    body = "\n".join(figures)
    return ("<!doctype html>\n<html><head><meta charset='utf-8'><title>psearch results</title>"
            f"<style>{style}</style></head><body><h1>psearch results</h1>"
            f"<main>\n{body}\n</main></body></html>\n")


def _figure(tile: np.ndarray, lines: list[str]) -> str:
    """One tile as an inline JPEG with its caption lines (the first in bold)."""
    _, jpeg = cv2.imencode(".jpg", cv2.cvtColor(tile, cv2.COLOR_RGB2BGR))
    data = base64.b64encode(jpeg.tobytes()).decode("ascii")
    title, *rest = (html.escape(line) for line in lines)
    caption = "<br>".join([f"<b>{title}</b>", *rest])
    return (f"<figure><img src='data:image/jpeg;base64,{data}' alt='{title}'>"
            f"<figcaption>{caption}</figcaption></figure>")


def _blank() -> np.ndarray:
    return np.full((TILE_H, TILE_W, 3), TILE_BACKGROUND, np.uint8)


def _fit_text(text: str, max_chars: int = 34) -> str:
    return text if len(text) <= max_chars else "..." + text[-(max_chars - 3):]
