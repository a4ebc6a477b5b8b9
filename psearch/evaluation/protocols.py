"""Which gallery each query is searched in, under the standard protocols.

- CUHK-SYSU (``dataset.cuhk_protocols`` is filled): gallery size N uses the images TestG{N}.mat
  lists for the query, in that order. ``None`` is the "full set": TestG50's list followed by
  every other test image (dataset order) except the query's own image.
- PRW and folder datasets: every test image (dataset order) except the query's own; the ground
  truth in an image is its (first) box with the query's pid. ``cross_camera=True`` also drops the
  images of the query's camera.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from psearch.core.errors import PsearchError
from psearch.data.annotations import UNLABELED_PID, GalleryList, PersonSearchDataset

FULL_SET_BASE = 50
"""The CUHK-SYSU protocol whose lists start the full-set galleries (as in the reference code)."""


@dataclass(frozen=True)
class QueryGallery:
    """One query's gallery, compactly.

    images: int64 [G] rows of ``dataset.gallery`` in protocol order; positives: int64 [P]
    positions in ``images`` of the images that contain the query person; gt_boxes: float32 [P, 4]
    the person's box there (x1, y1, x2, y2).
    """

    images: np.ndarray
    positives: np.ndarray
    gt_boxes: np.ndarray


def is_cuhk(dataset: PersonSearchDataset) -> bool:
    """Whether ``dataset`` is searched with CUHK-SYSU's per-query gallery lists."""
    return bool(dataset.cuhk_protocols)


def iter_query_galleries(
    dataset: PersonSearchDataset, gallery_size: int | None = 100, cross_camera: bool = False
) -> Iterator[QueryGallery]:
    """Yield the ``QueryGallery`` of every query of ``dataset``, in query order.

    ``gallery_size`` selects a CUHK-SYSU protocol (None: the full set); datasets without CUHK
    protocols ignore it. ``cross_camera`` applies to datasets with camera ids (PRW, folders).
    """
    if is_cuhk(dataset):
        if cross_camera:
            raise PsearchError(
                f"{dataset.root}: CUHK-SYSU has no cameras; cross-camera search does not apply"
            )
        return _cuhk_galleries(dataset, gallery_size)
    return _all_image_galleries(dataset, cross_camera)


def query_galleries(
    dataset: PersonSearchDataset, gallery_size: int | None = 100, cross_camera: bool = False
) -> list[GalleryList]:
    """Every query's gallery as ``[(image name, gt box [4] or None), ...]``, in query order.

    See ``iter_query_galleries`` for the arguments; the evaluation itself uses that compact form.
    """
    names = [r.name for r in dataset.gallery]
    galleries = []
    for gallery in iter_query_galleries(dataset, gallery_size, cross_camera):
        entries: GalleryList = [(names[m], None) for m in gallery.images.tolist()]
        for pos, box in zip(gallery.positives.tolist(), gallery.gt_boxes, strict=True):
            entries[pos] = (entries[pos][0], box.copy())
        galleries.append(entries)
    return galleries


def _cuhk_galleries(
    dataset: PersonSearchDataset, gallery_size: int | None
) -> Iterator[QueryGallery]:
    size = FULL_SET_BASE if gallery_size is None else gallery_size
    if size not in dataset.cuhk_protocols:
        available = ", ".join(map(str, sorted(dataset.cuhk_protocols)))
        raise PsearchError(
            f"{dataset.root}: no TestG{size} protocol (available gallery sizes: {available})"
        )
    lists = dataset.cuhk_protocols[size]
    if len(lists) != len(dataset.queries):
        raise PsearchError(
            f"{dataset.root}: TestG{size} lists {len(lists)} queries "
            f"but the dataset has {len(dataset.queries)}"
        )
    index = {r.name: m for m, r in enumerate(dataset.gallery)}
    for query, entries in zip(dataset.queries, lists, strict=True):
        try:
            images = np.array([index[name] for name, _ in entries], dtype=np.int64)
        except KeyError as exc:
            raise PsearchError(
                f"{dataset.root}: TestG{size} lists {exc.args[0]!r}, not a test image"
            ) from None
        positives = np.array(
            [i for i, (_, box) in enumerate(entries) if box is not None], dtype=np.int64
        )
        gt_boxes = np.array(
            [box for _, box in entries if box is not None], dtype=np.float32
        ).reshape(-1, 4)
        if gallery_size is None:
            rest = np.ones(len(dataset.gallery), dtype=bool)
            rest[images] = False
            if query.image in index:
                rest[index[query.image]] = False
            images = np.concatenate([images, np.flatnonzero(rest)])
        yield QueryGallery(images, positives, gt_boxes)


def _all_image_galleries(
    dataset: PersonSearchDataset, cross_camera: bool
) -> Iterator[QueryGallery]:
    gallery = dataset.gallery
    cameras = np.array([r.camera for r in gallery], dtype=np.int64)
    index = {r.name: m for m, r in enumerate(gallery)}
    # Occurrences of every identity: the images (ascending) and its first box in each.
    occurrences: dict[int, tuple[list[int], list[np.ndarray]]] = {}
    for m, record in enumerate(gallery):
        pids, first = np.unique(record.pids, return_index=True)
        for pid, row in zip(pids.tolist(), first.tolist(), strict=True):
            if pid == UNLABELED_PID:
                continue
            images, boxes = occurrences.setdefault(pid, ([], []))
            images.append(m)
            boxes.append(record.boxes[row])
    occ = {
        pid: (np.array(images, dtype=np.int64), np.array(boxes, dtype=np.float32).reshape(-1, 4))
        for pid, (images, boxes) in occurrences.items()
    }
    empty = (np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.float32))
    for query in dataset.queries:
        keep = np.ones(len(gallery), dtype=bool)
        if query.image in index:
            keep[index[query.image]] = False
        if cross_camera:
            keep &= cameras != query.camera
        images = np.flatnonzero(keep)
        occ_images, occ_boxes = occ.get(query.pid, empty)
        present = keep[occ_images]
        positives = np.searchsorted(images, occ_images[present])
        yield QueryGallery(images, positives, occ_boxes[present])
