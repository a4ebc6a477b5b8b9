"""The re-ID stage's config: every key and its default live in ``psearch/configs/reid_cpu.yaml``.

Presets and user files are read on top of those defaults; a key the defaults do not have is a
one-line error (``psearch.core.config.resolve_config``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from psearch.core.config import load_config, resolve_config, stage_config

DEFAULT_PRESET = "reid_cpu"
DEFAULTS: dict[str, Any] = load_config(DEFAULT_PRESET)
"""Every key of a re-ID config and its default (the ``reid_cpu`` preset lists them all)."""


def reid_defaults() -> dict[str, Any]:
    """The default re-ID config (``DEFAULTS``)."""
    return DEFAULTS


def resolve_reid_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """``cfg`` completed from the defaults; unknown keys refused."""
    return resolve_config(reid_defaults(), cfg, "")


def reid_config(preset: str | Path = DEFAULT_PRESET,
                overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """A complete re-ID config: the defaults, a preset (name or file), then ``--set`` overrides."""
    return stage_config(reid_defaults(), preset, overrides)


def model_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """A ``model`` section completed from the defaults; unknown keys refused."""
    return resolve_config(reid_defaults()["model"], cfg, "model")
