"""The folder format: your own images plus one annotation file. Reader and writer.

Layout::

    ROOT/annotations.json     (or ROOT/annotations.csv, see below)
    ROOT/<image_dir>/...      the images, at the relative paths the annotation file names
    ROOT/protocols.json       optional: CUHK-style galleries (see below)

``annotations.json``::

    {
      "name": "my-cameras",            optional, default: the folder's name
      "image_dir": "images",           optional, default ".": image paths are relative to it
      "images": [
        {"file": "cam1/000001.jpg",    path below image_dir, also the image's name in psearch
         "split": "train",             "train" or "test" (test images form the gallery)
         "camera": 1,                  optional integer, default 0
         "boxes": [[x1, y1, x2, y2], ...],   pixels, optional, default []
         "pids": [7, -1]}              one integer per box, -1 = unlabeled person
      ],
      "queries": [                     optional
        {"image": "cam2/000100.jpg", "box": [x1, y1, x2, y2], "pid": 7}
      ]
    }

Unknown keys are errors (they are usually typos). Image names must be unique, relative and
stay below ``image_dir``. A box with x2 <= x1 or y2 <= y1 is skipped (counted in the load notes).
A query must name a test image and an identity >= 0; its camera is its image's camera.

``annotations.csv`` (used when there is no annotations.json; images are relative to ROOT): header
``file,split,camera,x1,y1,x2,y2,pid``, one row per box; an image without boxes is one row with
x1..pid empty. Rows of one file must agree on split and camera; images keep the order of their
first row. Explicit queries then go in ``queries.csv`` with header ``image,x1,y1,x2,y2,pid``.

Derived queries. An explicit "queries" list (even an empty one) or queries.csv is used as it is.
When no queries are given (no "queries" key, no queries.csv), then for each
identity that appears in at least two test images, in increasing pid order, the query is its
first box in the first test image (in file order) that contains it. Identities seen in one test
image only have nothing to find and get no query.

``protocols.json`` (optional, written when converting from CUHK-SYSU): for each gallery size,
one entry per query in query order::

    {"100": [{"gallery": ["s5.jpg", "s9.jpg", ...],      image names, as in annotations
              "gt": {"s5.jpg": [x1, y1, x2, y2]}}, ...]}  the query person's box, where present
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from psearch.core.errors import PsearchError
from psearch.core.io import atomic_path, write_text_atomic
from psearch.core.progress import progress_bar
from psearch.data.annotations import (
    SPLITS,
    UNLABELED_PID,
    GalleryList,
    ImageRecord,
    PersonSearchDataset,
    QueryRecord,
)

ANNOTATIONS_JSON = "annotations.json"
ANNOTATIONS_CSV = "annotations.csv"
QUERIES_CSV = "queries.csv"
PROTOCOLS_JSON = "protocols.json"
CSV_COLUMNS = ("file", "split", "camera", "x1", "y1", "x2", "y2", "pid")
QUERY_CSV_COLUMNS = ("image", "x1", "y1", "x2", "y2", "pid")
IMAGE_KEYS = {"file", "split", "camera", "boxes", "pids"}
QUERY_KEYS = {"image", "box", "pid"}
TOP_KEYS = {"name", "image_dir", "images", "queries"}


def is_folder(root: Path) -> bool:
    """Whether ``root`` holds a folder-format annotation file."""
    root = Path(root)
    return (root / ANNOTATIONS_JSON).is_file() or (root / ANNOTATIONS_CSV).is_file()


class _Image:
    """One image entry as parsed, before validation against the files."""

    def __init__(
        self, file: str, split: str, camera: int, boxes: np.ndarray, pids: np.ndarray
    ) -> None:
        self.file, self.split, self.camera, self.boxes, self.pids = file, split, camera, boxes, pids


def load_folder(root: str | os.PathLike, notes: list[str] | None = None) -> PersonSearchDataset:
    """Load a folder-format dataset (module docstring). Skipped boxes are counted in ``notes``."""
    root = Path(root)
    notes = [] if notes is None else notes
    if (root / ANNOTATIONS_JSON).is_file():
        source = root / ANNOTATIONS_JSON
        name, image_dir, images, raw_queries = _parse_json(source)
    elif (root / ANNOTATIONS_CSV).is_file():
        source = root / ANNOTATIONS_CSV
        name, image_dir = root.name, "."
        images = _parse_csv(source)
        raw_queries = (
            _parse_queries_csv(root / QUERIES_CSV) if (root / QUERIES_CSV).is_file() else None
        )
    else:
        raise PsearchError(f"{root}: no {ANNOTATIONS_JSON} or {ANNOTATIONS_CSV}")

    base = root / image_dir
    missing = [im.file for im in images if not (base / im.file).is_file()]
    if missing:
        raise PsearchError(
            f"{source}: {len(missing)} of {len(images)} image files are missing under {base} "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})"
        )
    skipped = 0
    records = []
    for im in images:
        valid = (im.boxes[:, 2] > im.boxes[:, 0]) & (im.boxes[:, 3] > im.boxes[:, 1])
        skipped += int((~valid).sum())
        records.append(
            ImageRecord(
                im.file, base / im.file, im.boxes[valid], im.pids[valid], im.camera, im.split
            )
        )
    if skipped:
        notes.append(f"{source}: skipped {skipped} boxes with x2 <= x1 or y2 <= y1")

    by_name = {r.name: r for r in records}
    gallery = [r for r in records if r.split == "test"]
    if raw_queries is None:
        queries = derive_queries(gallery)
    else:
        queries = [_check_query(q, by_name, where) for q, where in raw_queries]
    protocols = _read_protocols(root / PROTOCOLS_JSON, len(queries), by_name)
    return PersonSearchDataset(
        name=name or root.name or "folder",
        root=root,
        train=[r for r in records if r.split == "train"],
        gallery=gallery,
        queries=queries,
        cuhk_protocols=protocols,
    )


def derive_queries(gallery: list[ImageRecord]) -> list[QueryRecord]:
    """One query per identity seen in >= 2 test images: its first box in its first test image."""
    first: dict[int, tuple[ImageRecord, int]] = {}
    images_of: dict[int, int] = {}
    for record in gallery:
        pids, index = np.unique(record.pids, return_index=True)
        for pid, j in zip(pids.tolist(), index.tolist(), strict=True):
            if pid != UNLABELED_PID:
                first.setdefault(pid, (record, j))
                images_of[pid] = images_of.get(pid, 0) + 1
    return [
        QueryRecord(
            image=first[pid][0].name,
            box=first[pid][0].boxes[first[pid][1]],
            pid=pid,
            camera=first[pid][0].camera,
        )
        for pid in sorted(first)
        if images_of[pid] >= 2
    ]


# --- parsing ---------------------------------------------------------------------------------


def _parse_json(path: Path) -> tuple[str | None, str, list[_Image], list[tuple[dict, str]] | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PsearchError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PsearchError(f"{path}: cannot read ({exc})") from None
    if not isinstance(data, dict):
        raise PsearchError(f"{path}: expected a JSON object with an 'images' list")
    _no_unknown_keys(data, TOP_KEYS, str(path))
    images_data = data.get("images")
    if not isinstance(images_data, list):
        raise PsearchError(f"{path}: 'images' must be a list")
    image_dir = data.get("image_dir", ".")
    if not isinstance(image_dir, str):
        raise PsearchError(f"{path}: 'image_dir' must be a string")
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise PsearchError(f"{path}: 'name' must be a string")
    images = []
    for i, entry in enumerate(images_data):
        where = f"{path}: images[{i}]"
        if not isinstance(entry, dict):
            raise PsearchError(f"{where}: expected an object")
        _no_unknown_keys(entry, IMAGE_KEYS, where)
        file = _relative_name(entry.get("file"), f"{where}.file")
        where = f"{path}: image {file!r}"
        split = entry.get("split")
        if split not in SPLITS:
            raise PsearchError(f"{where}: split must be 'train' or 'test', got {split!r}")
        camera = _integer(entry.get("camera", 0), f"{where}: camera")
        boxes = _boxes(entry.get("boxes", []), f"{where}: boxes")
        pids = np.array(
            [_integer(p, f"{where}: pids") for p in _list(entry.get("pids", []), f"{where}: pids")]
        )
        if len(pids) != len(boxes):
            raise PsearchError(f"{where}: {len(boxes)} boxes but {len(pids)} pids")
        images.append(_Image(file, split, camera, boxes, _pids(pids, where)))
    _unique(images, path)
    if "queries" not in data:
        return name, image_dir, images, None
    queries = []
    for i, entry in enumerate(_list(data["queries"], f"{path}: queries")):
        where = f"{path}: queries[{i}]"
        if not isinstance(entry, dict):
            raise PsearchError(f"{where}: expected an object")
        _no_unknown_keys(entry, QUERY_KEYS, where)
        queries.append((entry, where))
    return name, image_dir, images, queries


def _parse_csv(path: Path) -> list[_Image]:
    rows = _read_csv(path, CSV_COLUMNS)
    grouped: dict[str, tuple[str, int, list, list, str]] = {}
    for number, row in rows:
        where = f"{path}: line {number}"
        file = _relative_name(row["file"], f"{where}: file")
        split = row["split"]
        if split not in SPLITS:
            raise PsearchError(f"{where}: split must be 'train' or 'test', got {split!r}")
        camera = _integer(row["camera"] or "0", f"{where}: camera")
        entry = grouped.setdefault(file, (split, camera, [], [], where))
        if entry[:2] != (split, camera):
            raise PsearchError(f"{where}: {file!r} rows disagree on split or camera")
        values = [row[c] for c in ("x1", "y1", "x2", "y2", "pid")]
        if all(v == "" for v in values):
            continue
        entry[2].append(_numbers(values[:4], f"{where}: x1..y2"))
        entry[3].append(_integer(values[4], f"{where}: pid"))
    return [
        _Image(
            file, split, camera, _boxes(boxes, where), _pids(np.array(pids, dtype=np.int64), where)
        )
        for file, (split, camera, boxes, pids, where) in grouped.items()
    ]


def _parse_queries_csv(path: Path) -> list[tuple[dict, str]]:
    queries = []
    for number, row in _read_csv(path, QUERY_CSV_COLUMNS):
        where = f"{path}: line {number}"
        box = _numbers([row[c] for c in ("x1", "y1", "x2", "y2")], f"{where}: x1..y2")
        queries.append(
            (
                {"image": row["image"], "box": box, "pid": _integer(row["pid"], f"{where}: pid")},
                where,
            )
        )
    return queries


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise PsearchError(
                    f"{path}: column {missing[0]!r} missing; header must be {','.join(columns)}"
                )
            return [
                (n + 2, {c: (row[c] or "").strip() for c in columns})
                for n, row in enumerate(reader)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PsearchError(f"{path}: cannot read CSV ({exc})") from None


def _check_query(entry: dict, by_name: dict[str, ImageRecord], where: str) -> QueryRecord:
    image = entry.get("image")
    if image not in by_name:
        raise PsearchError(f"{where}: unknown image {image!r}")
    record = by_name[image]
    if record.split != "test":
        raise PsearchError(
            f"{where}: query image {image!r} is a training image; queries must be test images"
        )
    box = _boxes([entry.get("box")], f"{where}: box")[0]
    if box[2] <= box[0] or box[3] <= box[1]:
        raise PsearchError(f"{where}: query box {box.tolist()} has zero area")
    pid = _integer(entry.get("pid"), f"{where}: pid")
    if pid < 0:
        raise PsearchError(f"{where}: a query needs an identity >= 0, got {pid}")
    return QueryRecord(image=image, box=box, pid=pid, camera=record.camera)


def _read_protocols(
    path: Path, n_queries: int, by_name: dict[str, ImageRecord]
) -> dict[int, list[GalleryList]]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as exc:
        raise PsearchError(f"{path}: cannot read JSON ({exc})") from None
    if not isinstance(data, dict):
        raise PsearchError(f"{path}: expected an object mapping gallery size to galleries")
    protocols: dict[int, list[GalleryList]] = {}
    for key, galleries in data.items():
        where = f"{path}: {key!r}"
        if not key.isdigit() or not isinstance(galleries, list):
            raise PsearchError(f"{where}: expected a gallery size mapped to a list of galleries")
        if len(galleries) != n_queries:
            raise PsearchError(f"{where}: {len(galleries)} galleries for {n_queries} queries")
        protocols[int(key)] = [
            _gallery(g, by_name, f"{where}[{k}]") for k, g in enumerate(galleries)
        ]
    return dict(sorted(protocols.items()))


def _gallery(entry: Any, by_name: dict[str, ImageRecord], where: str) -> GalleryList:
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("gallery"), list)
        or not isinstance(entry.get("gt", {}), dict)
    ):
        raise PsearchError(f"{where}: expected {{'gallery': [names], 'gt': {{name: box}}}}")
    names, gt = entry["gallery"], entry.get("gt", {})
    unknown = [n for n in (*names, *gt) if not isinstance(n, str) or n not in by_name]
    if unknown:
        raise PsearchError(f"{where}: unknown image {unknown[0]!r}")
    stray = set(gt) - set(names)
    if stray:
        raise PsearchError(f"{where}: gt names {sorted(stray)[0]!r}, which is not in the gallery")
    boxes = {n: _boxes([b], f"{where}: gt {n!r}")[0] for n, b in gt.items()}
    return [(n, boxes.get(n)) for n in names]


# --- small validators ------------------------------------------------------------------------


def _no_unknown_keys(entry: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise PsearchError(
            f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})"
        )


def _relative_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise PsearchError(f"{where}: expected a relative image path")
    path = PurePosixPath(value.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise PsearchError(
            f"{where}: image path {value!r} must be relative and stay inside the dataset"
        )
    return path.as_posix()


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise PsearchError(f"{where}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise PsearchError(f"{where}: expected an integer, got {value!r}")


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise PsearchError(f"{where}: expected a list")
    return value


def _numbers(values: list[str], where: str) -> list[float]:
    try:
        return [float(v) for v in values]
    except ValueError:
        raise PsearchError(f"{where}: expected numbers, got {values}") from None


def _boxes(value: Any, where: str) -> np.ndarray:
    """A JSON list of [x1, y1, x2, y2] as float32 [N, 4]; PsearchError if it is anything else."""
    value = _list(value, where)
    if not value:
        return np.zeros((0, 4), dtype=np.float32)
    try:
        boxes = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PsearchError(f"{where}: expected a list of [x1, y1, x2, y2] numbers") from None
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise PsearchError(f"{where}: expected a list of [x1, y1, x2, y2], got shape {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise PsearchError(f"{where}: NaN or infinite coordinate")
    return boxes.astype(np.float32)


def _pids(pids: np.ndarray, where: str) -> np.ndarray:
    pids = np.asarray(pids, dtype=np.int64).reshape(-1)
    if (pids < UNLABELED_PID).any():
        raise PsearchError(f"{where}: person ids must be >= 0, or -1 for unlabeled")
    return pids


def _unique(images: list[_Image], path: Path) -> None:
    seen: set[str] = set()
    for im in images:
        if im.file in seen:
            raise PsearchError(f"{path}: image {im.file!r} listed twice")
        seen.add(im.file)


# --- writing ---------------------------------------------------------------------------------


def _plain(boxes: np.ndarray) -> list:
    """float32 boxes as JSON-ready lists with the shortest decimals that read back exactly."""
    shortest = np.asarray(boxes, dtype=np.float32).astype(str).astype(np.float64)
    if shortest.ndim == 1:
        return [int(v) if v.is_integer() else v for v in shortest.tolist()]
    return [[int(v) if v.is_integer() else v for v in row] for row in shortest.tolist()]


def check_output_dir(out: Path) -> None:
    """``PsearchError`` unless ``out`` is missing or an empty folder (nothing gets overwritten)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PsearchError(f"{out}: output folder exists and is not empty; choose a new folder")


def write_folder(
    dataset: PersonSearchDataset,
    out: str | os.PathLike,
    link: bool = False,
    protocol_sizes: Iterable[int] | None = None,
    image_dir: str = "images",
) -> Path:
    """Write ``dataset`` in the folder format under the new folder ``out``; returns the JSON path.

    Images are copied (or hard-linked with ``link``, falling back to a copy across devices) to
    ``out/image_dir/<name>``; ``protocols.json`` holds ``dataset.cuhk_protocols`` (only the
    sizes in ``protocol_sizes`` if given). annotations.json is written last, so an interrupted
    conversion never leaves a folder that loads as complete.
    """
    out = Path(out)
    check_output_dir(out)
    records = [*dataset.train, *dataset.gallery]
    for record in records:
        _relative_name(record.name, f"image {record.name!r}")
    for record in progress_bar(records, desc="writing images", unit="image", enabled=None):
        _place_image(record.path, out / image_dir / record.name, link)
    sizes = list(dataset.cuhk_protocols) if protocol_sizes is None else list(protocol_sizes)
    missing = [n for n in sizes if n not in dataset.cuhk_protocols]
    if missing:
        raise PsearchError(f"{dataset.root}: no gallery protocol of size {missing[0]}")
    if sizes:
        protocols = {
            str(n): [
                {
                    "gallery": [name for name, _ in gallery],
                    "gt": {name: _plain(box) for name, box in gallery if box is not None},
                }
                for gallery in dataset.cuhk_protocols[n]
            ]
            for n in progress_bar(sizes, desc="writing protocols", unit="protocol", enabled=None)
        }
        _write_json_compact(out / PROTOCOLS_JSON, protocols)
    annotations = {
        "name": dataset.name,
        "image_dir": image_dir,
        "images": [
            {
                "file": r.name,
                "split": r.split,
                "camera": int(r.camera),
                "boxes": _plain(r.boxes),
                "pids": r.pids.tolist(),
            }
            for r in records
        ],
        "queries": [
            {"image": q.image, "box": _plain(q.box), "pid": int(q.pid)} for q in dataset.queries
        ],
    }
    write_text_atomic(out / ANNOTATIONS_JSON, _one_entry_per_line(annotations))
    return out / ANNOTATIONS_JSON


def _one_entry_per_line(annotations: dict[str, Any]) -> str:
    """JSON with each image and query on its own line: readable and diffable at any size."""
    parts = []
    for key, value in annotations.items():
        if isinstance(value, list):
            body = ",\n    ".join(json.dumps(v) for v in value)
            parts.append(f'  "{key}": [\n    {body}\n  ]' if value else f'  "{key}": []')
        else:
            parts.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _write_json_compact(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, separators=(",", ":")) + "\n")


def _place_image(source: Path, dest: Path, link: bool) -> None:
    if not source.is_file():
        raise PsearchError(f"{source}: image file not found")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(source, dest)
            return
        except OSError:
            pass  # another device or no hard links: copy instead
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)
