"""psearch: person search as a detector -> re-ID -> FAISS gallery cascade.

>>> from psearch import PersonSearch
>>> matches = PersonSearch("gallery/").query("q.jpg", box=(x1, y1, x2, y2), top_k=10)
"""

from typing import Any

from psearch.core.version import __version__

__all__ = ["PersonSearch", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import psearch` (and the CLI's start) does not load torch and FAISS.
    if name == "PersonSearch":
        from psearch.api import PersonSearch

        return PersonSearch
    raise AttributeError(f"module 'psearch' has no attribute {name!r}")
