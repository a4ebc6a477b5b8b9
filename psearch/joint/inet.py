"""I-Net and DC-I-Net RoI heads (He & Zhang, ACCV 2018; Zhang et al., TPAMI), built on the OIM
model's ``PersonSearchRoIHeads``.

- ``INetRoIHeads`` (``reid.model: inet``): re-ID on the sampled first-stage proposals, reading
  the RoI features shared with detection (as OIM), trained with ``PairCriterion`` (OLP + HEP by
  default) on batches of image pairs: each foreground RoI knows its image, so cross-image
  positives can be formed.
- ``DCINetRoIHeads`` (``reid.model: dcinet``): divide and conquer. Detection as before; re-ID on
  the *refined* second-stage boxes, re-pooled with RoI Align (``reid.roi_size``, 14x7 h x w by
  default: person-shaped) into a head of its own (a copy of the C4 layer4 head, or a new
  two-layer MLP on FPN backbones) and embedding layer (OLP + C2HEP by default). In training the
  refined boxes (regression detached) are matched again to the ground truth (IoU >= the box
  head's foreground threshold) for their person ids; at test time the kept detections are
  re-pooled, so every embedding is that of the box it comes with.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.roi_heads import fastrcnn_loss
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import boxes as box_ops

from psearch.joint.roi_heads import BACKGROUND_PID, EmbeddingHead, PersonSearchRoIHeads
from psearch.nn.inet_losses import PairCriterion


def dictionary_size(reid: dict[str, Any], rois_per_image: int) -> int:
    """OLP dictionary slots: ``reid.dictionary_size``, else ``dictionary_factor`` x the RoIs
    sampled per image (the paper: 40 x 128 = 5,120)."""
    if reid.get("dictionary_size"):
        return int(reid["dictionary_size"])
    return int(reid["dictionary_factor"]) * int(rois_per_image)


def build_pair_criterion(reid: dict[str, Any], rois_per_image: int) -> PairCriterion:
    """The ``PairCriterion`` of a resolved ``reid`` config section (``num_ids`` set)."""
    return PairCriterion(
        reid["loss"], int(reid["dim"]), int(reid["num_ids"]),
        dictionary_size(reid, rois_per_image), olp_scale=float(reid["olp_scale"]),
        hard_negatives=int(reid["hard_negatives"]), pool_size=int(reid["pool_size"]),
        c2hep_scale=float(reid["c2hep_scale"]), momentum=float(reid["momentum"]),
        olp_weight=float(reid["olp_weight"]), cls_weight=float(reid["weight"]))


class INetRoIHeads(PersonSearchRoIHeads):
    """``PersonSearchRoIHeads`` whose criterion is a ``PairCriterion``: its terms (``loss_olp``,
    ``loss_hep`` / ``loss_c2hep``) replace ``loss_reid``."""

    def forward(self, features, proposals, image_shapes, targets=None):
        detections, losses = super().forward(features, proposals, image_shapes, targets)
        if self.training:
            losses.pop("loss_reid")
            losses.update(self._terms)
        return detections, losses

    def _image_index(self) -> torch.Tensor:
        """Image of each sampled RoI (the order of ``torch.cat(self.sampled_pids)``)."""
        counts = torch.tensor([len(p) for p in self.sampled_pids])
        images = torch.repeat_interleave(torch.arange(len(counts)), counts)
        return images.to(self.sampled_pids[0].device)

    def reid_loss(self, feats: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        self._terms = self.pair_terms(feats, pids, self._image_index())
        return feats.sum() * 0.0

    def pair_terms(self, feats: torch.Tensor, pids: torch.Tensor, images: torch.Tensor
                   ) -> dict[str, torch.Tensor]:
        """The criterion's terms on the foreground RoIs (zeros when there is no criterion or
        fewer than 2 of them: BatchNorm needs two samples)."""
        fg = pids != BACKGROUND_PID
        if self.criterion is None or int(fg.sum()) < 2:
            return {}
        return self.criterion(self.embedding_head(feats[fg]), pids[fg], images[fg])


class DCINetRoIHeads(INetRoIHeads):
    """Re-ID on refined boxes with a head of its own (see the module docstring)."""

    def __init__(self, *args, reid_roi_pool: nn.Module, reid_head: nn.Module, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reid_roi_pool, self.reid_head = reid_roi_pool, reid_head

    def forward(self, features, proposals, image_shapes, targets=None):
        if not self.training:
            return self._detect(features, proposals, image_shapes), {}
        if targets is None or any("pids" not in t for t in targets):
            raise ValueError("training targets need 'boxes', 'labels' and 'pids'")
        proposals, _, labels, regression = self.sample_with_pids(proposals, targets)
        feats = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(feats)
        loss_cls, loss_reg = fastrcnn_loss(class_logits, box_regression, labels, regression)
        refined = self.box_coder.decode(box_regression.detach(), proposals)[:, 1]
        boxes, pids, images = self._refined_targets(refined, proposals, image_shapes, targets)
        terms = {}
        if len(boxes) >= 2:
            reid_feats = self.reid_head(self.reid_roi_pool(features, boxes, image_shapes))
            terms = self.pair_terms(reid_feats, torch.cat(pids), images)
        return [], {"loss_classifier": loss_cls, "loss_box_reg": loss_reg, **terms}

    def _refined_targets(self, refined: torch.Tensor, proposals: list[torch.Tensor],
                         image_shapes: list[tuple[int, int]], targets: list[dict]):
        """Per image: the refined boxes that match a ground-truth person, their pids, and the
        image index of each (concatenated)."""
        boxes, pids, images = [], [], []
        for i, (b, shape, t) in enumerate(zip(refined.split([len(p) for p in proposals]),
                                              image_shapes, targets, strict=True)):
            b = box_ops.clip_boxes_to_image(b, shape)
            if len(t["boxes"]):
                match = self.proposal_matcher(box_ops.box_iou(t["boxes"], b))
                keep = match >= 0
                b, pid = b[keep], t["pids"][match[keep]]
            else:
                b, pid = b[:0], t["pids"][:0]
            boxes.append(b)
            pids.append(pid)
            images.append(torch.full((len(b),), i, dtype=torch.int64, device=b.device))
        return boxes, pids, torch.cat(images)

    def _detect(self, features, proposals, image_shapes) -> list[dict[str, torch.Tensor]]:
        feats = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(feats)
        none = feats.new_zeros((len(feats), 0))
        results = self.postprocess(class_logits, box_regression, none, proposals, image_shapes)
        embeddings = self.embed(features, [r["boxes"] for r in results], image_shapes)
        for r, e in zip(results, embeddings.split([len(r["boxes"]) for r in results]),
                        strict=True):
            r["embeddings"] = e
        return results

    def embed(self, features, boxes, image_shapes) -> torch.Tensor:
        if not sum(len(b) for b in boxes):
            dim = self.embedding_head.fc.out_features
            return features[next(iter(features))].new_zeros((0, dim))
        feats = self.reid_head(self.reid_roi_pool(features, boxes, image_shapes))
        return F.normalize(self.embedding_head(feats), dim=1)


def reid_branch(box_roi_pool: MultiScaleRoIAlign, box_head: nn.Module,
                roi_size: tuple[int, int]) -> tuple[MultiScaleRoIAlign, nn.Module, int]:
    """DC-I-Net's own re-ID pooler and head: RoI Align to ``roi_size`` (h, w) on the detector's
    maps, then a copy of the C4 layer4 head (starting from its weights) or, on FPN backbones, a
    new ``TwoMLPHead`` as wide as the box head. Returns (pooler, head, output width)."""
    pool = MultiScaleRoIAlign(box_roi_pool.featmap_names, output_size=tuple(roi_size),
                              sampling_ratio=box_roi_pool.sampling_ratio)
    if isinstance(box_head, TwoMLPHead):
        h, w = box_roi_pool.output_size
        channels = box_head.fc6.in_features // (h * w)
        width = box_head.fc7.out_features
        return pool, TwoMLPHead(channels * roi_size[0] * roi_size[1], width), width
    return pool, copy.deepcopy(box_head), int(box_head.out_channels)


def pair_roi_heads_factory(config: dict[str, Any], with_loss: bool):
    """A ``build_detector(roi_heads=...)`` factory for ``reid.model`` inet or dcinet."""
    reid = config["reid"]
    rois = int(config["model"]["box"]["batch_size_per_image"])

    def build(**kwargs: Any) -> INetRoIHeads:
        dim = int(reid["dim"])
        criterion = build_pair_criterion(reid, rois) if with_loss else None
        box_head = kwargs["box_head"]
        if reid["model"] == "inet":
            width = getattr(box_head, "out_channels", None) or box_head.fc7.out_features
            return INetRoIHeads(embedding_head=EmbeddingHead(int(width), dim),
                                criterion=criterion, **kwargs)
        pool, head, width = reid_branch(kwargs["box_roi_pool"], box_head,
                                        tuple(int(v) for v in reid["roi_size"]))
        return DCINetRoIHeads(embedding_head=EmbeddingHead(width, dim), criterion=criterion,
                              reid_roi_pool=pool, reid_head=head, **kwargs)
    return build
