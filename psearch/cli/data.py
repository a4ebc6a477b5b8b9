"""``psearch data info`` and ``psearch data convert``: inspect and convert datasets."""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np

from psearch.core.errors import PsearchError
from psearch.core.options import (
    format_option,
    gallery_sizes_option,
    json_option,
    quiet_option,
    seed_option,
)
from psearch.core.progress import progress_bar
from psearch.data import UNLABELED_PID, PersonSearchDataset, detect_format, load_dataset
from psearch.data.annotations import ImageRecord
from psearch.data.folder import check_output_dir, write_folder
from psearch.data.market import DISTRACTOR_PID
from psearch.data.synth.cli import synth_command

DEFAULT_GALLERY_SIZES = (50, 100)
"""TestG sizes built by ``convert --to cuhk`` for a source without protocols (if they fit)."""

WRITE_FORMATS = ("cuhk", "prw", "folder")
"""Formats ``convert`` writes (scene datasets; Market-1501 crops come from ``psearch synth``)."""


# --- counting --------------------------------------------------------------------------------


def split_counts(
    records: list[ImageRecord], n_queries: int = 0, crops: bool = False
) -> dict[str, int]:
    """images, boxes, labeled_boxes, unlabeled_boxes, identities, queries of one split.

    The names match ``synth_summary.json`` of ``psearch.data.synth``. With ``crops`` (Market-1501
    datasets) distractors (pid 0) count as unlabeled, like junk crops.
    """
    pids = np.concatenate([r.pids for r in records]) if records else np.zeros(0, np.int64)
    labeled = pids != UNLABELED_PID
    if crops:
        labeled &= pids != DISTRACTOR_PID
    return {
        "images": len(records),
        "boxes": int(len(pids)),
        "labeled_boxes": int(labeled.sum()),
        "unlabeled_boxes": int((~labeled).sum()),
        "identities": int(len(np.unique(pids[labeled]))),
        "queries": n_queries,
    }


def protocol_stats(dataset: PersonSearchDataset,
                   progress: bool = True) -> dict[str, dict[str, float]]:
    """Per CUHK gallery size: queries, gallery images per query (min/mean/max), positives."""
    stats = {}
    sizes = list(dataset.cuhk_protocols)
    for size in progress_bar(sizes, desc="reading protocols", unit="protocol",
                             enabled=None if progress else False, leave=False):
        galleries = dataset.cuhk_protocols[size]
        lengths = np.array([len(g) for g in galleries], dtype=np.int64)
        positives = np.array(
            [sum(box is not None for _, box in g) for g in galleries], dtype=np.int64
        )
        stats[str(size)] = {
            "queries": len(galleries),
            "gallery_min": int(lengths.min()) if len(lengths) else 0,
            "gallery_mean": round(float(lengths.mean()), 2) if len(lengths) else 0.0,
            "gallery_max": int(lengths.max()) if len(lengths) else 0,
            "positives": int(positives.sum()),
            "queries_without_positives": int((positives == 0).sum()),
        }
    return stats


def decode_images(dataset: PersonSearchDataset, workers: int,
                  progress: bool = True) -> dict[str, Any]:
    """Decode every image; count unreadable ones and boxes reaching outside their image."""
    records = [*dataset.train, *dataset.gallery, *dataset.query_images]

    def shape(record: ImageRecord) -> tuple[int, int] | None:
        image = cv2.imread(str(record.path), cv2.IMREAD_COLOR)
        return None if image is None else image.shape[:2]

    with ThreadPoolExecutor(max(1, workers)) as pool:
        shapes = list(
            progress_bar(
                pool.map(shape, records),
                total=len(records),
                desc="decoding",
                unit="image",
                enabled=None if progress else False,
            )
        )
    unreadable, partly, outside = [], 0, 0
    for record, hw in zip(records, shapes, strict=True):
        if hw is None:
            unreadable.append(record.name)
            continue
        b, (h, w) = record.boxes, hw
        beyond = (b[:, 0] < 0) | (b[:, 1] < 0) | (b[:, 2] > w) | (b[:, 3] > h)
        gone = (b[:, 2] <= 0) | (b[:, 3] <= 0) | (b[:, 0] >= w) | (b[:, 1] >= h)
        outside += int(gone.sum())
        partly += int((beyond & ~gone).sum())
    return {
        "images": len(records),
        "unreadable": unreadable,
        "boxes_partly_outside": partly,
        "boxes_outside": outside,
    }


def describe(dataset: PersonSearchDataset, fmt: str, notes: list[str],
             progress: bool = True) -> dict[str, Any]:
    """Everything ``data info`` reports, as plain data."""
    return {
        "root": str(dataset.root),
        "format": fmt,
        "name": dataset.name,
        "train": split_counts(dataset.train, crops=dataset.crops),
        "test": split_counts(dataset.gallery, len(dataset.queries), dataset.crops),
        "query_identities": len({q.pid for q in dataset.queries}),
        "protocols": protocol_stats(dataset, progress),
        "crops": dataset.crops,
        "notes": notes,
    }


def _print_report(info: dict[str, Any]) -> None:
    click.echo(f"{info['root']}: {info['format']} dataset {info['name']!r}")
    columns = ("images", "boxes", "labeled_boxes", "unlabeled_boxes", "identities")
    click.echo(f"  {'split':<6}" + "".join(f"{c.replace('_boxes', ''):>12}" for c in columns))
    for split in ("train", "test"):
        click.echo(f"  {split:<6}" + "".join(f"{info[split][c]:>12}" for c in columns))
    click.echo(f"  queries: {info['test']['queries']} ({info['query_identities']} identities)")
    for size, s in info["protocols"].items():
        click.echo(
            f"  TestG{size}: {s['queries']} galleries of {s['gallery_min']}-{s['gallery_max']} "
            f"images (mean {s['gallery_mean']}), {s['positives']} positives"
        )
    if info.get("crops"):
        click.echo("  protocol: Market-1501 re-ID (per query, gallery crops of its person and "
                   "camera, and junk crops, are ignored)")
    elif not info["protocols"]:
        click.echo("  gallery: every test image except the query's own")
    for note in info["notes"]:
        click.echo(f"  note: {note}")
    check = info.get("image_check")
    if check:
        click.echo(
            f"  decoded {check['images'] - len(check['unreadable'])}/{check['images']} images; "
            f"boxes partly outside their image: {check['boxes_partly_outside']}, "
            f"entirely outside: {check['boxes_outside']}"
        )
        for name in check["unreadable"]:
            click.echo(f"  unreadable: {name}")


# --- commands --------------------------------------------------------------------------------


@click.group("data")
def data() -> None:
    """Inspect and convert person-search datasets (CUHK-SYSU, PRW, folder, Market-1501)."""


@data.command("info")
@click.argument("root", type=click.Path(path_type=Path))
@format_option()
@json_option()
@click.option(
    "--check-images",
    is_flag=True,
    help="Decode every image; report unreadable ones and boxes outside their image.",
)
@click.option(
    "--workers",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Threads decoding images for --check-images.",
)
@quiet_option()
def info_command(root: Path, fmt: str, as_json: bool, check_images: bool, workers: int,
                 quiet: bool) -> None:
    """Count images, boxes, identities and queries per split of the dataset at ROOT.

    \b
    Example:
      psearch data info CUHK-SYSU/
      psearch data info PRW/ --json --check-images
      psearch data info Market-1501/ --format market
    """
    notes: list[str] = []
    fmt = _resolve_format(root, fmt)
    dataset = load_dataset(root, fmt, notes)
    info = describe(dataset, fmt, notes, progress=not quiet)
    if check_images:
        info["image_check"] = decode_images(dataset, workers, progress=not quiet)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        _print_report(info)
    if check_images and info["image_check"]["unreadable"]:
        bad = info["image_check"]["unreadable"]
        raise PsearchError(f"{root}: {len(bad)} images cannot be decoded ({', '.join(bad[:3])})")


@data.command("convert")
@click.argument("root", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@format_option()
@click.option(
    "--to", "to", type=click.Choice(WRITE_FORMATS), required=True, help="Format to write."
)
@click.option(
    "--link", is_flag=True, help="Hard-link images instead of copying them (copies across devices)."
)
@gallery_sizes_option(
    "CUHK galleries to keep from ROOT's TestG files, or to build when ROOT has "
    "none (--to cuhk; default 50,100 where the test split is large enough)."
)
@seed_option("Seed of the distractors of built galleries.")
def convert_command(
    root: Path,
    out: Path,
    fmt: str,
    to: str,
    link: bool,
    gallery_sizes: tuple[int, ...] | None,
    seed: int,
) -> None:
    """Convert the dataset at ROOT into a new folder OUT in another format.

    OUT must be new or empty. CUHK-SYSU output needs TestG galleries: a source without them
    (PRW, folder) gets, per query, every other test image with the person first, then random
    distractors (fixed by --seed), for each size N of --gallery-sizes with
    positives <= N < test images; if no such N, N = test images - 1.

    \b
    Example:
      psearch data convert PRW/ prw-folder/ --to folder
      psearch data convert my-data/ my-data-cuhk/ --to cuhk --gallery-sizes 50,100
    """
    check_output_dir(out)
    fmt = _resolve_format(root, fmt)
    source_notes: list[str] = []
    dataset = load_dataset(root, fmt, source_notes)
    if dataset.crops:
        raise PsearchError(f"{root}: a crop dataset ({fmt}) has no scenes to convert into a "
                           "person-search format")
    for note in source_notes:
        click.echo(f"note: {note}", err=True)
    sizes = list(gallery_sizes) if gallery_sizes else None
    if dataset.cuhk_protocols and sizes is not None:
        missing = [n for n in sizes if n not in dataset.cuhk_protocols]
        if missing:
            raise PsearchError(
                f"{root}: no TestG{missing[0]} protocol (has {list(dataset.cuhk_protocols)})"
            )
    if to == "folder":
        write_folder(
            dataset, out, link=link, protocol_sizes=sizes if dataset.cuhk_protocols else []
        )
    else:
        from psearch.data.writers import write_cuhk, write_prw

        images = "link" if link else "copy"
        if to == "prw":
            write_prw(dataset, out, images=images)
        elif dataset.cuhk_protocols:
            chosen = list(dataset.cuhk_protocols) if sizes is None else sizes
            kept = {n: dataset.cuhk_protocols[n] for n in chosen}
            write_cuhk(dataclasses.replace(dataset, cuhk_protocols=kept), out, images=images)
        else:
            built = fitting_gallery_sizes(dataset, sizes or DEFAULT_GALLERY_SIZES)
            click.echo(f"building galleries of {', '.join(map(str, built))} test images", err=True)
            write_cuhk(dataset, out, images=images, gallery_sizes=built, seed=seed)
    notes: list[str] = []
    written = load_dataset(out, to, notes)
    before = (split_counts(dataset.train), split_counts(dataset.gallery), len(dataset.queries))
    after = (split_counts(written.train), split_counts(written.gallery), len(written.queries))
    c = after[0], after[1]
    click.echo(
        f"wrote {out} ({to}): {c[0]['images']} train + {c[1]['images']} test images, "
        f"{c[0]['boxes'] + c[1]['boxes']} boxes, {after[2]} queries"
    )
    for note in notes:
        click.echo(f"note: {out}: {note}", err=True)
    if before != after:
        click.echo(
            "warning: the written dataset counts differ from the source "
            "(e.g. boxes that became empty when rounded to whole pixels)",
            err=True,
        )


def fitting_gallery_sizes(
    dataset: PersonSearchDataset, wanted: tuple[int, ...] | list[int]
) -> list[int]:
    """The sizes N of ``wanted`` with positives <= N < test images for every query (see convert)."""
    n_test = len(dataset.gallery)
    if n_test < 2:
        raise PsearchError(
            f"{dataset.root}: CUHK galleries need at least 2 test images, found {n_test}"
        )
    images_of: dict[int, set[str]] = {}
    for record in dataset.gallery:
        for pid in np.unique(record.pids).tolist():
            images_of.setdefault(pid, set()).add(record.name)
    positives = max(
        (len(images_of.get(q.pid, set()) - {q.image}) for q in dataset.queries), default=0
    )
    sizes = [n for n in wanted if positives <= n < n_test]
    return sizes or [n_test - 1]


def _resolve_format(root: Path, fmt: str) -> str:
    return detect_format(root) if fmt == "auto" else fmt


COMMANDS: list[click.Command] = [data, synth_command]
