"""Write a ``PersonSearchDataset`` to disk in the CUHK-SYSU or PRW format.

The layouts are those of ``/work/shared/specs/datasets.md``: MATLAB files with the struct and cell
shapes ``scipy.io.loadmat`` returns for the real datasets, boxes as ``[x y w h]``. Every file is
written atomically. Image files are copied (or hard-linked) from ``record.path`` unless they are
already in place, so the writers serve both the synthetic world and format conversion.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.io

from psearch.core.errors import PsearchError
from psearch.core.io import atomic_path
from psearch.data.annotations import (
    UNLABELED_PID,
    GalleryList,
    ImageRecord,
    PersonSearchDataset,
    QueryRecord,
)

ImageMode = Literal["copy", "link", "skip"]
"""How image files reach the dataset folder: copied, hard-linked (copied across devices), or
left alone ("skip": the caller has already written them in place)."""

CUHK_GALLERY_SIZES = (50, 100)
PRW_UNLABELED_ID = -2
PRW_BOX_VARIABLES = ("box_new", "anno_file", "anno_previous")
"""The variable names PRW annotation files use for the K x 5 box matrix, in lookup order."""
PRW_FRAME_NAME = re.compile(r"^c(\d)s\d+_\d+\.jpg$")


# --------------------------------------------------------------------------------------------
# shared helpers


def xywh_int(boxes: np.ndarray) -> np.ndarray:
    """CUHK-SYSU file boxes: float [N, 4] (x1, y1, x2, y2) -> float64 [N, 4] integer ``[x y w h]``.

    Corners are rounded first so that a box with integer corners is written exactly.
    """
    corners = np.rint(np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
    return np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)


def xywh_float(boxes: np.ndarray) -> np.ndarray:
    """PRW file boxes: float [N, 4] (x1, y1, x2, y2) -> float64 [N, 4] ``[x y w h]``, unrounded."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1).astype(np.float64)


def _savemat(path: Path, variables: dict[str, object]) -> None:
    # A file object, not a name: savemat would append ".mat" to the temporary name.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        scipy.io.savemat(f, variables, do_compression=True, oned_as="row")


def _struct_array(n: int, fields: Sequence[str]) -> np.ndarray:
    """An empty 1 x n MATLAB struct array with ``fields`` in this order."""
    return np.empty((1, n), dtype=[(name, object) for name in fields])


def _cell_column(items: Sequence[object]) -> np.ndarray:
    """An N x 1 MATLAB cell."""
    cell = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        cell[i, 0] = item
    return cell


def _place_images(records: Iterable[ImageRecord], folder: Path, mode: ImageMode) -> None:
    """Copy or link every record's image file to ``folder / record.name`` unless already there."""
    if mode == "skip":
        return
    if mode not in ("copy", "link"):
        raise ValueError(f"unknown image mode {mode!r}; expected 'copy', 'link' or 'skip'")
    for record in records:
        target = folder / record.name
        source = Path(record.path)
        if target.exists() and source.exists() and os.path.samefile(source, target):
            continue
        if not source.is_file():
            raise PsearchError(f"{source}: image file of {record.name!r} not found")
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            if mode == "link":
                tmp.unlink()
                try:
                    os.link(source, tmp)
                except OSError:
                    shutil.copyfile(source, tmp)
            else:
                shutil.copyfile(source, tmp)


def _check_unique_names(dataset: PersonSearchDataset) -> None:
    seen: set[str] = set()
    for record in (*dataset.train, *dataset.gallery):
        if record.name in seen:
            raise PsearchError(f"{dataset.root}: image name {record.name!r} appears twice")
        seen.add(record.name)


# --------------------------------------------------------------------------------------------
# CUHK-SYSU


def make_cuhk_protocols(
    gallery: Sequence[ImageRecord],
    queries: Sequence[QueryRecord],
    sizes: Sequence[int],
    seed: int = 0,
) -> dict[int, list[GalleryList]]:
    """Build TestG{N} galleries: per query, the images with the person first, then distractors.

    Distractors are drawn at random once per query and shared by every size, so the gallery of
    a smaller size is a prefix of the gallery of a larger one. The query's own image is never
    in its gallery. Raises ``PsearchError`` if a size exceeds the test images available.
    """
    names = [r.name for r in gallery]
    position = {name: i for i, name in enumerate(names)}
    largest = max(sizes, default=0)
    if largest > len(names) - 1:
        raise PsearchError(
            f"gallery size {largest} needs at least {largest + 1} test images; "
            f"the dataset has {len(names)}"
        )
    where: dict[int, list[tuple[int, np.ndarray]]] = {}
    for index, record in enumerate(gallery):
        for box, pid in zip(record.boxes, record.pids, strict=True):
            if pid != UNLABELED_PID:
                where.setdefault(int(pid), []).append((index, box))
    rng = np.random.default_rng(seed)
    protocols: dict[int, list[GalleryList]] = {int(n): [] for n in sizes}
    for query in queries:
        positives = [(i, box) for i, box in where.get(query.pid, []) if names[i] != query.image]
        candidate = np.ones(len(names), bool)
        candidate[[i for i, _ in positives]] = False
        if query.image in position:
            candidate[position[query.image]] = False
        others = rng.permutation(np.flatnonzero(candidate))
        for n in protocols:
            if len(positives) > n:
                raise PsearchError(
                    f"query {query.image} pid {query.pid}: {len(positives)} gallery "
                    f"images contain the person, more than gallery size {n}"
                )
            entries: GalleryList = [(names[i], np.asarray(box, np.float32)) for i, box in positives]
            entries += [(names[i], None) for i in others[: n - len(positives)]]
            protocols[n].append(entries)
    return protocols


def _scene(appearances: Sequence[tuple[str, np.ndarray]]) -> np.ndarray:
    """1 x K struct (imname, idlocate, ishard) of one identity's appearances."""
    scene = _struct_array(len(appearances), ("imname", "idlocate", "ishard"))
    for k, (name, box) in enumerate(appearances):
        scene[0, k] = (name, xywh_int(box), 0.0)
    return scene


def _identity_struct(pid: int, appearances: Sequence[tuple[str, np.ndarray]]) -> tuple:
    return (f"p{pid}", float(len(appearances)), _scene(appearances))


def _appearances(records: Iterable[ImageRecord]) -> dict[int, list[tuple[str, np.ndarray]]]:
    """pid -> [(image name, box)] over ``records``, in record order, labeled boxes only."""
    out: dict[int, list[tuple[str, np.ndarray]]] = {}
    for record in records:
        for box, pid in zip(record.boxes, record.pids, strict=True):
            if pid != UNLABELED_PID:
                out.setdefault(int(pid), []).append((record.name, box))
    return out


def write_cuhk(
    dataset: PersonSearchDataset,
    out: str | os.PathLike,
    images: ImageMode = "copy",
    gallery_sizes: Sequence[int] = CUHK_GALLERY_SIZES,
    seed: int = 0,
) -> None:
    """Write ``dataset`` in the CUHK-SYSU layout under ``out``.

    Writes ``Image/SSM/<name>`` (per ``images``), ``annotation/Images.mat``, ``Person.mat``,
    ``pool.mat`` and ``test/train_test/Train.mat`` plus one ``TestG{N}.mat`` per gallery size of
    ``dataset.cuhk_protocols`` (built with ``make_cuhk_protocols(gallery_sizes, seed)`` when the
    dataset has none). Boxes are written as integer ``[x y w h]``. Image names must be plain file
    names: CUHK-SYSU keeps every image in one folder.
    """
    out = Path(out)
    _check_unique_names(dataset)
    records = [*dataset.train, *dataset.gallery]
    for record in records:
        if "/" in record.name or "\\" in record.name:
            raise PsearchError(
                f"{record.path}: image name {record.name!r} has a folder; "
                "CUHK-SYSU images must be plain file names in Image/SSM"
            )
    _place_images(records, out / "Image" / "SSM", images)
    annotation = out / "annotation"

    img = _struct_array(len(records), ("imname", "nAppear", "box"))
    for i, record in enumerate(records):
        box = _struct_array(len(record.boxes), ("idlocate",))
        for k, xywh in enumerate(xywh_int(record.boxes)):
            box[0, k] = (xywh[None, :],)
        img[0, i] = (record.name, float(len(record.boxes)), box)
    _savemat(annotation / "Images.mat", {"Img": img})

    everyone = _appearances(records)
    person = _struct_array(len(everyone), ("idname", "nAppear", "scene"))
    for i, pid in enumerate(sorted(everyone)):
        person[0, i] = _identity_struct(pid, everyone[pid])
    _savemat(annotation / "Person.mat", {"Person": person})

    _savemat(annotation / "pool.mat", {"pool": _cell_column([r.name for r in dataset.gallery])})

    train = _appearances(dataset.train)
    cells = []
    for pid in sorted(train):
        one = _struct_array(1, ("idname", "nAppear", "scene"))
        one[0, 0] = _identity_struct(pid, train[pid])
        cells.append(one)
    _savemat(annotation / "test" / "train_test" / "Train.mat", {"Train": _cell_column(cells)})

    protocols = dataset.cuhk_protocols or make_cuhk_protocols(
        dataset.gallery, dataset.queries, gallery_sizes, seed
    )
    for size, galleries in protocols.items():
        if len(galleries) != len(dataset.queries):
            raise PsearchError(
                f"{dataset.root}: protocol TestG{size} has {len(galleries)} "
                f"galleries for {len(dataset.queries)} queries"
            )
        test = _struct_array(len(dataset.queries), ("Query", "Gallery"))
        for q, (query, entries) in enumerate(zip(dataset.queries, galleries, strict=True)):
            head = _struct_array(1, ("imname", "idlocate", "ishard", "idname"))
            head[0, 0] = (query.image, xywh_int(query.box), 0.0, f"p{query.pid}")
            gallery = _struct_array(len(entries), ("imname", "idlocate", "ishard"))
            for k, (name, box) in enumerate(entries):
                gallery[0, k] = (name, np.zeros((1, 0)) if box is None else xywh_int(box), 0.0)
            test[0, q] = (head, gallery)
        _savemat(annotation / "test" / "train_test" / f"TestG{size}.mat", {f"TestG{size}": test})


# --------------------------------------------------------------------------------------------
# PRW


def _format_number(value: np.floating) -> str:
    """Shortest text that reads back as the same float32 (``93``, ``1505.5``)."""
    return np.format_float_positional(np.float32(value), trim="-")


def write_prw(
    dataset: PersonSearchDataset,
    out: str | os.PathLike,
    images: ImageMode = "copy",
    box_variables: Mapping[str, str] | None = None,
) -> None:
    """Write ``dataset`` in the PRW layout under ``out``.

    Writes ``frames/<name>``, ``annotations/<name>.mat`` (``box_new``: K x 5 ``[id x y w h]``,
    id -2 for unlabeled people, coordinates as they are, negative ones included),
    ``frame_train.mat`` / ``frame_test.mat`` (N x 1 cells of names without ``.jpg``),
    ``ID_train.mat`` / ``ID_test.mat`` (sorted 1 x N identity numbers; ``ID_test.mat`` holds
    them as both ``ID_test`` and ``ID_test2``) and ``query_info.txt`` (``id x y w h frame``,
    CRLF line ends). ``box_variables`` maps an image name to the variable name its annotation
    file uses instead of ``box_new`` ("anno_file" or "anno_previous"), as some real files do.
    Image names must look like ``c<camera>s<sequence>_<frame>.jpg``.
    """
    out = Path(out)
    box_variables = box_variables or {}
    _check_unique_names(dataset)
    for record in (*dataset.train, *dataset.gallery):
        if not PRW_FRAME_NAME.match(record.name):
            raise PsearchError(
                f"{record.path}: image name {record.name!r} is not a PRW frame "
                "name like c1s1_000151.jpg"
            )
        variable = box_variables.get(record.name, "box_new")
        if variable not in PRW_BOX_VARIABLES:
            raise ValueError(f"{record.name}: unknown PRW box variable {variable!r}")
        ids = np.where(record.pids == UNLABELED_PID, PRW_UNLABELED_ID, record.pids)
        matrix = np.concatenate([ids[:, None].astype(np.float64), xywh_float(record.boxes)], axis=1)
        _savemat(out / "annotations" / f"{record.name}.mat", {variable: matrix})
    _place_images([*dataset.train, *dataset.gallery], out / "frames", images)

    for split, records in (("train", dataset.train), ("test", dataset.gallery)):
        stems = [r.name[: -len(".jpg")] for r in records]
        _savemat(out / f"frame_{split}.mat", {f"img_index_{split}": _cell_column(stems)})
        pids = sorted({int(p) for r in records for p in r.pids if p != UNLABELED_PID})
        ids = np.asarray(pids, dtype=np.float64).reshape(1, -1)
        variables = {"ID_train": ids} if split == "train" else {"ID_test": ids, "ID_test2": ids}
        _savemat(out / f"ID_{split}.mat", variables)

    lines = []
    for query in dataset.queries:
        x1, y1, x2, y2 = (np.float32(v) for v in query.box)
        numbers = " ".join(_format_number(v) for v in (x1, y1, x2 - x1, y2 - y1))
        lines.append(f"{query.pid} {numbers} {query.image.removesuffix('.jpg')}\r\n")
    with atomic_path(out / "query_info.txt") as tmp:
        tmp.write_bytes("".join(lines).encode("utf-8"))  # bytes: keep the CRLF line ends
