"""AlignPS (Yan et al., "Anchor-Free Person Search", CVPR 2021): an anchor-free joint model.

torchvision's FCOS on one fused feature map, whose every location is also a 256-d re-ID
feature:

- **body**: the multi-level backbone of ``psearch.detector.model.build_backbone`` (its FPN left
  out), levels C3..C5 for ResNet-50 (``model.returned_layers: [2, 3, 4]``, strides 8-32);
- **AFA** (aligned feature aggregation, ``AlignedFeatureAggregation``), which replaces the FPN:
  every level through a 3x3 *deformable* lateral conv (region alignment), the coarser levels
  upsampled (nearest) and *concatenated* onto the finest rather than added (scale alignment),
  then one 3x3 deformable conv to ``reid.dim`` channels: a single map at the finest stride (8)
  that serves re-ID first (task alignment: the detection head reads the re-ID map);
- the map minus its per-image spatial mean (the released model's "sub" variant) is the re-ID
  feature map; FCOS's towers (``FCOSHead``: 4 convs + GroupNorm, focal classification,
  GIoU regression normalised by the stride, centre-ness on the regression tower, centre
  sampling radius 1.5) read it;
- **TOIM** (``psearch.nn.losses.TOIMLoss``): at every positive location (centre sampling assigns a
  location to the smallest box whose centre region holds it; ``AlignPSHead`` keeps these
  matches, so the location inherits that box's person id) the L2-normalised feature enters
  OIM (lookup table + queue) and a batch-hard triplet over the batch and the table rows.

At test time a detection's embedding is the feature of the location that predicted it; a given
box (a query, ``embed_boxes``) is embedded by bilinear sampling of the map at the box centre.

Facts and their sources (daodaofr/AlignPS, the authors' mmdetection code: configs/fcos/
``fcos_center-normbbox-centeronreg-giou_r50_caffe_fpn_gn-head_dcn_4x4_1x_cuhk_reid_1500_stage1_
fpncat_dcn_epoch24_multiscale_focal_x4_bg-2_lconv3dcn_sub_triqueue_dcn0.py`` = AlignPS on
CUHK-SYSU, 93.1 mAP / 93.4 top-1 in its README; neck ``FPNDcnLconv3Dcn``; head
``FCOSReidHeadFocalSubTriQueue``; ``triplet_loss.TripletLossFilter``):
regress ranges that give every person to the stride-8 level (the others only see background
and are dropped at test: we compute the stride-8 map alone); deformable 3x3 lateral and output
convs with concatenation; mean subtraction; FCOS with centre sampling 1.5, normalised
regression, centre-ness on the regression branch, GIoU, focal loss (alpha 0.25, gamma 2);
OIM logits x10 in a focal form ``(1 - p)^2 log p``, lookup table momentum 0.5, queue 5,000
(CUHK-SYSU); triplet margin 0.3 with batch-hard mining over the positive locations' features and
the table rows of their ids; all loss weights 1; test NMS 0.5, 1,000 candidates, at most 100
detections. Ours: the torchvision parts' own loss normalisations (per foreground location),
psearch's OIM (table rows re-normalised, whole features queued: the released code queues the
first 64 dimensions only and skips re-normalisation), the triplet leaves out table rows never
written, the head towers are plain convs (the released head puts a DCNv2 in their last conv),
the mean is taken over each image's own area (not the batch's padding), and queries are
embedded at their box centre (the released evaluation takes the query image's detection of
highest IoU).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.ops import DeformConv2d
from torchvision.ops import boxes as box_ops

from psearch.detector.model import build_backbone
from psearch.joint.roi_heads import BACKGROUND_PID
from psearch.nn.losses import build_loss


class DeformableConv3x3(nn.Module):
    """A 3x3 deformable convolution (``torchvision.ops.DeformConv2d``) whose sampling offsets a
    plain 3x3 conv predicts from the same input (zero-initialised: it starts as a plain conv)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.offset = nn.Conv2d(in_channels, 2 * 3 * 3, 3, padding=1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.offset(x))


def conv3x3(in_channels: int, out_channels: int, deformable: bool) -> nn.Module:
    if deformable:
        return DeformableConv3x3(in_channels, out_channels)
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


class AlignedFeatureAggregation(nn.Module):
    """AFA: levels [N, C_i, H_i, W_i] (finest first) -> one map [N, out_channels, H_0, W_0].

    Lateral 3x3 convs to ``lateral_channels``, top-down nearest upsampling with concatenation
    (the finest level ends up with ``len(in_channels) x lateral_channels``), a 3x3 fusion conv.
    """

    def __init__(self, in_channels: list[int], lateral_channels: int, out_channels: int,
                 deformable: bool = True) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(conv3x3(c, lateral_channels, deformable)
                                      for c in in_channels)
        self.fuse = conv3x3(len(in_channels) * lateral_channels, out_channels, deformable)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(x) for conv, x in zip(self.laterals, levels, strict=True)]
        merged = laterals[-1]
        for lateral in reversed(laterals[:-1]):
            merged = torch.cat([lateral, F.interpolate(merged, size=lateral.shape[-2:],
                                                       mode="nearest")], 1)
        return self.fuse(merged)


class AlignedBackbone(nn.Module):
    """A multi-level body followed by AFA: images [N, 3, H, W] -> [N, out_channels, H/s, W/s],
    ``s = stride`` (that of the body's finest returned level)."""

    def __init__(self, body: nn.Module, afa_cfg: dict[str, Any], out_channels: int) -> None:
        super().__init__()
        self.body = body
        with torch.no_grad():  # the levels' widths and the finest stride, from a dry run
            mode = body.training
            levels = list(body.eval()(torch.zeros(1, 3, 256, 256)).values())
            body.train(mode)
        self.stride = 256 // levels[0].shape[-1]
        self.afa = AlignedFeatureAggregation([x.shape[1] for x in levels],
                                             int(afa_cfg["lateral_channels"]), out_channels,
                                             bool(afa_cfg["deformable"]))
        self.out_channels = out_channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.afa(list(self.body(images).values()))


class AlignPSHead(FCOSHead):
    """torchvision's ``FCOSHead`` that keeps, per image, the ground-truth box matched to each
    location by the last ``FCOS.compute_loss`` (``matched_idxs``, -1 for background), so that
    the person ids reach the positive locations; an optional 1x1 conv first projects the re-ID
    map to the towers' width."""

    def __init__(self, in_channels: int, head_channels: int, num_convs: int) -> None:
        super().__init__(head_channels, num_anchors=1, num_classes=1, num_convs=num_convs)
        self.project = (nn.Identity() if head_channels == in_channels
                        else nn.Conv2d(in_channels, head_channels, 1))
        self.matched_idxs: list[torch.Tensor] = []

    def forward(self, x: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return super().forward([self.project(f) for f in x])

    def compute_loss(self, targets: list[dict[str, torch.Tensor]],
                     head_outputs: dict[str, torch.Tensor], anchors: list[torch.Tensor],
                     matched_idxs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        self.matched_idxs = matched_idxs
        return super().compute_loss(targets, head_outputs, anchors, matched_idxs)


class AlignPS(FCOS):
    """torchvision ``FCOS`` on ``AlignedBackbone``'s one map, with re-ID (module docstring).

    The joint-model interface of ``JointSearchModel``: ``forward(images, targets)`` -> loss
    terms in training; ``detect``, ``embed_boxes``, ``dim``, ``score_limits``.
    """

    def __init__(self, backbone: AlignedBackbone, head: AlignPSHead,
                 criterion: nn.Module | None, subtract_mean: bool = True, **fcos_kwargs) -> None:
        stride = backbone.stride
        super().__init__(backbone, num_classes=1, head=head,
                         anchor_generator=AnchorGenerator(((stride,),), ((1.0,),)),
                         **fcos_kwargs)
        self.criterion, self.subtract_mean = criterion, subtract_mean

    @classmethod
    def from_config(cls, config: dict[str, Any], load_weights: bool = True,
                    with_loss: bool = True) -> AlignPS:
        """Build from a resolved joint config with ``reid.model: alignps`` (``reid.num_ids`` set
        when ``with_loss``). ``model.weights`` may only be ``null`` or ``"imagenet"`` (the
        body's weights, as ``build_backbone`` loads them); ``load_weights`` is accepted for
        the joint models' common signature."""
        del load_weights  # the body's ImageNet weights are part of the backbone's build
        model_cfg, reid, parts = config["model"], config["reid"], config["alignps"]
        fpn_backbone, _ = build_backbone(model_cfg)  # ImageNet weights (if any) come with it
        dim = int(reid["dim"])
        backbone = AlignedBackbone(fpn_backbone.body, parts, dim)
        head = AlignPSHead(dim, int(parts["head_channels"] or dim), int(parts["head_convs"]))
        criterion = None
        if with_loss:
            criterion = build_loss(reid["loss"], dim, int(reid["num_ids"]), reid)
        box = model_cfg["box"]
        return cls(backbone, head, criterion, bool(parts["subtract_mean"]),
                   min_size=model_cfg["min_size"], max_size=model_cfg["max_size"],
                   center_sampling_radius=float(parts["center_sampling_radius"]),
                   score_thresh=box["score_thresh"], nms_thresh=box["nms_thresh"],
                   detections_per_img=box["detections_per_img"],
                   topk_candidates=int(parts["topk_candidates"]))

    @property
    def dim(self) -> int:
        return int(self.backbone.out_channels)

    @property
    def score_limits(self) -> nn.Module:
        """The module whose ``score_thresh`` and ``detections_per_img`` filter detections."""
        return self

    def _features(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        """(resized batch, resized targets, re-ID map [N, D, h, w], original sizes)."""
        original = [tuple(img.shape[-2:]) for img in images]
        batch, targets = self.transform(images, targets)
        fmap = self.backbone(batch.tensors)
        if self.subtract_mean:
            fmap = fmap - self._image_means(fmap, batch.tensors.shape[-2:], batch.image_sizes)
        return batch, targets, fmap, original

    @staticmethod
    def _image_means(fmap: torch.Tensor, padded: tuple[int, int],
                     sizes: list[tuple[int, int]]) -> torch.Tensor:
        """Per image and channel, the mean of ``fmap`` [N, D, h, w] over the image's own area
        (the batch's padding left out): [N, D, 1, 1]."""
        h, w = fmap.shape[-2:]
        rows = torch.arange(h, device=fmap.device)[None, :] < torch.tensor(
            [-(-s[0] * h // padded[0]) for s in sizes], device=fmap.device)[:, None]
        cols = torch.arange(w, device=fmap.device)[None, :] < torch.tensor(
            [-(-s[1] * w // padded[1]) for s in sizes], device=fmap.device)[:, None]
        mask = (rows[:, :, None] & cols[:, None, :]).to(fmap.dtype)[:, None]  # [N, 1, h, w]
        return (fmap * mask).sum((2, 3), keepdim=True) / mask.sum((2, 3), keepdim=True)

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None
                ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        """Training (targets with boxes, labels, pids): the loss terms; else ``detect``."""
        if not self.training:
            return self.detect(images)
        if targets is None or any("pids" not in t for t in targets):
            raise ValueError("training targets need 'boxes', 'labels' and 'pids'")
        person = [{**t, "labels": torch.zeros_like(t["labels"])} for t in targets]  # class 0
        batch, person, fmap, _ = self._features(images, person)
        head_outputs = self.head([fmap])
        anchors = self.anchor_generator(batch, [fmap])
        det = self.compute_loss(person, head_outputs, anchors, [fmap.shape[-2] * fmap.shape[-1]])
        losses = {"loss_classifier": det["classification"],
                  "loss_box_giou": det["bbox_regression"],
                  "loss_centerness": det["bbox_ctrness"]}
        pids = torch.stack(self.location_pids(person, self.head.matched_idxs))  # [N, h*w]
        feats = fmap.flatten(2).transpose(1, 2)  # [N, h*w, D]
        losses.update(self.reid_terms(feats[pids != BACKGROUND_PID],
                                      pids[pids != BACKGROUND_PID]))
        return losses

    @staticmethod
    def location_pids(targets: list[dict], matched_idxs: list[torch.Tensor]
                      ) -> list[torch.Tensor]:
        """Per image int64 [h*w]: the person id of each location's matched ground-truth box
        (-1 unlabeled), ``BACKGROUND_PID`` where it matched none."""
        out = []
        for t, m in zip(targets, matched_idxs, strict=True):
            pids = t["pids"][m.clamp(min=0)] if len(t["pids"]) else torch.full_like(m, -1)
            out.append(torch.where(m >= 0, pids, BACKGROUND_PID))
        return out

    def reid_terms(self, feats: torch.Tensor, pids: torch.Tensor) -> dict[str, torch.Tensor]:
        """The identity loss on the positive locations' features [P, D] and ids [P]."""
        if self.criterion is None:
            return {}
        if hasattr(self.criterion, "terms"):
            return self.criterion.terms(feats, pids)
        return {"loss_oim": self.criterion(feats, pids)}

    def detect(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Per image ``{"boxes" [K, 4], "scores" [K], "embeddings" [K, dim], "labels"}``:
        score sqrt(class x centre-ness) over ``score_thresh``, the ``topk_candidates`` best
        locations, boxes clipped to the image (empty ones dropped), NMS, at most
        ``detections_per_img``; each box keeps its location's feature."""
        batch, _, fmap, original = self._features(images)
        out = self.head([fmap])
        anchors = self.anchor_generator(batch, [fmap])
        feats = fmap.flatten(2).transpose(1, 2)
        scores = torch.sqrt(out["cls_logits"].sigmoid() * out["bbox_ctrness"].sigmoid())[..., 0]
        results = []
        for i, shape in enumerate(batch.image_sizes):
            keep = torch.where(scores[i] > self.score_thresh)[0]
            keep = keep[scores[i, keep].topk(min(len(keep), self.topk_candidates)).indices]
            boxes = self.box_coder.decode(out["bbox_regression"][i, keep], anchors[i][keep])
            boxes = box_ops.clip_boxes_to_image(boxes, shape)
            sized = box_ops.remove_small_boxes(boxes, min_size=1e-2)  # as RoIHeads does
            boxes, keep = boxes[sized], keep[sized]
            kept = box_ops.nms(boxes, scores[i, keep], self.nms_thresh)[:self.detections_per_img]
            results.append({"boxes": boxes[kept], "scores": scores[i, keep[kept]],
                            "embeddings": F.normalize(feats[i, keep[kept]], dim=1),
                            "labels": torch.ones(len(kept), dtype=torch.int64,
                                                 device=boxes.device)})
        return self.transform.postprocess(results, batch.image_sizes, original)

    def embed_boxes(self, images: list[torch.Tensor], boxes: list[torch.Tensor]
                    ) -> list[torch.Tensor]:
        """Unit embeddings [K_i, dim] of ``boxes[i]`` [K_i, 4] in ``images[i]``: the re-ID map
        sampled bilinearly at each box centre (locations sit at ``stride * index``)."""
        batch, _, fmap, original = self._features(images)
        h, w = fmap.shape[-2:]
        stride_y, stride_x = (batch.tensors.shape[-2] / h, batch.tensors.shape[-1] / w)
        out = []
        for i, (b, (oh, ow), (rh, rw)) in enumerate(zip(boxes, original, batch.image_sizes,
                                                        strict=True)):
            cx = (b[:, 0] + b[:, 2]).float() / 2 * (rw / ow) / stride_x
            cy = (b[:, 1] + b[:, 3]).float() / 2 * (rh / oh) / stride_y
            grid = torch.stack([2 * cx / max(w - 1, 1) - 1, 2 * cy / max(h - 1, 1) - 1], -1)
            sampled = F.grid_sample(fmap[i:i + 1], grid[None, None].to(fmap.dtype),
                                    mode="bilinear", align_corners=True)  # [1, D, 1, K]
            out.append(F.normalize(sampled[0, :, 0].t(), dim=1))
        return out

