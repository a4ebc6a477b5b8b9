"""Device selection shared by every stage: ``resolve_device("auto")`` -> CUDA when present."""

from __future__ import annotations

import torch

from psearch.core.errors import PsearchError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto": CUDA when available, else CPU; anything else as torch spells it.

    Refuses CUDA on a machine without it, and unknown names, with a one-line ``PsearchError``.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise PsearchError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PsearchError(f"--device {device}: no CUDA device is available here "
                           "(use --device cpu)")
    return device
