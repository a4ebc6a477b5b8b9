"""Load any psearch checkpoint by its kind, for the role it is asked to play.

Three roles, each a small protocol: a ``Detector`` finds people in images; an ``Embedder``
turns the people at given boxes of an image into unit-norm vectors; a ``PairScorer`` (QEEPS)
searches a query in gallery images pair by pair. A checkpoint records its ``kind``
("detector", "reid", "joint", ...); the registry maps (kind, role) to the loader that rebuilds
the model, so ``psearch detect``, ``embed``, ``query`` and ``PersonSearch`` accept every kind
that can play their role (a joint model plays both).

>>> detector = load_detector("runs/det/last.pt")      # or "hog", or a joint checkpoint
>>> embedder = load_embedder("runs/reid/last.pt")     # or a joint checkpoint
>>> register("mykind", "embed", "mypackage.module:MyModel.from_checkpoint")

A loader is called as ``loader(path, device=..., payload=checkpoint_dict, **options)``.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Protocol, runtime_checkable

import numpy as np

from psearch.errors import PsearchError

Detections = list[tuple[np.ndarray, np.ndarray]]
"""Per image: boxes float32 [K, 4] (x1, y1, x2, y2) and scores float32 [K], best first."""

HOG_NAME = "hog"
"""``--weights hog``: OpenCV's HOG people detector, which needs no checkpoint."""

ROLES = ("detect", "embed", "pairs")

_LOADERS: dict[tuple[str, str], str] = {
    ("detector", "detect"): "psearch.detector.inference:PersonDetector.from_checkpoint",
    ("reid", "embed"): "psearch.reid.model:ReidModel.from_checkpoint",
    ("joint", "detect"): "psearch.joint.infer:JointSearcher.from_checkpoint",
    ("joint", "embed"): "psearch.joint.infer:JointSearcher.from_checkpoint",
    ("qeeps", "pairs"): "psearch.joint.qeeps_infer:QEEPSSearcher.from_checkpoint",
}


@runtime_checkable
class Detector(Protocol):
    """Finds people: RGB uint8 images [H, W, 3] -> per image (boxes [K, 4], scores [K])."""

    def detect(self, images: list[np.ndarray], score_thresh: float = 0.5,
               max_detections: int | None = None) -> Detections: ...

    def describe(self) -> dict[str, Any]: ...


@runtime_checkable
class Embedder(Protocol):
    """Embeds people: the boxes [N, 4] of an RGB uint8 image -> float32 [N, dim], unit norm.

    Crop-based embedders (the cascade's re-ID network) also offer ``embed_crops(crops)``;
    frame-based ones (joint models) need the whole image.
    """

    dim: int

    def embed_boxes(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


@runtime_checkable
class PairScorer(Protocol):
    """Searches one query in gallery images pair by pair (query-guided models such as QEEPS):
    per gallery image boxes [K, 4], detector scores [K] and match scores [K], best first."""

    def search_pairs(self, query: np.ndarray, box: Any, galleries: list[np.ndarray]
                     ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]: ...

    def describe(self) -> dict[str, Any]: ...


def register(kind: str, role: str, target: str) -> None:
    """Let checkpoints of ``kind`` play ``role`` through ``target`` ("module:attr.path")."""
    if role not in ROLES:
        raise ValueError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    _LOADERS[(kind, role)] = target


def load_model(path: str | os.PathLike, role: str, device: Any = "auto", **options: Any) -> Any:
    """The model in checkpoint ``path`` ready for ``role``; a one-line error if it cannot."""
    from psearch.checkpoint import load_checkpoint

    payload = load_checkpoint(path)
    kind = payload.get("kind")
    target = _LOADERS.get((kind, role))
    if target is None:
        able = sorted(k for (k, r) in _LOADERS if r == role)
        verb = {"pairs": "search query-gallery pairs"}.get(role, role)
        raise PsearchError(f"{path}: a {kind!r} checkpoint cannot {verb} (checkpoints that "
                           f"can: {', '.join(able)})")
    module_name, _, attr = target.partition(":")
    loader: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        loader = getattr(loader, part)
    return loader(path, device=device, payload=payload, **options)


def load_detector(weights: str | os.PathLike, device: Any = "auto", **options: Any) -> Detector:
    """``"hog"``: the HOG baseline; else any checkpoint that can detect (detector, joint)."""
    if str(weights).lower() == HOG_NAME:
        from psearch.detector.inference import HogDetector

        return HogDetector(**{k: v for k, v in options.items() if k == "upscale"})
    options.pop("upscale", None)
    return load_model(weights, "detect", device, **options)


def load_embedder(path: str | os.PathLike, device: Any = "auto", **options: Any) -> Embedder:
    """Any checkpoint that can embed boxes (re-ID, joint)."""
    return load_model(path, "embed", device, **options)


def load_pair_scorer(path: str | os.PathLike, device: Any = "auto", **options: Any
                     ) -> PairScorer:
    """Any checkpoint that searches query-gallery pairs (qeeps)."""
    return load_model(path, "pairs", device, **options)
