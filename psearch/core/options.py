"""The click options shared by the ``psearch`` commands, defined once: one spelling, one default
and one help text per idea. Each factory returns a decorator: ``@device_option()``.

Old spellings stay accepted as hidden aliases (``--det-thresh``, ``--gallery-size``, the
``--json PATH`` of the evaluate commands); ``--help`` shows only the current one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

DATASET_FORMATS = ("cuhk", "prw", "folder", "market")
"""The dataset formats ``psearch.data.load_dataset`` reads (``psearch.data.FORMATS``)."""

DEVICE_HELP = "auto (cuda when available), cpu, cuda or cuda:N."
QUIET_HELP = "No progress bars."
JSON_HELP = "Print the result as JSON on stdout (for programs)."
FORMAT_HELP = "Dataset format; auto: judged by the files present."
DOWNLOAD_HELP = ("Let torchvision/timm download missing pretrained weights (needs network; "
                 "never without this flag).")
SET_HELP = "Override a config value, e.g. --set train.lr=0.01 (repeatable)."
RESUME_HELP = "Continue the run saved in OUT/last.pt (same data required; its config is used)."
SCORE_THRESH_HELP = "Minimum detection score."
GALLERY_SIZES_HELP = "CUHK-SYSU gallery sizes, e.g. 50,100 (or repeat the option)."


class AliasedOption(click.Option):
    """A click option whose ``hidden_aliases`` spellings work but are left out of ``--help``."""

    def __init__(self, *args: Any, hidden_aliases: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hidden_aliases = tuple(hidden_aliases)

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        shown = [o for o in self.opts if o not in self.hidden_aliases]
        opts, self.opts = self.opts, shown
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = opts


class SizesType(click.ParamType):
    """``"50,100"`` -> ``(50, 100)``: positive integers separated by commas."""

    name = "N,N"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            sizes = tuple(int(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            sizes = ()
        if not sizes or min(sizes) < 1:
            self.fail(f"expected positive numbers like 50,100, got {value!r}", param, ctx)
        return sizes


def _flatten_sizes(ctx: click.Context, param: click.Parameter,
                   value: tuple[tuple[int, ...], ...]) -> tuple[int, ...] | None:
    sizes = tuple(n for group in value for n in group)
    return sizes or None


def device_option() -> Decorator:
    """``--device``: where the model (and a GPU FAISS search) runs; ``auto`` by default."""
    return click.option("--device", default="auto", show_default=True, metavar="DEVICE",
                        help=DEVICE_HELP)


def quiet_option() -> Decorator:
    """``-q/--quiet``: no progress bars (results and warnings are still printed)."""
    return click.option("--quiet", "-q", is_flag=True, help=QUIET_HELP)


def json_option() -> Decorator:
    """``--json`` (flag, parameter ``as_json``): machine-readable output on stdout."""
    return click.option("--json", "as_json", is_flag=True, help=JSON_HELP)


def format_option() -> Decorator:
    """``--format`` (parameter ``fmt``): the format of the dataset a command reads."""
    return click.option("--format", "fmt", type=click.Choice(["auto", *DATASET_FORMATS]),
                        default="auto", show_default=True, help=FORMAT_HELP)


def download_option() -> Decorator:
    """``--download``: allow fetching published pretrained weights (off by default)."""
    return click.option("--download", is_flag=True, help=DOWNLOAD_HELP)


def set_option() -> Decorator:
    """``--set KEY=VALUE`` (parameter ``overrides``, repeatable): config overrides."""
    return click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)


def config_option(default: str | None, help: str, name: str = "config_name") -> Decorator:
    """``--config``: a preset name or a YAML file (the presets differ per command)."""
    return click.option("--config", name, default=default, show_default=default is not None,
                        help=help)


def resume_option() -> Decorator:
    """``--resume``: continue the run of ``--out``."""
    return click.option("--resume", is_flag=True, help=RESUME_HELP)


def seed_option(help: str) -> Decorator:
    """``--seed`` (integer, default 0)."""
    return click.option("--seed", type=int, default=0, show_default=True, help=help)


def out_option(help: str, name: str = "out", required: bool = True, file: bool = False,
               aliases: tuple[str, ...] = ()) -> Decorator:
    """``--out``: where a command writes (a folder, or with ``file`` a file); ``aliases`` are
    old spellings kept working but hidden."""
    kind = click.Path(dir_okay=not file, file_okay=file, path_type=Path)
    return click.option("--out", *aliases, name, required=required, type=kind, help=help,
                        cls=AliasedOption, hidden_aliases=aliases)


def checkpoint_option() -> Decorator:
    """``--checkpoint``: the gallery's re-ID checkpoint when it no longer lies where the gallery
    recorded it (query, evaluate-gallery, serve)."""
    return click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
                        help="The gallery's re-ID checkpoint if it moved (same sha256 required).")


def weights_option(help: str, required: bool = True) -> Decorator:
    """``--weights``: a checkpoint (what kind it must be differs per command)."""
    return click.option("--weights", required=required, help=help)


def score_thresh_option(default: float) -> Decorator:
    """``--score-thresh`` (old spelling ``--det-thresh``): drop detections scoring below it."""
    return click.option("--score-thresh", "--det-thresh", "score_thresh",
                        type=click.FloatRange(0, 1), default=default, show_default=True,
                        help=SCORE_THRESH_HELP, cls=AliasedOption,
                        hidden_aliases=("--det-thresh",))


def gallery_sizes_option(help: str = GALLERY_SIZES_HELP) -> Decorator:
    """``--gallery-sizes N,N`` (old spelling ``--gallery-size N``, repeatable): a tuple of
    ints, or None when not given."""
    return click.option("--gallery-sizes", "--gallery-size", "gallery_sizes", type=SizesType(),
                        multiple=True, callback=_flatten_sizes, help=help,
                        cls=AliasedOption, hidden_aliases=("--gallery-size",))
