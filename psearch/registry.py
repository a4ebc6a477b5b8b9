"""Load any psearch checkpoint by its kind, for the role it is asked to play.

The roles are the protocols of ``psearch.roles``. A checkpoint records its ``kind``
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
from typing import Any

from psearch.core.errors import PsearchError
from psearch.roles import Detector, Embedder, PairScorer

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

_NAMED: dict[tuple[str, str], str] = {
    (HOG_NAME, "detect"): "psearch.baselines.hog:HogDetector.from_name",
    ("coco", "detect"): "psearch.detector.coco:load_coco",
    ("coco-v1", "detect"): "psearch.detector.coco:load_coco_v1",
    ("coco-mobilenet", "detect"): "psearch.detector.coco:load_coco_mobilenet",
}
"""Models chosen by name instead of a checkpoint file (``--weights hog``)."""

_SUFFIXES: dict[tuple[str, str], str] = {
    (".onnx", "embed"): "psearch.reid.onnx:OnnxEmbedder.from_file",
}
"""Files that are not torch checkpoints, chosen by their suffix (an exported re-ID ``.onnx``,
run by onnxruntime without importing torch); called like checkpoint loaders, payload None."""


def register(kind: str, role: str, target: str, named: bool = False) -> None:
    """Let checkpoints of ``kind`` play ``role`` through ``target`` ("module:attr.path");
    ``named=True``: ``kind`` is a name that needs no checkpoint (like "hog"), and the target is
    called as ``target(device=..., **options)``."""
    if role not in ROLES:
        raise ValueError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    (_NAMED if named else _LOADERS)[(kind, role)] = target


def _resolve(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    loader: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        loader = getattr(loader, part)
    return loader


def load_model(path: str | os.PathLike, role: str, device: Any = "auto", **options: Any) -> Any:
    """The model in checkpoint ``path`` (or a registered name such as "hog") ready for
    ``role``; a one-line error if it cannot."""
    named = _NAMED.get((str(path).lower(), role))
    if named is not None:
        return _resolve(named)(device=device, **options)

    by_suffix = _SUFFIXES.get((os.path.splitext(str(path))[1].lower(), role))
    if by_suffix is not None:
        return _resolve(by_suffix)(path, device=device, payload=None, **options)

    from psearch.core.checkpoint import load_checkpoint  # torch: only for checkpoints

    payload = load_checkpoint(path)
    kind = payload.get("kind")
    target = _LOADERS.get((kind, role))
    if target is None:
        able = sorted(k for (k, r) in _LOADERS if r == role)
        verb = {"pairs": "search query-gallery pairs"}.get(role, role)
        raise PsearchError(f"{path}: a {kind!r} checkpoint cannot {verb} (checkpoints that "
                           f"can: {', '.join(able)})")
    return _resolve(target)(path, device=device, payload=payload, **options)


def load_detector(weights: str | os.PathLike, device: Any = "auto", **options: Any) -> Detector:
    """``"hog"``: the HOG baseline; ``"coco"``, ``"coco-v1"``, ``"coco-mobilenet"``:
    torchvision's COCO Faster R-CNN as a person detector; else any checkpoint that can detect
    (detector, joint)."""
    if str(weights).lower() != HOG_NAME:
        options.pop("upscale", None)  # HOG's options
        options.pop("contain", None)
    return load_model(weights, "detect", device, **options)


def load_embedder(path: str | os.PathLike, device: Any = "auto", **options: Any) -> Embedder:
    """Any checkpoint that can embed boxes (re-ID, joint), or a re-ID ``.onnx`` export."""
    return load_model(path, "embed", device, **options)


def load_pair_scorer(path: str | os.PathLike, device: Any = "auto", **options: Any
                     ) -> PairScorer:
    """Any checkpoint that searches query-gallery pairs (qeeps)."""
    return load_model(path, "pairs", device, **options)
