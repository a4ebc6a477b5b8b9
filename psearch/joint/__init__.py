"""psearch.joint: joint person-search models (one network detects and embeds people).

>>> from psearch.joint import JointSearcher
>>> searcher = JointSearcher.from_checkpoint("runs/joint/last.pt", device="cpu")
>>> [(boxes, scores, feats)] = searcher.detect_and_embed([rgb_uint8])

Layout: ``config`` (defaults, strict resolution), ``roi_heads`` (``PersonSearchRoIHeads``:
torchvision's RoI heads + an embedding head and an identity loss), ``model``
(``JointSearchModel``; ``build_joint_model`` picks it or ``alignps.AlignPS``, the anchor-free
model), ``train`` (through ``psearch.training.loop.fit``), ``infer``
(``JointSearcher``: the Detector and Embedder roles), ``evaluate``, ``embed`` (gallery
embeddings: ``detect --embed``, ``embed`` on full frames), ``commands``. Names are imported
lazily, so that the CLI starts without loading torch.
"""

from __future__ import annotations

from psearch.core.lazy import lazy_getattr

_EXPORTS = {
    "AlignPS": "psearch.joint.alignps",
    "build_joint_model": "psearch.joint.model",
    "JointSearchModel": "psearch.joint.model",
    "JointSearcher": "psearch.joint.infer",
    "PersonSearchRoIHeads": "psearch.joint.roi_heads",
    "train_joint": "psearch.joint.train",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
