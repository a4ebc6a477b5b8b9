"""Checkpoints that carry their config, saved atomically and loaded without unpickling code.

A checkpoint is a plain dict saved with ``torch.save``::

    {"format": "psearch-checkpoint", "version": 1, "kind": "detector" | "reid" | ...,
     "config": {...plain YAML-like values...}, "model": state_dict, ...extra training state}

It is always read with ``torch.load(..., weights_only=True)``, so every value must be a tensor,
a number, a string, a bool, None, or a list/tuple/dict of those.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from psearch.core.errors import PsearchError
from psearch.core.io import atomic_path

CHECKPOINT_FORMAT = "psearch-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, kind: str, config: dict, model_state: dict,
                    **extra: Any) -> None:
    """Write a checkpoint of ``kind`` atomically (a crash mid-write keeps the old file)."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "kind": kind,
               "config": config, "model": model_state, **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | os.PathLike, kind: str | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a psearch checkpoint safely; raise ``PsearchError`` naming the file on any problem.

    ``kind``, when given, must match the checkpoint's kind (e.g. a re-ID checkpoint passed
    where a detector is expected is refused with a clear message).
    """
    path = Path(path)
    if not path.is_file():
        raise PsearchError(f"{path}: checkpoint file not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt file, pickle with code, truncated zip, ...
        if isinstance(exc, pickle.UnpicklingError):
            reason = "corrupt, or it holds code, which psearch never unpickles"
        else:
            detail = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
            reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
        raise PsearchError(f"{path}: not a readable psearch checkpoint ({reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise PsearchError(f"{path}: not a psearch checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    if payload.get("version", 0) > CHECKPOINT_VERSION:
        raise PsearchError(f"{path}: checkpoint version {payload['version']} is newer than this "
                           f"psearch understands ({CHECKPOINT_VERSION}); upgrade psearch")
    if kind is not None and payload.get("kind") != kind:
        raise PsearchError(f"{path}: this is a {payload.get('kind')!r} checkpoint, "
                           f"expected a {kind!r} checkpoint")
    return payload


def load_model_state(model: torch.nn.Module, state: dict[str, Any], path: str | os.PathLike,
                     skip_prefixes: tuple[str, ...] = ()) -> None:
    """Load a checkpoint's ``state`` into ``model`` (keys starting with ``skip_prefixes``, such as
    a loss's training state, left out); weights of another architecture or size are a one-line
    ``PsearchError`` naming ``path``."""
    if skip_prefixes:
        state = {k: v for k, v in state.items() if not k.startswith(skip_prefixes)}
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0] if lines else "mismatch"
        raise PsearchError(f"{path}: weights do not match the model of its config "
                           f"({detail[:200]})") from None


def checkpoint_of_kind(path: str | os.PathLike, kind: str,
                       payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """``payload`` (a checkpoint the caller already read, e.g. ``psearch.registry``) when it is
    of ``kind``, else the checkpoint at ``path`` checked to be of ``kind``."""
    if payload is not None and payload.get("kind") == kind:
        return payload
    return load_checkpoint(path, kind=kind)
