"""psearch.reid: the re-ID embedding (timm backbone + OIM loss), its training and embedding.

``from psearch.reid import ReidModel`` is the inference API (imported lazily: the CLI starts
without importing torch/timm).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ReidModel"]


def __getattr__(name: str) -> Any:
    if name == "ReidModel":
        from psearch.reid.model import ReidModel

        return ReidModel
    raise AttributeError(f"module 'psearch.reid' has no attribute {name!r}")
