"""psearch.reid: the re-ID embedding (timm backbone + OIM loss), its training and embedding.

``from psearch.reid import ReidModel`` is the inference API (imported lazily: the CLI starts
without importing torch/timm).
"""

from __future__ import annotations

from psearch.core.lazy import lazy_getattr

_EXPORTS = {"ReidModel": "psearch.reid.model"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
