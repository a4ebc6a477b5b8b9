"""YAML training configs: named presets shipped in ``psearch/configs`` plus CLI overrides.

``load_config("detector_cpu")`` reads ``psearch/configs/detector_cpu.yaml``; any other string
is taken as a path to a YAML file. ``apply_overrides(cfg, ["train.epochs=3", "model.name=x"])``
sets dotted keys, parsing each value as YAML (so ``3`` is an int and ``[1, 2]`` a list).
``resolve_config(defaults, cfg)`` completes a config from a stage's defaults and refuses any
key the defaults do not know; ``stage_config`` does all three steps.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from psearch.core.errors import PsearchError

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs"


def preset_names(prefix: str = "") -> list[str]:
    """Names of the shipped presets starting with ``prefix`` (e.g. "detector_")."""
    return sorted(p.stem for p in PRESET_DIR.glob(f"{prefix}*.yaml"))


def load_config(name_or_path: str | Path) -> dict[str, Any]:
    """Load a preset by name or a YAML file by path."""
    path = Path(name_or_path)
    if not path.suffix and (PRESET_DIR / f"{name_or_path}.yaml").is_file():
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise PsearchError(f"{name_or_path}: no such config file or preset "
                           f"(presets: {', '.join(preset_names()) or 'none'})")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PsearchError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(cfg, dict):
        raise PsearchError(f"{path}: a config must be a YAML mapping")
    return cfg


def apply_overrides(cfg: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of ``cfg`` with ``key.sub=value`` overrides applied."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise PsearchError(f"override {item!r}: expected KEY=VALUE, e.g. train.epochs=3")
        set_dotted(cfg, key, yaml.safe_load(raw) if raw else None)
    return cfg


def set_dotted(cfg: dict[str, Any], key: str, value: Any) -> None:
    """Set ``cfg["a"]["b"] = value`` for ``key == "a.b"``, creating mappings on the way."""
    *parents, leaf = key.split(".")
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise PsearchError(f"override {key!r}: {part!r} is not a mapping")
    node[leaf] = value


def resolve_config(defaults: dict[str, Any], cfg: dict[str, Any] | None,
                   where: str = "") -> dict[str, Any]:
    """``defaults`` overlaid with ``cfg``, strictly: a key that ``defaults`` lacks is an error.

    Nested mappings merge key by key and are checked the same way, except those whose default
    is an empty mapping (``{}``): they are free-form (e.g. ``model.timm_kwargs``) and taken as
    given. The error names the dotted key and the known keys beside it, so a typo in a YAML
    file or a ``--set`` fails in one line instead of being ignored.
    """
    out = copy.deepcopy(defaults)
    for key, value in (cfg or {}).items():
        path = f"{where}.{key}" if where else str(key)
        if key not in defaults:
            raise PsearchError(f"{path}: unknown config key (known here: "
                               f"{', '.join(map(str, defaults)) or 'none'})")
        default = defaults[key]
        if isinstance(default, dict) and default:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise PsearchError(f"{path}: expected a mapping with keys among "
                                   f"{', '.join(map(str, default))}, got {value!r}")
            out[key] = resolve_config(default, value, path)
        else:
            out[key] = copy.deepcopy(value)
    return out


def stage_config(defaults: dict[str, Any], name_or_path: str | Path | None,
                 overrides: list[str] | tuple[str, ...] = (), where: str = "") -> dict[str, Any]:
    """The full config of a stage: ``defaults``, then a preset or YAML file, then ``--set``."""
    cfg = load_config(name_or_path) if name_or_path is not None else {}
    return resolve_config(defaults, apply_overrides(cfg, overrides), where)
