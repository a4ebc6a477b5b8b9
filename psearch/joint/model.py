"""``JointSearchModel``: one Faster R-CNN that detects people and embeds them (OIM, Xiao et al.
2017), assembled from the detector's public parts with ``PersonSearchRoIHeads``.

>>> model = JointSearchModel.from_config(config)          # a resolved joint config
>>> losses = model(images, targets)                         # training: dict of loss terms
>>> [det] = model.detect([image])                           # det["boxes"|"scores"|"embeddings"]
>>> [feats] = model.embed_boxes([image], [boxes])           # [K, dim] unit norm

Images are RGB float tensors [3, H, W] in [0, 1]; boxes (x1, y1, x2, y2) in their pixels.
``forward`` is written here rather than inherited from ``GeneralizedRCNN``, whose forward keeps
only boxes, labels and scores of the detections (the embeddings would be lost).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from psearch.detector.model import build_detector
from psearch.joint.config import PAIR_MODELS
from psearch.joint.inet import pair_roi_heads_factory
from psearch.joint.roi_heads import EmbeddingHead, PersonSearchRoIHeads
from psearch.nn.losses import build_loss


def head_width(box_head: nn.Module) -> int:
    """Width of the RoI features a box head outputs (C4: layer4 channels; FPN: fc7)."""
    width = getattr(box_head, "out_channels", None)
    return int(width if width is not None else box_head.fc7.out_features)


def _roi_heads_factory(reid: dict[str, Any], with_loss: bool):
    def build(**kwargs: Any) -> PersonSearchRoIHeads:
        dim = int(reid["dim"])
        criterion = None
        if with_loss:
            criterion = build_loss(reid["loss"], dim, int(reid["num_ids"]), reid)
        return PersonSearchRoIHeads(
            embedding_head=EmbeddingHead(head_width(kwargs["box_head"]), dim),
            criterion=criterion, reid_weight=float(reid["weight"]), **kwargs)
    return build


class JointModel(Protocol):
    """What inference, evaluation and training need of a joint model (``JointSearchModel``,
    ``psearch.joint.alignps.AlignPS``): an ``nn.Module`` whose ``forward(images, targets)``
    returns loss terms in training, plus the methods below."""

    dim: int
    score_limits: nn.Module
    """The module whose ``score_thresh`` and ``detections_per_img`` filter detections."""

    def detect(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]: ...

    def embed_boxes(self, images: list[torch.Tensor], boxes: list[torch.Tensor]
                    ) -> list[torch.Tensor]: ...


def build_joint_model(config: dict[str, Any], load_weights: bool = True,
                      with_loss: bool = True) -> nn.Module:
    """The joint model of a resolved config: ``AlignPS`` for ``reid.model: alignps``, else a
    ``JointSearchModel`` (OIM, I-Net, DC-I-Net); see ``JointSearchModel.from_config``."""
    if config["reid"]["model"] == "alignps":
        from psearch.joint.alignps import AlignPS

        return AlignPS.from_config(config, load_weights=load_weights, with_loss=with_loss)
    return JointSearchModel.from_config(config, load_weights=load_weights, with_loss=with_loss)


class JointSearchModel(nn.Module):
    """transform -> backbone -> RPN -> ``PersonSearchRoIHeads`` (see the module docstring)."""

    def __init__(self, transform: nn.Module, backbone: nn.Module, rpn: nn.Module,
                 roi_heads: PersonSearchRoIHeads) -> None:
        super().__init__()
        self.transform, self.backbone, self.rpn, self.roi_heads = (transform, backbone, rpn,
                                                                   roi_heads)

    @classmethod
    def from_config(cls, config: dict[str, Any], load_weights: bool = True,
                    with_loss: bool = True) -> JointSearchModel:
        """Build from a resolved joint config (``reid.num_ids`` set when ``with_loss``).

        ``with_loss=False`` leaves out the identity loss and its memory (the OIM table and
        queue; I-Net's dictionary, classifier or class centres), which inference does not need.
        """
        if config["reid"]["model"] in PAIR_MODELS:  # I-Net, DC-I-Net: psearch.joint.inet
            factory = pair_roi_heads_factory(config, with_loss)
        else:
            factory = _roi_heads_factory(config["reid"], with_loss)
        det = build_detector(config["model"], load_weights=load_weights, roi_heads=factory)
        return cls(det.transform, det.backbone, det.rpn, det.roi_heads)

    @property
    def dim(self) -> int:
        return int(self.roi_heads.embedding_head.fc.out_features)

    @property
    def score_limits(self) -> nn.Module:
        """The module whose ``score_thresh`` and ``detections_per_img`` filter detections."""
        return self.roi_heads

    def _features(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        original = [tuple(img.shape[-2:]) for img in images]
        batch, targets = self.transform(images, targets)
        features = self.backbone(batch.tensors)
        if isinstance(features, torch.Tensor):
            features = {"0": features}
        return batch, targets, features, original

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None
                ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Training (with targets: boxes, labels, pids): the loss terms; else ``detect``."""
        if not self.training:
            return self.detect(images)
        batch, targets, features, _ = self._features(images, targets)
        proposals, rpn_losses = self.rpn(batch, features, targets)
        _, head_losses = self.roi_heads(features, proposals, batch.image_sizes, targets)
        return {**rpn_losses, **head_losses}

    def detect(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Per image ``{"boxes" [K, 4], "scores" [K], "embeddings" [K, dim], "labels"}`` in one
        pass (the roi_heads' ``score_thresh`` and ``detections_per_img`` apply)."""
        batch, _, features, original = self._features(images)
        proposals, _ = self.rpn(batch, features)
        detections, _ = self.roi_heads(features, proposals, batch.image_sizes)
        return self.transform.postprocess(detections, batch.image_sizes, original)

    def embed_boxes(self, images: list[torch.Tensor], boxes: list[torch.Tensor]
                    ) -> list[torch.Tensor]:
        """Unit embeddings [K_i, dim] of ``boxes[i]`` [K_i, 4] in ``images[i]``, pooled from the
        full frame's features (as the detections' own embeddings are)."""
        batch, _, features, original = self._features(images)
        scaled = []
        for b, (h, w), (rh, rw) in zip(boxes, original, batch.image_sizes, strict=True):
            factor = torch.tensor([rw / w, rh / h, rw / w, rh / h], device=b.device)
            scaled.append(b.float() * factor)
        feats = self.roi_heads.embed(features, scaled, batch.image_sizes)
        return list(feats.split([len(b) for b in boxes]))
