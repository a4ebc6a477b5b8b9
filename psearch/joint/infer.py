"""A trained joint model for users and the other stages: it detects (``Detector`` role), embeds
boxes on their full frame (``Embedder`` role), or both in one pass.

>>> searcher = JointSearcher.from_checkpoint("runs/joint/last.pt", device="cpu")
>>> [(boxes, scores)] = searcher.detect([rgb_uint8])
>>> [(boxes, scores, feats)] = searcher.detect_and_embed([rgb_uint8])   # feats [K, 256]
>>> feats = searcher.embed_boxes(rgb_uint8, boxes)                       # float32 [K, 256]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psearch.core.checkpoint import checkpoint_of_kind, load_model_state
from psearch.core.device import resolve_device
from psearch.detector.inference import detection_limits
from psearch.joint.config import CHECKPOINT_KIND, resolve_joint_config
from psearch.joint.model import JointModel, build_joint_model
from psearch.nn.images import image_tensors

LOSS_PREFIX = "roi_heads.criterion."
"""State-dict keys of the identity loss (OIM table and queue): training state only."""
LOSS_PREFIXES = (LOSS_PREFIX, "criterion.")
"""The same for every joint model (AlignPS keeps its loss at the top level)."""

Detections = list[tuple[np.ndarray, np.ndarray, np.ndarray]]
"""Per image: boxes float32 [K, 4], scores float32 [K], embeddings float32 [K, D] (unit)."""


class JointSearcher:
    """Inference wrapper of a joint model (``JointModel``: ``JointSearchModel`` or ``AlignPS``;
    eval mode, no gradients, numpy in/out).

    Plays both roles of ``psearch.registry``: ``Detector`` and (frame-based) ``Embedder``.
    """

    source = "frames"
    """``Embedder`` role: boxes are embedded on their full frame (``psearch embed`` decodes
    frames, not crops)."""

    def __init__(self, model: JointModel, config: dict[str, Any],
                 device: str | torch.device | None = "cpu", checkpoint: str | None = None,
                 batch_size: int = 8) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.config, self.batch_size = config, batch_size
        self.checkpoint_path = Path(checkpoint) if checkpoint else None

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device | None = "cpu",
                        batch_size: int = 8, payload: dict[str, Any] | None = None
                        ) -> JointSearcher:
        """Rebuild from a ``psearch train-joint`` checkpoint (no weight files needed);
        ``payload``: the checkpoint already loaded (``psearch.registry`` passes it)."""
        payload = checkpoint_of_kind(path, CHECKPOINT_KIND, payload)
        config = resolve_joint_config(payload["config"])
        model = build_joint_model(config, load_weights=False, with_loss=False)
        load_model_state(model, payload["model"], path, skip_prefixes=LOSS_PREFIXES)
        return cls(model, config, device=device, checkpoint=str(Path(path).resolve()),
                   batch_size=batch_size)

    @property
    def dim(self) -> int:
        return self.model.dim

    @torch.inference_mode()
    def detect_and_embed(self, images: list[np.ndarray], score_thresh: float = 0.5,
                         max_detections: int | None = None) -> Detections:
        """Detections of RGB uint8 [H, W, 3] images with their embeddings, one forward pass
        per batch; sorted by descending score."""
        out: Detections = []
        with detection_limits(self.model.score_limits, score_thresh, max_detections):
            for start in range(0, len(images), self.batch_size):
                batch = image_tensors(images[start:start + self.batch_size], self.device)
                out.extend((d["boxes"].float().cpu().numpy(), d["scores"].float().cpu().numpy(),
                            d["embeddings"].float().cpu().numpy())
                           for d in self.model.detect(batch))
        return out

    def detect(self, images: list[np.ndarray], score_thresh: float = 0.5,
               max_detections: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """``Detector`` protocol: per image boxes float32 [K, 4] and scores float32 [K]."""
        return [(b, s) for b, s, _ in self.detect_and_embed(images, score_thresh,
                                                            max_detections)]

    @torch.inference_mode()
    def embed_images_boxes(self, images: list[np.ndarray], boxes: list[np.ndarray]
                           ) -> list[np.ndarray]:
        """Embeddings float32 [K_i, D] of ``boxes[i]`` [K_i, 4] pooled on ``images[i]``'s
        full frame, batched by ``batch_size`` images."""
        out: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            tensors = image_tensors(images[chunk], self.device)
            box_tensors = [torch.as_tensor(np.asarray(b, np.float32).reshape(-1, 4),
                                           device=self.device) for b in boxes[chunk]]
            out.extend(f.float().cpu().numpy()
                       for f in self.model.embed_boxes(tensors, box_tensors))
        return out

    def embed_boxes(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """``Embedder`` protocol: float32 [N, D] unit embeddings of ``boxes`` [N, 4] in
        ``image`` (RoI pooling on the full frame, not on crops)."""
        return self.embed_images_boxes([image], [boxes])[0]

    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        """Embeddings [N, D] of already-cropped people: each crop's whole frame is its box."""
        out = self.embed_images_boxes(
            crops, [np.array([[0, 0, c.shape[1], c.shape[0]]], np.float32) for c in crops])
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def describe(self) -> dict[str, Any]:
        return {"backend": "joint", "model": self.config["reid"]["model"],
                "checkpoint": str(self.checkpoint_path) if self.checkpoint_path else None,
                "backbone": self.config["model"]["backbone"], "dim": self.dim,
                "device": str(self.device)}
