"""psearch.detector: the person detector stage (Faster R-CNN).

>>> from psearch.registry import load_detector
>>> det = load_detector("runs/det/last.pt", device="cpu")     # or "hog", or a joint model
>>> [(boxes, scores)] = det.detect([rgb_uint8], score_thresh=0.5)  # [K, 4] x1y1x2y2, [K]

Names are imported lazily, so that the CLI starts without loading torch.
"""

from __future__ import annotations

from psearch.core.lazy import lazy_getattr

_EXPORTS = {
    "PersonDetector": "psearch.detector.inference",
    "build_detector": "psearch.detector.model",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
