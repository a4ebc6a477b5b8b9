"""``psearch weights``: list or fetch the published pretrained weights psearch can start from.

The download policy itself (nothing fetched unless asked, one line naming the missing file) is
``psearch.core.weights``; this module only knows which files exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from psearch.core.errors import PsearchError
from psearch.core.weights import (
    TIMM_BACKBONES,
    allow_downloads,
    timm_cached_file,
    timm_expected_file,
    timm_weights,
    torchvision_file,
    torchvision_weights,
)


def known_weights() -> dict[str, tuple[str, Any]]:
    """Name -> ("torchvision", weights enum entry) or ("timm", model name)."""
    from psearch.detector.model import BACKBONES

    known: dict[str, tuple[str, Any]] = {}
    for backbone, (_, imagenet, coco) in BACKBONES.items():
        known[f"detector-imagenet-{backbone}"] = ("torchvision", imagenet)
        if coco is not None:
            known[f"detector-coco-{backbone}"] = ("torchvision", coco)
    from psearch.detector.coco import COCO_MODELS

    for name, (_, coco) in COCO_MODELS.items():
        known[f"detect-{name}"] = ("torchvision", coco)  # psearch detect --weights NAME
    for name in TIMM_BACKBONES:
        known[f"reid-imagenet-{name}"] = ("timm", name)
    return known


def describe_known(name: str, kind: str, entry: Any) -> tuple[str, Path, bool]:
    """(what it is, its cache path, cached?) of one known entry."""
    if kind == "torchvision":
        path = torchvision_file(entry)
        return f"torchvision {type(entry).__name__}.{entry.name}", path, path.is_file()
    cached = timm_cached_file(entry)
    return f"timm {entry}", cached or timm_expected_file(entry), cached is not None


def fetch(name: str) -> Path:
    """Download one known entry (an explicit request: downloads are allowed here)."""
    known = known_weights()
    if name not in known:
        raise PsearchError(f"{name}: not a known weights name; see `psearch weights list`")
    kind, entry = known[name]
    with allow_downloads():
        if kind == "torchvision":
            return torchvision_weights(entry, name)
        return timm_weights(entry)


@click.group("weights")
def weights_command() -> None:
    """List or fetch the published pretrained weights psearch can start from.

    \b
    Example:
      psearch weights list
      psearch weights fetch detector-coco-resnet50_fpn reid-imagenet-resnet50

    Files go to torchvision's and timm's own caches ($TORCH_HOME, $HF_HOME); training commands
    use them from there (train-detector --set model.weights=coco|imagenet, train-reid
    --pretrained). Nothing is downloaded except by `fetch` or a command's --download.
    """


@weights_command.command("list")
def list_command() -> None:
    """Each known weights file: name, cached or missing, source and cache path."""
    for name, (kind, entry) in known_weights().items():
        what, path, cached = describe_known(name, kind, entry)
        click.echo(f"{name:<41} {'cached ' if cached else 'missing'}  {what}  {path}")


@weights_command.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--all", "fetch_all", is_flag=True, help="Fetch every known file.")
def fetch_command(names: tuple[str, ...], fetch_all: bool) -> None:
    """Download weights by name (see `psearch weights list`) into the library caches."""
    if fetch_all:
        names = tuple(known_weights())
    if not names:
        raise PsearchError("name the weights to fetch (see `psearch weights list`) or use --all")
    for name in names:
        click.echo(f"{name}: {fetch(name)}")


COMMANDS: list[click.Command] = [weights_command]
