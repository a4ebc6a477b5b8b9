"""psearch.detector: the person detector stage (Faster R-CNN, or a HOG baseline).

>>> from psearch.detector import load_detector
>>> det = load_detector("runs/det/last.pt", device="cpu")     # or load_detector("hog")
>>> [(boxes, scores)] = det.detect([rgb_uint8], score_thresh=0.5)  # [K, 4] x1y1x2y2, [K]
"""

from psearch.detector.inference import HogDetector, PersonDetector, load_detector
from psearch.detector.model import build_detector

__all__ = ["HogDetector", "PersonDetector", "build_detector", "load_detector"]
