"""One search result of the gallery (``Match``), shared by the store, sightings and sheets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Match:
    """One search result: the gallery detection at ``rank`` (1-based) with similarity ``score``.

    box: float32 [4] (x1, y1, x2, y2) in pixels of ``source`` (frame ``frame`` of a video, -1
    for an image); ``crop``: the detection's crop JPEG ('' if none); ``row``: the FAISS id.
    """

    rank: int
    score: float
    source: str
    frame: int
    box: np.ndarray
    crop: str
    det_score: float
    row: int

    @property
    def where(self) -> str:
        """``source`` for an image, ``source:frame`` for a video frame."""
        return self.source if self.frame < 0 else f"{self.source}:{self.frame}"

    def to_dict(self) -> dict:
        return {"rank": self.rank, "score": round(self.score, 6), "source": self.source,
                "frame": self.frame, "box": [round(float(v), 2) for v in self.box],
                "crop": self.crop, "det_score": round(self.det_score, 5), "row": self.row}
