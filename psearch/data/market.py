"""Market-1501 loader: a re-ID crop dataset (Zheng et al., ICCV 2015).

Layout read::

    ROOT/bounding_box_train/   training crops
    ROOT/bounding_box_test/    gallery crops
    ROOT/query/                query crops
    ROOT/gt_bbox/              optional hand-drawn crops (counted, not used by the protocol)

Every crop is named ``PPPP_cCsS_FFFFFF_NN.jpg``: person id, camera, sequence, frame, box index
in that frame, e.g. ``0002_c1s1_000451_03.jpg``. In the gallery, person id ``-1`` marks a junk
crop (a poor box: ignored by the protocol) and ``0000`` a distractor (a false detection: always
a wrong match). Other files (Market-1501 ships ``Thumbs.db`` files) are ignored.

Each crop becomes an ``ImageRecord`` named ``<folder>/<file>`` with one box covering the whole
image (its size read from the file header; nothing is decoded), its pid and camera; queries are
``QueryRecord``s on ``dataset.query_images``. Junk keeps ``UNLABELED_PID`` (-1), distractors
``DISTRACTOR_PID`` (0). Training crops with pid -1 or 0 become unlabeled (``UNLABELED_PID``);
query crops with them are skipped. Both are counted in the notes.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from psearch.core.errors import PsearchError
from psearch.core.media import IMAGE_SUFFIXES
from psearch.data.annotations import UNLABELED_PID, ImageRecord, PersonSearchDataset, QueryRecord

TRAIN_DIR, GALLERY_DIR, QUERY_DIR = "bounding_box_train", "bounding_box_test", "query"
GT_DIR = "gt_bbox"
PARTS = (TRAIN_DIR, GALLERY_DIR, QUERY_DIR)
JUNK_PID = UNLABELED_PID
"""Person id of a junk crop (the files' ``-1``): ignored by the re-ID protocol."""
DISTRACTOR_PID = 0
"""Person id of a distractor crop (the files' ``0000``): never a correct match."""
NAME = re.compile(r"^(-1|\d+)_c(\d+)s(\d+)_(\d+)_(\d+)$")
NAME_EXAMPLE = "PPPP_cCsS_FFFFFF_NN.jpg, e.g. 0002_c1s1_000451_03.jpg"
HEADER_THREADS = 8


def is_market(root: Path) -> bool:
    """Whether ``root`` looks like a Market-1501 tree (has any of its three crop folders)."""
    root = Path(root)
    return any((root / part).is_dir() for part in PARTS)


def parse_name(name: str, where: str | Path = "") -> tuple[int, int]:
    """(pid, camera) of a crop file name ``PPPP_cCsS_FFFFFF_NN.jpg``; ``PsearchError`` if the
    name does not follow the convention."""
    match = NAME.match(Path(name).stem)
    if match is None:
        place = f"{where}: " if where else ""
        raise PsearchError(f"{place}file name {name!r} is not a Market-1501 crop name "
                           f"({NAME_EXAMPLE})")
    return int(match.group(1)), int(match.group(2))


def list_crops(folder: Path) -> list[str]:
    """Image files of ``folder``, sorted by name."""
    return sorted(n for n in os.listdir(folder) if Path(n).suffix.lower() in IMAGE_SUFFIXES)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header (no decoding); ``PsearchError`` if unreadable."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError):
        raise PsearchError(f"{path}: cannot read the image header") from None


def read_part(root: Path, part: str, split: str) -> list[ImageRecord]:
    """One record per crop of ``root/part``: a box covering the crop, its pid and camera."""
    folder = root / part
    names = list_crops(folder)
    if not names:
        raise PsearchError(f"{folder}: no crop images ({NAME_EXAMPLE})")
    parsed = [parse_name(n, folder) for n in names]
    with ThreadPoolExecutor(HEADER_THREADS) as pool:
        sizes = list(pool.map(image_size, [folder / n for n in names]))
    return [
        ImageRecord(f"{part}/{name}", folder / name, [[0, 0, w, h]], [pid], camera, split)
        for name, (pid, camera), (w, h) in zip(names, parsed, sizes, strict=True)
    ]


def load_market(root: str | os.PathLike, notes: list[str] | None = None) -> PersonSearchDataset:
    """Load a Market-1501 tree (see the module docstring); facts go to ``notes``."""
    root = Path(root)
    notes = [] if notes is None else notes
    missing = [part for part in PARTS if not (root / part).is_dir()]
    if missing:
        raise PsearchError(f"{root / missing[0]}: Market-1501 folder not found (a Market-1501 "
                           f"dataset has {', '.join(p + '/' for p in PARTS)})")
    train = read_part(root, TRAIN_DIR, "train")
    gallery = read_part(root, GALLERY_DIR, "test")
    query_images = read_part(root, QUERY_DIR, "test")

    non_person = [r for r in train if int(r.pids[0]) in (JUNK_PID, DISTRACTOR_PID)]
    for record in non_person:
        record.pids[:] = UNLABELED_PID
    if non_person:
        notes.append(f"{TRAIN_DIR}: {len(non_person)} junk/distractor crops used as unlabeled")
    queries = [QueryRecord(r.name, r.boxes[0], int(r.pids[0]), r.camera) for r in query_images
               if int(r.pids[0]) not in (JUNK_PID, DISTRACTOR_PID)]
    if len(queries) < len(query_images):
        notes.append(f"{QUERY_DIR}: {len(query_images) - len(queries)} junk/distractor query "
                     "crops skipped")
    gallery_pids = np.array([int(r.pids[0]) for r in gallery])
    notes.append(f"{GALLERY_DIR}: {int((gallery_pids == JUNK_PID).sum())} junk and "
                 f"{int((gallery_pids == DISTRACTOR_PID).sum())} distractor crops")
    if (root / GT_DIR).is_dir():
        notes.append(f"{GT_DIR}: {len(list_crops(root / GT_DIR))} hand-drawn crops "
                     "(not used by the standard protocol)")
    return PersonSearchDataset(root.name or str(root), root, train, gallery, queries,
                               crops=True, query_images=query_images)
