"""The Python API: find a person in a gallery built by ``psearch index``.

>>> from psearch.api import PersonSearch
>>> ps = PersonSearch("gallery/", device="cpu")
>>> matches = ps.query("q.jpg", box=(x1, y1, x2, y2), top_k=10)    # list[Match]
>>> matches[0].score, matches[0].source, matches[0].frame, matches[0].box
>>> ps.draw("q.jpg", (x1, y1, x2, y2), matches, "sheet.png")      # or "sheet.html"
>>> sightings = ps.sightings("q.jpg", box=(x1, y1, x2, y2))          # videos: list[Sighting]
>>> sightings[0].start, sightings[0].end, sightings[0].frames, sightings[0].best.box

This module is the top layer: it gathers what users need from the stages and is imported by
nobody inside psearch. The gallery's embedder (re-ID or joint checkpoint) must still have the
sha256 recorded in the gallery; pass ``embedder=`` any object with ``dim`` and
``embed_boxes(image, boxes)`` (``psearch.roles.Embedder``) to use another one of the same size.
"""

from __future__ import annotations

from psearch.core.boxes import ImageLike, as_rgb, check_box, crop_box
from psearch.gallery.sightings import Sighting
from psearch.gallery.store import Gallery, Match
from psearch.registry import load_detector, load_embedder
from psearch.search.person_search import PersonSearch, load_gallery_embedder

__all__ = ["Gallery", "ImageLike", "Match", "PersonSearch", "Sighting", "as_rgb", "check_box",
           "crop_box", "load_detector", "load_embedder", "load_gallery_embedder"]
