"""QEEPS (Munjal et al. 2019): the OIM joint model searched *with* the query.

Built on a trained ``JointSearchModel`` (ResNet C4 split), whose modules it keeps and wraps:

- ``QSSE``: after every residual block of the trunk (layer1..layer3), one squeeze-and-excitation
  gate computed from both streams, ``s = sigmoid(W2 relu(W1 [GAP(U_q); GAP(U_g)]))``
  (``W1``: 2C -> 2C/16, ``W2``: 2C/16 -> C), and ``X~ = X + s * U`` in *both* streams;
- ``QueryRPN``: the query box RoI-pooled on the query map, FC1 over all channels and pixels ->
  C/16, ReLU, FC2 -> C, sigmoid; these weights scale the gallery map per channel, an
  objectness-only RPN head reads it, and its logit is added to the RPN's before NMS (the boxes
  stay the RPN's). Its loss: 128 anchors, IoU >= 0.6 with the query person positive, < 0.3
  negative, never a negative on another person;
- ``QSimNet``: ``(f_q - f_g)^2 -> BatchNorm -> FC(2)``: the match score that ranks and NMSes the
  detections; the detector's score only drops those below ``qeeps.det_min`` (0.01).

Losses (all weight 1): the OIM model's RPN, box and OIM terms on the gallery image, plus
``loss_qrpn`` and ``loss_sim``. Our choices where the paper is silent: both streams keep their
own size (QSSE reads global averages only; no pad/crop), the OIM model's BatchNorm statistics
are frozen (batches of one pair), new gates start open (``s`` ~ 0.98) and the QRPN head starts
as a copy of the RPN's objectness head, the summed scores are logits.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler
from torchvision.ops import MultiScaleRoIAlign, box_iou
from torchvision.ops import boxes as box_ops
from torchvision.ops.misc import FrozenBatchNorm2d

from psearch.core.errors import PsearchError
from psearch.joint.model import JointSearchModel
from psearch.nn.c4 import ResNetC4Trunk

GATE_BIAS = 4.0
"""Initial bias of the gates' last layer: sigmoid(4) ~ 0.98, so a fresh QEEPS starts as its OIM
model (ours; the paper does not say how the new layers start)."""

DEFAULT_QEEPS_CONFIG: dict[str, Any] = {
    "reduction": 16,  # r of QSSE and QRPN's excitation
    "qrpn_batch": 128,  # anchors sampled per pair for loss_qrpn
    "qrpn_positive_fraction": 0.5,
    "qrpn_pos_iou": 0.6,  # IoU with the query person for a positive anchor
    "qrpn_neg_iou": 0.3,  # below: negative (unless on another person)
    "det_min": 0.01,  # detections under this detector score are dropped before QSimNet
    "sim_nms": 0.4,  # NMS IoU of the QSimNet-ranked detections
    "detections_per_img": 50,
}


class QSSE(nn.Module):
    """The gate of one residual block: ``(U_q [B, C, h, w], U_g [B, C, H, W]) -> s [B, C]``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, 2 * channels // reduction)
        self.fc1 = nn.Linear(2 * channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        nn.init.zeros_(self.fc2.weight)
        nn.init.constant_(self.fc2.bias, GATE_BIAS)

    def forward(self, u_query: torch.Tensor, u_gallery: torch.Tensor) -> torch.Tensor:
        z = torch.cat([u_query.mean((2, 3)), u_gallery.mean((2, 3))], 1)
        return torch.sigmoid(self.fc2(F.relu(self.fc1(z))))


def residual(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The residual branch U of a torchvision BasicBlock or Bottleneck (before the addition)."""
    out = F.relu(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    if hasattr(block, "conv3"):
        out = block.bn3(block.conv3(F.relu(out)))
    return out


def shortcut(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x if block.downsample is None else block.downsample(x)


class SiameseTrunk(nn.Module):
    """The OIM model's C4 trunk run on query and gallery images with a ``QSSE`` after each
    residual block of layer1..layer3 (weights shared by the streams)."""

    LAYERS = ("layer1", "layer2", "layer3")

    def __init__(self, trunk: ResNetC4Trunk, reduction: int = 16) -> None:
        super().__init__()
        if not isinstance(trunk, ResNetC4Trunk):
            raise PsearchError("QEEPS needs an OIM model with a ResNet C4 backbone "
                               "(model.backbone resnet18_c4 or resnet50_c4)")
        self.trunk = trunk
        self.out_channels = trunk.out_channels
        self.gates = nn.ModuleDict({
            f"{layer}_{i}": QSSE(residual_channels(block), reduction)
            for layer in self.LAYERS for i, block in enumerate(getattr(trunk.body, layer))})

    def forward(self, query: torch.Tensor, gallery: torch.Tensor
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Images [B, 3, h, w] and [B, 3, H, W] (pair b = row b) -> their C4 maps."""
        body = self.trunk.body
        xq, xg = query, gallery
        for name in ("conv1", "bn1", "relu", "maxpool"):
            xq, xg = getattr(body, name)(xq), getattr(body, name)(xg)
        for layer in self.LAYERS:
            for i, block in enumerate(getattr(body, layer)):
                uq, ug = residual(block, xq), residual(block, xg)
                s = self.gates[f"{layer}_{i}"](uq, ug)[:, :, None, None]
                xq = F.relu(shortcut(block, xq) + s * uq)
                xg = F.relu(shortcut(block, xg) + s * ug)
        key = ResNetC4Trunk.FEATURE
        return {key: xq}, {key: xg}


def residual_channels(block: nn.Module) -> int:
    last = block.bn3 if hasattr(block, "bn3") else block.bn2
    return int(last.num_features)


class QueryExcitation(nn.Module):
    """Query box -> channel weights [B, C] for the gallery map (QRPN's modified SE block)."""

    def __init__(self, channels: int, pool: MultiScaleRoIAlign, reduction: int = 16) -> None:
        super().__init__()
        self.pool = pool
        h, w = pool.output_size
        self.fc1 = nn.Linear(channels * h * w, max(1, channels // reduction))
        self.fc2 = nn.Linear(max(1, channels // reduction), channels)
        nn.init.normal_(self.fc1.weight, std=0.001)
        nn.init.zeros_(self.fc2.weight)
        nn.init.constant_(self.fc2.bias, GATE_BIAS)

    def forward(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
                image_sizes: list[tuple[int, int]]) -> torch.Tensor:
        pooled = self.pool(features, boxes, image_sizes).flatten(1)
        return torch.sigmoid(self.fc2(F.relu(self.fc1(pooled))))


class ObjectnessHead(nn.Module):
    """An RPN head without regression: 3x3 conv, ReLU, 1x1 conv to one logit per anchor;
    starts as a copy of ``rpn_head``'s objectness branch."""

    def __init__(self, rpn_head: nn.Module) -> None:
        super().__init__()
        conv = rpn_head.conv[0][0] if isinstance(rpn_head.conv, nn.Sequential) else rpn_head.conv
        self.conv = nn.Conv2d(conv.in_channels, conv.out_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(conv.out_channels, rpn_head.cls_logits.out_channels, 1)
        self.conv.load_state_dict(conv.state_dict())
        self.cls_logits.load_state_dict(rpn_head.cls_logits.state_dict())

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [self.cls_logits(F.relu(self.conv(f))) for f in features]


def flatten_levels(logits: list[torch.Tensor]) -> torch.Tensor:
    """Per-level [B, A, H, W] logits -> [B * sum(A H W), 1], in the anchors' order (as
    torchvision's ``concat_box_prediction_layers``)."""
    return torch.cat([o.permute(0, 2, 3, 1).reshape(o.shape[0], -1) for o in logits],
                     1).reshape(-1, 1)


def qrpn_labels(anchors: torch.Tensor, query_boxes: torch.Tensor, other_boxes: torch.Tensor,
                pos_iou: float = 0.6, neg_iou: float = 0.3) -> torch.Tensor:
    """QRPN anchor labels float [A]: 1 positive (IoU >= ``pos_iou`` with the query person, or
    its best anchor), 0 negative (IoU < ``neg_iou`` with it *and* with every other person),
    -1 ignored. ``query_boxes`` [0 or 1, 4] (absent in a negative pair), ``other_boxes`` [K, 4].
    """
    labels = torch.full((len(anchors),), -1.0, device=anchors.device)
    near_other = torch.zeros(len(anchors), dtype=torch.bool, device=anchors.device)
    if len(other_boxes):
        near_other = box_iou(anchors, other_boxes).max(1).values >= neg_iou
    iou_query = torch.zeros(len(anchors), device=anchors.device)
    if len(query_boxes):
        iou_query = box_iou(anchors, query_boxes).max(1).values
    labels[(iou_query < neg_iou) & ~near_other] = 0.0
    if len(query_boxes):
        labels[iou_query >= pos_iou] = 1.0
        labels[iou_query == iou_query.max()] = 1.0  # its best anchors, as the RPN's matcher
    return labels


class QueryRPN(nn.Module):
    """The OIM model's RPN plus a query-guided objectness (see the module docstring)."""

    def __init__(self, rpn: nn.Module, excitation: QueryExcitation, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.rpn, self.excitation = rpn, excitation
        self.query_head = ObjectnessHead(rpn.head)
        self.sampler = BalancedPositiveNegativeSampler(int(cfg["qrpn_batch"]),
                                                       float(cfg["qrpn_positive_fraction"]))
        self.pos_iou, self.neg_iou = float(cfg["qrpn_pos_iou"]), float(cfg["qrpn_neg_iou"])

    def forward(self, images: Any, features: dict[str, torch.Tensor], weights: torch.Tensor,
                targets: list[dict[str, torch.Tensor]] | None = None
                ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Proposals of the gallery ``images`` scored RPN + QRPN; with ``targets`` (which also
        hold ``query_pid``) the RPN's losses and ``loss_qrpn``."""
        rpn = self.rpn
        maps = list(features.values())
        objectness, deltas = rpn.head(maps)
        query_logits = flatten_levels(self.query_head([f * weights[:, :, None, None]
                                                       for f in maps]))
        anchors = rpn.anchor_generator(images, maps)
        per_level = [o[0].numel() for o in objectness]
        from torchvision.models.detection.rpn import concat_box_prediction_layers
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = rpn.box_coder.decode(deltas.detach(), anchors).view(len(anchors), -1, 4)
        boxes, _ = rpn.filter_proposals(proposals, objectness + query_logits,
                                        images.image_sizes, per_level)
        if not self.training:
            return boxes, {}
        labels, matched = rpn.assign_targets_to_anchors(anchors, targets)
        loss_obj, loss_reg = rpn.compute_loss(objectness, deltas, labels,
                                              rpn.box_coder.encode(matched, anchors))
        return boxes, {"loss_objectness": loss_obj, "loss_rpn_box_reg": loss_reg,
                       "loss_qrpn": self.query_loss(query_logits, anchors, targets)}

    def query_loss(self, logits: torch.Tensor, anchors: list[torch.Tensor],
                   targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        labels = []
        for a, t in zip(anchors, targets, strict=True):
            is_query = t["pids"] == t["query_pid"]
            labels.append(qrpn_labels(a, t["boxes"][is_query], t["boxes"][~is_query],
                                      self.pos_iou, self.neg_iou))
        pos, neg = self.sampler(labels)
        chosen = torch.where(torch.cat(pos) | torch.cat(neg))[0]
        return F.binary_cross_entropy_with_logits(logits.flatten()[chosen],
                                                  torch.cat(labels)[chosen])


class QSimNet(nn.Module):
    """``(f_q - f_g)^2 -> BatchNorm1d -> Linear(dim, 2)``: logits [R, 2] (class 1: same person)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        self.fc = nn.Linear(dim, 2)

    def forward(self, query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn((query - gallery) ** 2))

    def score(self, query: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
        """Match probability [R] of ``gallery`` [R, D] with ``query`` [D] or [R, D]."""
        return F.softmax(self(query.expand_as(gallery), gallery), 1)[:, 1]


def freeze_batchnorm(module: nn.Module) -> None:
    """Keep the running statistics of every BatchNorm of ``module`` (eval mode, see
    ``QEEPSModel.train``)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm | FrozenBatchNorm2d):
            m.eval()


class QEEPSModel(nn.Module):
    """A ``JointSearchModel`` (OIM) with QSSE, QRPN and QSimNet; see the module docstring.

    >>> model = QEEPSModel(oim_model, config["qeeps"])
    >>> losses = model(query_images, query_boxes, gallery_images, targets)   # training
    >>> [out] = model.search(query_images, query_boxes, gallery_images)     # one pair
    >>> out["boxes"], out["scores"] (detector), out["sims"] (QSimNet)
    """

    def __init__(self, base: JointSearchModel, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.cfg = dict(cfg)
        reduction = int(cfg["reduction"])
        self.transform, self.roi_heads = base.transform, base.roi_heads
        self.backbone = SiameseTrunk(base.backbone, reduction)
        pool = MultiScaleRoIAlign([ResNetC4Trunk.FEATURE], base.roi_heads.box_roi_pool.output_size,
                                  sampling_ratio=2)
        self.rpn = QueryRPN(base.rpn, QueryExcitation(self.backbone.out_channels, pool,
                                                      reduction), cfg)
        self.qsimnet = QSimNet(base.dim)

    @property
    def dim(self) -> int:
        return int(self.roi_heads.embedding_head.fc.out_features)

    def train(self, mode: bool = True) -> QEEPSModel:
        super().train(mode)
        if mode:  # the OIM model's statistics stay; QSimNet's BatchNorm learns
            freeze_batchnorm(self.backbone.trunk)
            freeze_batchnorm(self.roi_heads)
        return self

    def _streams(self, query_images: list[torch.Tensor], query_boxes: list[torch.Tensor],
                 gallery_images: list[torch.Tensor], targets: list[dict] | None = None):
        if not len(query_images) == len(query_boxes) == len(gallery_images):
            raise ValueError("one query image and box per gallery image")
        qbatch, qtargets = self.transform(query_images, [{"boxes": b.reshape(-1, 4).float()}
                                                         for b in query_boxes])
        gbatch, targets = self.transform(gallery_images, targets)
        fq, fg = self.backbone(qbatch.tensors, gbatch.tensors)
        qboxes = [t["boxes"] for t in qtargets]
        weights = self.rpn.excitation(fq, qboxes, qbatch.image_sizes)
        query_feats = self.roi_heads.embed(fq, qboxes, qbatch.image_sizes)  # [B, D] unit
        proposals, rpn_losses = self.rpn(gbatch, fg, weights, targets)
        return gbatch, targets, fg, query_feats, proposals, rpn_losses

    def forward(self, query_images: list[torch.Tensor], query_boxes: list[torch.Tensor],
                gallery_images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
                ) -> dict[str, torch.Tensor]:
        """Training: loss terms of the pairs. ``targets[b]``: the gallery image's ``boxes``,
        ``labels``, ``pids`` (classes, -1 unlabeled) and ``query_pid`` (the query's class)."""
        gbatch, targets, fg, query_feats, proposals, losses = self._streams(
            query_images, query_boxes, gallery_images, targets)
        heads = self.roi_heads
        proposals, _, labels, regression = heads.sample_with_pids(proposals, targets)
        feats = heads.box_head(heads.box_roi_pool(fg, proposals, gbatch.image_sizes))
        class_logits, box_regression = heads.box_predictor(feats)
        from torchvision.models.detection.roi_heads import fastrcnn_loss
        losses["loss_classifier"], losses["loss_box_reg"] = fastrcnn_loss(
            class_logits, box_regression, labels, regression)
        pids = torch.cat(heads.sampled_pids)
        losses["loss_reid"] = heads.reid_loss(feats, pids)
        embeddings = F.normalize(heads.embedding_head(feats), dim=1)
        counts = [len(p) for p in proposals]
        query_rows = torch.repeat_interleave(query_feats, torch.tensor(counts,
                                                                       device=feats.device), 0)
        same = torch.cat([p == t["query_pid"] for p, t in
                          zip(heads.sampled_pids, targets, strict=True)]).long()
        losses["loss_sim"] = F.cross_entropy(self.qsimnet(query_rows, embeddings), same)
        return losses

    @torch.no_grad()
    def search(self, query_images: list[torch.Tensor], query_boxes: list[torch.Tensor],
               gallery_images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Per pair ``{"boxes" [K, 4], "scores" [K] (detector), "sims" [K] (QSimNet)}`` in the
        gallery image's pixels, ranked by sim."""
        original = [tuple(img.shape[-2:]) for img in gallery_images]
        gbatch, _, fg, query_feats, proposals, _ = self._streams(query_images, query_boxes,
                                                                 gallery_images)
        heads = self.roi_heads
        feats = heads.box_head(heads.box_roi_pool(fg, proposals, gbatch.image_sizes))
        class_logits, box_regression = heads.box_predictor(feats)
        embeddings = F.normalize(heads.embedding_head(feats), dim=1)
        counts = [len(p) for p in proposals]
        boxes = heads.box_coder.decode(box_regression, proposals)[:, 1]
        scores = F.softmax(class_logits, -1)[:, 1]
        out = []
        for b, s, e, q, shape in zip(boxes.split(counts), scores.split(counts),
                                     embeddings.split(counts), query_feats, gbatch.image_sizes,
                                     strict=True):
            b = box_ops.clip_boxes_to_image(b, shape)
            keep = torch.where(s >= float(self.cfg["det_min"]))[0]
            keep = keep[box_ops.remove_small_boxes(b[keep], min_size=1e-2)]
            sims = self.qsimnet.score(q, e[keep]) if len(keep) else s[keep]
            order = box_ops.nms(b[keep], sims, float(self.cfg["sim_nms"]))
            order = order[:int(self.cfg["detections_per_img"])]
            out.append({"boxes": b[keep][order], "scores": s[keep][order],
                        "sims": sims[order]})
        return self.transform.postprocess(out, gbatch.image_sizes, original)
