"""psearch.gallery: the FAISS gallery of detections, searched by re-ID embedding.

>>> from psearch.gallery import Gallery, index_embeddings
>>> gallery = index_embeddings("emb/", "gallery/")           # what `psearch index` does
>>> gallery = Gallery.load("gallery/")
>>> [matches] = gallery.matches(query_embeddings[:1], k=10)   # float32 [1, D] -> list[Match]

Submodules are imported lazily so that the CLI starts without loading FAISS.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Gallery": "psearch.gallery.store",
    "Match": "psearch.gallery.store",
    "Rows": "psearch.gallery.rows",
    "Sighting": "psearch.gallery.sightings",
    "index_embeddings": "psearch.gallery.build",
    "write_sheet": "psearch.gallery.sheet",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'psearch.gallery' has no attribute {name!r}")
