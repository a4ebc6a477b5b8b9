"""``psearch synth``: generate a synthetic person-search dataset."""

from __future__ import annotations

import os
from pathlib import Path

import click

from psearch.core.errors import PsearchError
from psearch.core.options import gallery_sizes_option, quiet_option, seed_option
from psearch.data.synth.world import FORMATS, PRESETS, generate_world

SUMMARY_COLUMNS = ("images", "boxes", "labeled_boxes", "unlabeled_boxes", "identities", "queries")


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise PsearchError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 480x360") from None
    return w, h


def format_summary(summary: dict) -> str:
    """The per-split counts as a small text table."""
    width = max(len(c) for c in SUMMARY_COLUMNS)
    lines = [f"{'':{width}}  {'train':>7}  {'test':>7}"]
    for column in SUMMARY_COLUMNS:
        lines.append(
            f"{column:{width}}  {summary['train'][column]:>7}  {summary['test'][column]:>7}"
        )
    return "\n".join(lines)


@click.command("synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="cuhk",
    show_default=True,
    help="On-disk layout: CUHK-SYSU (.mat protocols, galleries), PRW (6 cameras) or "
    "Market-1501 (person crops cut from a PRW-like world).",
)
@seed_option("Same seed, same world.")
@click.option(
    "--preset",
    type=click.Choice(list(PRESETS)),
    default="ci",
    show_default=True,
    help="tiny: ~56 images for unit tests; ci: ~320 images; bench: 2,400 images.",
)
@click.option("--images", "n_images", type=int, default=None, help="Number of images.")
@click.option(
    "--identities",
    "n_identities",
    type=int,
    default=None,
    help="Number of labeled identities (train + test).",
)
@click.option("--size", default=None, metavar="WxH", help="Image size, e.g. 480x360.")
@gallery_sizes_option("CUHK-SYSU TestG gallery sizes (default 50,100; tiny: 10,20).")
@click.option(
    "--workers",
    type=int,
    default=min(4, os.cpu_count() or 1),
    show_default=True,
    help="Render in this many processes (the result does not depend on it).",
)
@quiet_option()
def synth_command(
    out: Path,
    fmt: str,
    seed: int,
    preset: str,
    n_images: int | None,
    n_identities: int | None,
    size: str | None,
    gallery_sizes: tuple[int, ...] | None,
    workers: int,
    quiet: bool,
) -> None:
    """Generate a synthetic person-search world in OUT, in the CUHK-SYSU or PRW format, or
    a Market-1501 crop set cut from one (--format market).

    Street scenes from several cameras with 1-8 people each, identities that differ by clothing,
    patterns, accessories, hair and build (with near-duplicate pairs), unlabeled passers-by,
    occlusion and clutter. Train and test identities are disjoint.

    \b
    Example:
      psearch synth world/ --format cuhk --preset ci --seed 0
      psearch synth prw/ --format prw --preset bench --workers 2
      psearch synth market/ --format market --preset ci --seed 1
    """
    summary = generate_world(
        out,
        fmt,
        seed=seed,
        preset=preset,
        progress=not quiet,
        n_images=n_images,
        n_identities=n_identities,
        image_size=_parse_size(size),
        gallery_sizes=gallery_sizes,
        workers=workers,
    )
    click.echo(f"wrote a {fmt} world to {out} (seed {seed}, preset {preset})")
    click.echo(format_summary(summary))
