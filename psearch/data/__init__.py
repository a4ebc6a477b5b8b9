"""psearch.data: the annotation model and the dataset loaders (imported when first used).

>>> from psearch.data import load_dataset
>>> ds = load_dataset("CUHK-SYSU/")            # or fmt="cuhk" | "prw" | "folder" | "market"
>>> ds.train[0].boxes, ds.train[0].pids       # float32 [N, 4] x1y1x2y2, int64 [N] (-1 unlabeled)
>>> ds.queries[0], ds.cuhk_protocols[100][0]  # CUHK-SYSU: gallery of query 0 in TestG100
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from psearch.core.errors import PsearchError
from psearch.data.annotations import (
    SPLITS,
    UNLABELED_PID,
    GalleryList,
    ImageRecord,
    PersonSearchDataset,
    QueryRecord,
)

FORMATS = ("cuhk", "prw", "folder", "market")

__all__ = [
    "FORMATS",
    "SPLITS",
    "UNLABELED_PID",
    "GalleryList",
    "ImageRecord",
    "PersonSearchDataset",
    "QueryRecord",
    "detect_format",
    "load_dataset",
]

log = logging.getLogger(__name__)


def detect_format(root: str | os.PathLike) -> str:
    """The format of the dataset at ``root``, judged by the files present.

    cuhk: ``annotation/Images.mat``; prw: ``frame_test.mat`` and ``annotations/``;
    folder: ``annotations.json`` or ``annotations.csv``; market: ``bounding_box_test/``,
    ``query/`` or ``bounding_box_train/``.
    """
    from psearch.data.cuhk import is_cuhk
    from psearch.data.folder import is_folder
    from psearch.data.market import is_market
    from psearch.data.prw import is_prw

    root = Path(root)
    if not root.is_dir():
        raise PsearchError(f"{root}: dataset folder not found")
    tests = (("cuhk", is_cuhk), ("prw", is_prw), ("folder", is_folder), ("market", is_market))
    for fmt, test in tests:
        if test(root):
            return fmt
    raise PsearchError(
        f"{root}: not a known dataset (no annotation/Images.mat, frame_test.mat + annotations/, "
        "annotations.json/.csv, or bounding_box_test/ + query/); pass --format"
    )


def load_dataset(
    root: str | os.PathLike, fmt: str = "auto", notes: list[str] | None = None,
    prw_boxes: str = "reference",
) -> PersonSearchDataset:
    """Load a CUHK-SYSU, PRW, folder-format or Market-1501 dataset without decoding its images.

    ``fmt``: "cuhk", "prw", "folder", "market" or "auto" (``detect_format``). Facts worth
    knowing about the files (boxes skipped because w or h <= 0, clipped coordinates, unmatched
    appearances) are appended to ``notes`` if given, else logged as warnings. Bad input raises
    ``PsearchError`` naming the file and the problem. ``prw_boxes``: "reference" (integer
    corners, as SeqNet and its successors read PRW: their published figures use them) or
    "exact" (fractional corners); see ``psearch.data.prw``.
    """
    from psearch.data.cuhk import load_cuhk
    from psearch.data.folder import load_folder
    from psearch.data.market import load_market
    from psearch.data.prw import load_prw

    root = Path(root)
    if not root.is_dir():
        raise PsearchError(f"{root}: dataset folder not found")
    if fmt == "auto":
        fmt = detect_format(root)
    loaders = {"cuhk": load_cuhk, "prw": load_prw, "folder": load_folder, "market": load_market}
    if fmt not in loaders:
        raise PsearchError(
            f"unknown dataset format {fmt!r}; expected one of auto, {', '.join(FORMATS)}"
        )
    collected: list[str] = []
    if fmt == "prw":
        dataset = load_prw(root, collected, boxes=prw_boxes)
    else:
        dataset = loaders[fmt](root, collected)
    if notes is None:
        for note in collected:
            log.warning(note)
    else:
        notes.extend(collected)
    return dataset
