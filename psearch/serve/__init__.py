"""psearch.serve: a resident search service (FastAPI + uvicorn) with a browser page.

>>> from psearch.serve import create_app
>>> app = create_app("gallery/", device="cpu")     # then: uvicorn.run(app, host="127.0.0.1")

The gallery and the re-ID model are loaded once; a new generation published by
``psearch index --add`` is picked up per request (``psearch.serve.state``).
"""

from __future__ import annotations

from psearch.core.lazy import lazy_getattr

_EXPORTS = {"create_app": "psearch.serve.app", "GalleryState": "psearch.serve.state"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
