"""The standard evaluation of a dataset: its search protocols and the detection protocol."""

from __future__ import annotations

from collections.abc import Sequence

from psearch.core.errors import PsearchError
from psearch.data.annotations import PersonSearchDataset
from psearch.evaluation.detection import evaluate_detection
from psearch.evaluation.metrics import DET_THRESH
from psearch.evaluation.protocols import FULL_SET_BASE, is_cuhk
from psearch.evaluation.results import SearchResults
from psearch.evaluation.search import TOPK, evaluate_search

CUHK_GALLERY_SIZES = (50, 100)
"""Gallery sizes reported by default on CUHK-SYSU (100 is the headline figure)."""


def search_protocols(
    dataset: PersonSearchDataset,
    gallery_sizes: Sequence[int] | None = None,
    full_set: bool = False,
) -> dict[str, dict]:
    """Name -> ``evaluate_search`` keyword arguments of every search protocol to report.

    CUHK-SYSU: ``gallery-N`` for each of ``gallery_sizes`` (default: 50 and 100, those the dataset
    has) and ``full-set`` if asked; a size the dataset lacks raises ``PsearchError`` up front.
    Other datasets: ``all-cameras``, and ``cross-camera`` when the test images come from more
    than one camera. Crop datasets (Market-1501) have no search protocol: ``PsearchError``.
    """
    if dataset.crops:
        raise PsearchError(
            f"{dataset.root}: a crop dataset (Market-1501) has no scenes to search; it is scored "
            "with the re-ID protocol (psearch train-reid, psearch.evaluation.market)"
        )
    if not is_cuhk(dataset):
        if gallery_sizes or full_set:
            raise PsearchError(
                f"{dataset.root}: gallery sizes and the full set apply to CUHK-SYSU only"
            )
        protocols = {"all-cameras": {"cross_camera": False}}
        if len({r.camera for r in dataset.gallery}) > 1:
            protocols["cross-camera"] = {"cross_camera": True}
        return protocols
    available = sorted(dataset.cuhk_protocols)
    sizes = (
        list(gallery_sizes)
        if gallery_sizes
        else [s for s in CUHK_GALLERY_SIZES if s in available] or available
    )
    missing = sorted({*sizes, *([FULL_SET_BASE] if full_set else [])} - set(available))
    if missing:
        raise PsearchError(
            f"{dataset.root}: no TestG{missing[0]} protocol (available gallery sizes: "
            f"{', '.join(map(str, available))}; the full set needs TestG{FULL_SET_BASE})"
        )
    protocols = {f"gallery-{size}": {"gallery_size": size} for size in sizes}
    if full_set:
        protocols["full-set"] = {"gallery_size": None}
    return protocols


def evaluate(
    dataset: PersonSearchDataset,
    results: SearchResults,
    *,
    gallery_sizes: Sequence[int] | None = None,
    full_set: bool = False,
    det_thresh: float = DET_THRESH,
    topk: Sequence[int] = TOPK,
    progress: bool = False,
) -> dict:
    """Run the dataset's standard set of protocols on ``results`` (top-k for each k in ``topk``).

    Returns ``{"dataset", "det_thresh", "search": {protocol: {"mAP", "top1", "top5", "top10",
    "queries", "skipped_queries"}}, "detection": {"all" | "labeled": {"ap", "recall", "gt",
    "detections"}}}``, metrics as fractions. ``search`` is empty for results without features.
    """
    report: dict = {
        "dataset": dataset.name,
        "det_thresh": det_thresh,
        "search": {},
        "detection": {},
    }
    protocols = search_protocols(dataset, gallery_sizes, full_set)
    if results.has_features:
        for name, kwargs in protocols.items():
            report["search"][name] = evaluate_search(
                dataset, results, det_thresh=det_thresh, topk=topk, progress=progress, **kwargs
            )
    for name, labeled_only in (("all", False), ("labeled", True)):
        report["detection"][name] = evaluate_detection(
            dataset, results, det_thresh=det_thresh, labeled_only=labeled_only
        )
    return report
