"""CUHK-SYSU loader (see ``/work/shared/specs/datasets.md``).

Layout read::

    ROOT/Image/SSM/<imname>                    every image
    ROOT/annotation/Images.mat                 Img: every image and person box [x y w h]
    ROOT/annotation/pool.mat                   pool: the test image names (train = all others)
    ROOT/annotation/test/train_test/Train.mat  Train: the training identities
    ROOT/annotation/test/train_test/TestG{N}.mat  TestG{N}: queries and galleries of size N

Labels. A box of Images.mat with w or h <= 0 is skipped (counted in the load notes). Every box
starts unlabeled; a training identity's appearances (Train.mat) and a test identity's query box
and gallery boxes (the TestG file with the smallest N) are found in Images.mat by exact equality
of (image, x, y, w, h) and get the identity's number (``'p123'`` -> 123). Appearances that match
no box are counted in the notes. Person.mat is not read.

Protocols. ``dataset.cuhk_protocols`` is a ``CuhkProtocols`` mapping: the smallest TestG file is
read at load time (it gives the queries and the test labels; every larger gallery repeats its
positives), the others on first access, because TestG4000.mat alone holds 11.6M entries.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path

import numpy as np

from psearch.core.errors import PsearchError
from psearch.data.annotations import (
    UNLABELED_PID,
    GalleryList,
    ImageRecord,
    PersonSearchDataset,
    QueryRecord,
)
from psearch.data.matfile import (
    cell_struct,
    elements,
    field,
    load_mat,
    strings,
    to_str,
    xywh,
    xywh_rows,
    xywh_to_xyxy,
)

IMAGE_DIR = Path("Image") / "SSM"
ANNOTATION_DIR = Path("annotation")
PROTOCOL_DIR = ANNOTATION_DIR / "test" / "train_test"
TESTG_FILE = re.compile(r"^TestG(\d+)\.mat$")

BoxKey = tuple[str, float, float, float, float]
"""(image name, x, y, w, h): how Train.mat and TestG boxes are found in Images.mat."""

log = logging.getLogger(__name__)


def is_cuhk(root: Path) -> bool:
    """Whether ``root`` looks like a CUHK-SYSU tree (has ``annotation/Images.mat``)."""
    return (Path(root) / ANNOTATION_DIR / "Images.mat").is_file()


class CuhkProtocols(MutableMapping):
    """Gallery size N -> one ``GalleryList`` per query; each TestG{N}.mat is read on first access.

    Behaves like ``dict[int, list[GalleryList]]``; values can also be set directly.
    """

    def __init__(self, loaders: dict[int, Callable[[], list[GalleryList]]]) -> None:
        self._loaders = dict(sorted(loaders.items()))
        self._loaded: dict[int, list[GalleryList]] = {}

    def __getitem__(self, size: int) -> list[GalleryList]:
        if size not in self._loaded:
            if size not in self._loaders:
                raise KeyError(size)
            self._loaded[size] = self._loaders[size]()
        return self._loaded[size]

    def __setitem__(self, size: int, galleries: list[GalleryList]) -> None:
        self._loaders.setdefault(size, lambda: [])
        self._loaded[size] = galleries

    def __delitem__(self, size: int) -> None:
        del self._loaders[size]
        self._loaded.pop(size, None)

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._loaders))

    def __len__(self) -> int:
        return len(self._loaders)

    def __repr__(self) -> str:
        return f"CuhkProtocols(sizes={list(self)}, loaded={sorted(self._loaded)})"


class _Labeler:
    """Assigns identity numbers to Images.mat boxes found by exact (image, x, y, w, h)."""

    def __init__(self, names: list[str], boxes: list[np.ndarray]) -> None:
        self.pids = [np.full(len(b), UNLABELED_PID, dtype=np.int64) for b in boxes]
        self.index: dict[BoxKey, tuple[int, int]] = {}
        for i, (name, image_boxes) in enumerate(zip(names, boxes, strict=True)):
            for j, row in enumerate(image_boxes.tolist()):
                self.index.setdefault((name, *row), (i, j))
        self.unmatched = 0
        self.conflicts = 0

    def assign(self, image: str, box: np.ndarray, pid: int) -> None:
        """Label the box ``[x y w h]`` of ``image`` with ``pid``; count misses and conflicts."""
        hit = self.index.get((image, *box.tolist()))
        if hit is None:
            self.unmatched += 1
            return
        i, j = hit
        current = self.pids[i][j]
        if current == UNLABELED_PID:
            self.pids[i][j] = pid
        elif current != pid:
            self.conflicts += 1


def load_cuhk(root: str | os.PathLike, notes: list[str] | None = None) -> PersonSearchDataset:
    """Load a CUHK-SYSU tree. Load notes (skipped boxes, unmatched appearances) go to ``notes``."""
    root = Path(root)
    notes = [] if notes is None else notes
    images_mat = root / ANNOTATION_DIR / "Images.mat"
    names, boxes, skipped = _read_images(images_mat)
    if skipped:
        notes.append(f"{images_mat}: skipped {skipped} boxes with w or h <= 0")
    _check_image_files(root / IMAGE_DIR, names, images_mat)
    position = {name: i for i, name in enumerate(names)}

    pool_mat = root / ANNOTATION_DIR / "pool.mat"
    test_names = strings(load_mat(pool_mat, "pool")["pool"], f"{pool_mat}: pool")
    unknown = [n for n in test_names if n not in position]
    if unknown:
        raise PsearchError(f"{pool_mat}: test image {unknown[0]!r} is not in {images_mat.name}")
    is_test = np.zeros(len(names), dtype=bool)
    is_test[[position[n] for n in test_names]] = True

    labeler = _Labeler(names, boxes)
    train_mat = root / PROTOCOL_DIR / "Train.mat"
    for pid, appearances in _read_train(train_mat):
        for image, box in appearances:
            _require_image(image, position, is_test, want_test=False, where=f"{train_mat}: p{pid}")
            labeler.assign(image, box, pid)
    _note_matching(labeler, train_mat, notes)

    protocol_files = _protocol_files(root / PROTOCOL_DIR)
    first_size = min(protocol_files)
    queries, galleries = _read_testg(protocol_files[first_size], first_size)
    where = protocol_files[first_size]
    labeler.unmatched = labeler.conflicts = 0
    for (image, box, pid), gallery in zip(queries, galleries, strict=True):
        _require_image(image, position, is_test, want_test=True, where=f"{where}: query p{pid}")
        labeler.assign(image, box, pid)
        for g_image, g_box in gallery:
            _require_image(
                g_image, position, is_test, want_test=True, where=f"{where}: p{pid} gallery"
            )
            if g_box is not None:
                labeler.assign(g_image, g_box, pid)
    _note_matching(labeler, where, notes)

    records = [
        ImageRecord(
            name=name,
            path=root / IMAGE_DIR / name,
            boxes=xywh_to_xyxy(image_boxes),
            pids=pids,
            camera=0,
            split="test" if test else "train",
        )
        for name, image_boxes, pids, test in zip(names, boxes, labeler.pids, is_test, strict=True)
    ]
    query_records = [QueryRecord(image=i, box=xywh_to_xyxy(b)[0], pid=p) for i, b, p in queries]
    protocols = CuhkProtocols(
        {size: _protocol_loader(path, size, queries) for size, path in protocol_files.items()}
    )
    protocols[first_size] = [_gallery_list(g) for g in galleries]
    return PersonSearchDataset(
        name=root.name or "cuhk-sysu",
        root=root,
        train=[r for r in records if r.split == "train"],
        gallery=[r for r in records if r.split == "test"],
        queries=query_records,
        cuhk_protocols=protocols,
    )


def _read_images(path: Path) -> tuple[list[str], list[np.ndarray], int]:
    """Images.mat -> (names, valid boxes [n, 4] xywh float64 per image, number skipped)."""
    img = load_mat(path, "Img")["Img"]
    imnames = field(img, "imname", f"{path}: Img")
    box_structs = field(img, "box", f"{path}: Img")
    names = [to_str(n, f"{path}: Img({i + 1}).imname") for i, n in enumerate(imnames)]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise PsearchError(f"{path}: image {name!r} listed twice")
        seen.add(name)
    boxes, skipped = [], 0
    for name, structs in zip(names, box_structs, strict=True):
        structs = np.asarray(structs)
        if structs.size == 0:
            rows = np.zeros((0, 4), dtype=np.float64)
        else:
            where = f"{path}: Img {name}"
            rows = xywh_rows(field(structs, "idlocate", f"{where}.box"), where)
        valid = (rows[:, 2] > 0) & (rows[:, 3] > 0)
        skipped += int((~valid).sum())
        boxes.append(rows[valid])
    return names, boxes, skipped


def _check_image_files(image_dir: Path, names: list[str], listed_in: Path) -> None:
    if not image_dir.is_dir():
        raise PsearchError(f"{image_dir}: image folder not found")
    present = set(os.listdir(image_dir))
    missing = [n for n in names if n not in present]
    if missing:
        shown = ", ".join(missing[:3])
        raise PsearchError(
            f"{image_dir}: {len(missing)} of {len(names)} images listed in {listed_in.name} are "
            f"missing ({shown}{', ...' if len(missing) > 3 else ''})"
        )


def _require_image(
    image: str, position: dict[str, int], is_test: np.ndarray, want_test: bool, where: str
) -> None:
    if image not in position:
        raise PsearchError(f"{where}: unknown image {image!r} (not in Images.mat)")
    if bool(is_test[position[image]]) != want_test:
        wanted, actual = ("test", "training") if want_test else ("training", "test")
        raise PsearchError(
            f"{where}: image {image!r} is a {actual} image, expected a {wanted} image"
        )


def _note_matching(labeler: _Labeler, path: Path, notes: list[str]) -> None:
    if labeler.unmatched:
        notes.append(
            f"{path}: {labeler.unmatched} appearances match no box of Images.mat (left unlabeled)"
        )
    if labeler.conflicts:
        notes.append(
            f"{path}: {labeler.conflicts} boxes claimed by two identities (first one kept)"
        )


def _pid(idname: object, where: str) -> int:
    text = to_str(idname, where)
    match = re.fullmatch(r"\D*(\d+)", text)
    if match is None:
        raise PsearchError(f"{where}: identity name {text!r} has no number (expected like 'p123')")
    return int(match.group(1))


def _read_train(path: Path) -> list[tuple[int, list[tuple[str, np.ndarray]]]]:
    """Train.mat -> per identity (pid, [(image name, [x y w h] float64 [4]), ...])."""
    identities = []
    for k, cell in enumerate(elements(load_mat(path, "Train")["Train"])):
        where = f"{path}: Train{{{k + 1}}}"
        person = cell_struct(cell, where)
        if person.size != 1:
            raise PsearchError(f"{where}: expected one struct, got {person.size}")
        pid = _pid(field(person, "idname", where)[0], f"{where}.idname")
        scene = np.asarray(field(person, "scene", where)[0])
        appearances = []
        if scene.size:
            imnames = field(scene, "imname", f"{where}.scene")
            locs = xywh_rows(field(scene, "idlocate", f"{where}.scene"), f"{where}.scene")
            appearances = [
                (to_str(n, f"{where}.scene.imname"), loc)
                for n, loc in zip(imnames, locs, strict=True)
            ]
        identities.append((pid, appearances))
    return identities


def _protocol_files(folder: Path) -> dict[int, Path]:
    if not folder.is_dir():
        raise PsearchError(f"{folder}: protocol folder not found")
    files = {
        int(m.group(1)): folder / m.group(0) for m in map(TESTG_FILE.match, os.listdir(folder)) if m
    }
    if not files:
        raise PsearchError(f"{folder}: no TestG<N>.mat protocol file")
    return dict(sorted(files.items()))


Query = tuple[str, np.ndarray, int]
"""(image name, [x y w h] float64 [4], pid) of a TestG query."""
Gallery = list[tuple[str, "np.ndarray | None"]]
"""(image name, [x y w h] float64 [4] or None) per gallery entry, as the TestG file lists them."""


def _read_testg(path: Path, size: int) -> tuple[list[Query], list[Gallery]]:
    """TestG{size}.mat -> (queries, galleries) in file order."""
    variable = f"TestG{size}"
    entries = elements(load_mat(path, variable)[variable])
    query_structs = field(entries, "Query", f"{path}: {variable}")
    gallery_structs = field(entries, "Gallery", f"{path}: {variable}")
    queries, galleries = [], []
    for k, (query, gallery) in enumerate(zip(query_structs, gallery_structs, strict=True)):
        where = f"{path}: {variable}({k + 1})"
        query = np.asarray(query)
        if query.size != 1:
            raise PsearchError(f"{where}.Query: expected one struct, got {query.size}")
        image = to_str(field(query, "imname", f"{where}.Query")[0], f"{where}.Query.imname")
        box = xywh(field(query, "idlocate", f"{where}.Query")[0], f"{where}.Query.idlocate")
        if box is None:
            raise PsearchError(f"{where}.Query.idlocate: empty query box")
        pid = _pid(field(query, "idname", f"{where}.Query")[0], f"{where}.Query.idname")
        queries.append((image, box, pid))
        gallery = np.asarray(gallery)
        g_names = field(gallery, "imname", f"{where}.Gallery") if gallery.size else []
        g_boxes = field(gallery, "idlocate", f"{where}.Gallery") if gallery.size else []
        galleries.append(
            [
                (to_str(n, f"{where}.Gallery.imname"), xywh(b, f"{where}.Gallery.idlocate"))
                for n, b in zip(g_names, g_boxes, strict=True)
            ]
        )
    return queries, galleries


def _gallery_list(gallery: Gallery) -> GalleryList:
    return [(name, None if box is None else xywh_to_xyxy(box)[0]) for name, box in gallery]


def _protocol_loader(
    path: Path, size: int, queries: list[Query]
) -> Callable[[], list[GalleryList]]:
    """A loader for TestG{size}.mat that checks it lists the same queries as the first file."""

    def load() -> list[GalleryList]:
        log.info("reading %s", path)
        own_queries, galleries = _read_testg(path, size)
        if len(own_queries) != len(queries):
            raise PsearchError(
                f"{path}: {len(own_queries)} queries, the smallest TestG file has {len(queries)}"
            )
        for k, ((image, box, pid), (image0, box0, pid0)) in enumerate(
            zip(own_queries, queries, strict=True)
        ):
            if image != image0 or pid != pid0 or not np.array_equal(box, box0):
                raise PsearchError(
                    f"{path}: query {k + 1} (p{pid} in {image}) differs from the smallest TestG"
                )
        return [_gallery_list(g) for g in galleries]

    return load
