"""psearch.joint: joint person-search models (one network detects and embeds people).

>>> from psearch.joint import JointSearcher
>>> searcher = JointSearcher.from_checkpoint("runs/joint/last.pt", device="cpu")
>>> [(boxes, scores, feats)] = searcher.detect_and_embed([rgb_uint8])

Layout: ``config`` (defaults, strict resolution), ``roi_heads`` (``PersonSearchRoIHeads``:
torchvision's RoI heads + an embedding head and an identity loss), ``model``
(``JointSearchModel``), ``train``, ``infer`` (``JointSearcher``), ``evaluate``, ``commands``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["JointSearchModel", "JointSearcher"]


def __getattr__(name: str) -> Any:  # lazy: ``psearch.joint.commands`` must not import torch
    if name == "JointSearcher":
        from psearch.joint.infer import JointSearcher
        return JointSearcher
    if name == "JointSearchModel":
        from psearch.joint.model import JointSearchModel
        return JointSearchModel
    raise AttributeError(name)
