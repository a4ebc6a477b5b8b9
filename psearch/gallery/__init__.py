"""psearch.gallery: the FAISS gallery of detections, searched by re-ID embedding.

>>> from psearch.gallery import Gallery, index_embeddings
>>> gallery = index_embeddings("emb/", "gallery/")           # what `psearch index` does
>>> gallery = Gallery.load("gallery/")
>>> [matches] = gallery.matches(query_embeddings[:1], k=10)   # float32 [1, D] -> list[Match]

Submodules are imported lazily so that the CLI starts without loading FAISS.
"""

from __future__ import annotations

from psearch.core.lazy import lazy_getattr

_EXPORTS = {
    "Gallery": "psearch.gallery.store",
    "Match": "psearch.gallery.store",
    "PersonSearch": "psearch.search.person_search",
    "Rows": "psearch.gallery.rows",
    "Sighting": "psearch.gallery.sightings",
    "index_embeddings": "psearch.gallery.build",
    "write_sheet": "psearch.gallery.sheet",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
