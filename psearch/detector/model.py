"""Builders of the person detector: torchvision's Faster R-CNN with one foreground class.

The model is assembled from torchvision parts exactly as torchvision's own builders do, by
public functions that a joint model reuses: ``build_backbone`` (an FPN backbone, or a ResNet C4
split whose layer4 is the RoI head), ``build_anchor_generator`` (upright anchors),
``build_roi_pooler`` (RoI Align through ``MultiScaleRoIAlign``), ``build_box_head`` and
``build_roi_heads``; ``build_detector(cfg, roi_heads=MyRoIHeads)`` swaps in a ``RoIHeads``
subclass. Every knob comes from the ``model`` section of a config, which travels in the
checkpoint.

Starting weights (``model.weights``), downloaded only on request (``psearch.core.weights``):

- ``null``: from scratch (BatchNorm trains);
- ``"imagenet"``: torchvision's ImageNet backbone weights, if they are in the torch hub cache;
- ``"coco"``: torchvision's COCO Faster R-CNN, if it is in the torch hub cache; its "person"
  rows of the box predictor become our single foreground class;
- a path to a torchvision Faster R-CNN state dict (91 COCO classes or 2 classes).

With pretrained weights the backbone's BatchNorm is frozen (``FrozenBatchNorm2d``), as torchvision
does; the choice depends on the config only, so a checkpoint rebuilds without the weight files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import (
    MobileNet_V3_Large_Weights,
    ResNet18_Weights,
    ResNet50_Weights,
    mobilenet_v3_large,
)
from torchvision.models.detection import (
    FasterRCNN,
    FasterRCNN_MobileNet_V3_Large_FPN_Weights,
    FasterRCNN_ResNet50_FPN_Weights,
)
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from psearch.core.errors import PsearchError
from psearch.nn.c4 import ResNetC4Trunk, resnet_c4

NUM_CLASSES = 2
"""Background and person."""

COCO_PERSON = 1
"""Index of "person" in torchvision's COCO category list."""

BACKBONES = {
    # name: (builder of the FPN backbone, ImageNet weights, COCO Faster R-CNN weights or None)
    "resnet50_fpn": ("resnet50", ResNet50_Weights.IMAGENET1K_V1,
                     FasterRCNN_ResNet50_FPN_Weights.COCO_V1),
    "resnet18_fpn": ("resnet18", ResNet18_Weights.IMAGENET1K_V1, None),
    "resnet50_c4": ("resnet50", ResNet50_Weights.IMAGENET1K_V1, None),
    "resnet18_c4": ("resnet18", ResNet18_Weights.IMAGENET1K_V1, None),
    "mobilenet_v3_large_fpn": ("mobilenet_v3_large", MobileNet_V3_Large_Weights.IMAGENET1K_V1,
                               FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1),
}

DEFAULT_MODEL_CONFIG: dict[str, Any] = {
    "backbone": "mobilenet_v3_large_fpn",
    "weights": None,
    "trainable_layers": None,  # None: every layer from scratch, 3 when pretrained
    "returned_layers": None,  # backbone stages fed to the FPN; None: torchvision's default
    "fpn_channels": 256,  # MobileNet only (ResNet-50-FPN keeps torchvision's 256)
    "min_size": 320,  # short side after resizing (an int, or a list for multi-scale training)
    "max_size": 640,  # long-side cap
    "anchor_sizes": [[32, 64, 128, 256]],  # one list per FPN level (a single list: every level)
    "aspect_ratios": [1.5, 2.5, 3.5],  # height / width, shared by every level
    "box_head_dim": 1024,  # FPN only: width of the two-layer box head after RoI Align
    "roi_size": None,  # RoI Align output: an int or [height, width]; None: 7 (FPN), 14 (C4)
    "rpn": {"pre_nms_top_n_train": 2000, "post_nms_top_n_train": 2000,
            "pre_nms_top_n_test": 1000, "post_nms_top_n_test": 1000, "nms_thresh": 0.7,
            "fg_iou_thresh": 0.7, "bg_iou_thresh": 0.3, "batch_size_per_image": 256,
            "positive_fraction": 0.5},
    "box": {"score_thresh": 0.05, "nms_thresh": 0.5, "detections_per_img": 100,
            "fg_iou_thresh": 0.5, "bg_iou_thresh": 0.5, "batch_size_per_image": 512,
            "positive_fraction": 0.25},
}


def resolve_model_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """``DEFAULT_MODEL_CONFIG`` updated with ``cfg`` (nested ``rpn``/``box`` merged key by key).

    Unknown keys are refused so that a typo in a config or ``--set`` never passes silently.
    """
    cfg = dict(cfg or {})
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULT_MODEL_CONFIG.items()}
    for key, value in cfg.items():
        if key not in out:
            raise PsearchError(f"model config: unknown key {key!r} "
                               f"(known: {', '.join(DEFAULT_MODEL_CONFIG)})")
        if isinstance(out[key], dict):
            if not isinstance(value, dict) or set(value) - set(out[key]):
                raise PsearchError(f"model.{key}: expected a mapping with keys among "
                                   f"{', '.join(out[key])}")
            out[key].update(value)
        else:
            out[key] = value
    if out["backbone"] not in BACKBONES:
        raise PsearchError(f"model.backbone {out['backbone']!r}: expected one of "
                           f"{', '.join(BACKBONES)}")
    return out


def _require_cached(weights: Any, what: str) -> Path:
    from psearch.core.weights import torchvision_weights  # fetched first only under --download

    return torchvision_weights(weights, what)


def build_backbone(cfg: dict[str, Any]) -> tuple[nn.Module, nn.Module | None]:
    """The feature extractor of a resolved ``model`` config, and its RoI head when it has one.

    FPN backbones (``*_fpn``): ``(BackboneWithFPN, None)``. C4 splits (``*_c4``): the ResNet
    trunk conv1..layer3 (``ResNetC4Trunk``, one map ``"feat"`` at stride 16) and layer4 with
    global average pooling (``ResNetC4Head``), which ``build_box_head`` uses as the RoI box head.
    Both carry ``out_channels``.
    """
    arch, imagenet, _ = BACKBONES[cfg["backbone"]]
    pretrained = cfg["weights"] is not None
    norm_layer = FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    backbone_weights = None
    if cfg["weights"] == "imagenet":
        _require_cached(imagenet, "ImageNet backbone")
        backbone_weights = imagenet  # found in the cache: torchvision loads it from there
    try:
        if cfg["backbone"].endswith("_c4"):
            return resnet_c4(arch, backbone_weights, norm_layer, cfg["trainable_layers"])
        if arch.startswith("resnet"):
            trainable = cfg["trainable_layers"] if cfg["trainable_layers"] is not None else (
                3 if pretrained else 5)
            return resnet_fpn_backbone(backbone_name=arch, weights=backbone_weights,
                                       norm_layer=norm_layer, trainable_layers=trainable,
                                       returned_layers=cfg["returned_layers"]), None
    except ValueError as exc:  # torchvision's own validation (trainable/returned layers)
        raise PsearchError(f"model config: {exc}") from None
    return _mobilenet_fpn(cfg, backbone_weights, norm_layer), None


def _mobilenet_fpn(cfg: dict[str, Any], weights: Any, norm_layer: type[nn.Module]) -> nn.Module:
    """MobileNetV3-Large with an FPN on chosen stages, as torchvision's ``mobilenet_backbone``
    builds it, but with a configurable FPN width (128 channels make a CPU detector 3x cheaper)."""
    body = mobilenet_v3_large(weights=weights, norm_layer=norm_layer).features
    # Stages start at the strided blocks; the first and last blocks close the list.
    stages = [0] + [i for i, b in enumerate(body) if getattr(b, "_is_cn", False)] + [len(body) - 1]
    trainable = cfg["trainable_layers"]
    if trainable is None:
        trainable = 3 if cfg["weights"] is not None else len(stages)
    returned = cfg["returned_layers"] or [len(stages) - 2, len(stages) - 1]
    if not 0 <= trainable <= len(stages) or not all(0 <= k < len(stages) for k in returned):
        raise PsearchError(f"model config: trainable_layers must be in [0, {len(stages)}] and "
                           f"returned_layers in [0, {len(stages) - 1}]")
    freeze_before = len(body) if trainable == 0 else stages[len(stages) - trainable]
    for block in body[:freeze_before]:
        block.requires_grad_(False)
    return BackboneWithFPN(body, {str(stages[k]): str(v) for v, k in enumerate(returned)},
                           [body[stages[k]].out_channels for k in returned],
                           int(cfg["fpn_channels"]), extra_blocks=LastLevelMaxPool())


def feature_names(backbone: nn.Module) -> list[str]:
    """Names of the feature maps that RoI Align reads (the FPN levels, or the C4 map)."""
    if isinstance(backbone, ResNetC4Trunk):
        return [ResNetC4Trunk.FEATURE]
    return list(backbone.body.return_layers.values())


def build_anchor_generator(cfg: dict[str, Any], levels: int) -> AnchorGenerator:
    """Upright anchors (``anchor_sizes`` x ``aspect_ratios`` = h / w) for ``levels`` maps."""
    sizes = [list(s) for s in cfg["anchor_sizes"]]
    if len(sizes) == 1:
        sizes = sizes * levels
    if len(sizes) != levels:
        kind = "C4 feature map" if cfg["backbone"].endswith("_c4") else "FPN levels"
        raise PsearchError(f"model.anchor_sizes: {len(sizes)} lists for {levels} {kind} "
                           f"of {cfg['backbone']} (give one list, or one per level)")
    if len({len(s) for s in sizes}) != 1:  # torchvision's RPN head shares one conv per level
        raise PsearchError("model.anchor_sizes: every level needs the same number of sizes")
    ratios = tuple(float(r) for r in cfg["aspect_ratios"])
    return AnchorGenerator(tuple(tuple(s) for s in sizes), (ratios,) * levels)


def roi_output_size(cfg: dict[str, Any]) -> tuple[int, int]:
    """RoI Align output (height, width): ``model.roi_size``, else 7x7 (FPN) or 14x14 (C4)."""
    size = cfg["roi_size"]
    if size is None:
        size = 14 if cfg["backbone"].endswith("_c4") else 7
    h, w = (size, size) if isinstance(size, int) else size
    return int(h), int(w)


def build_roi_pooler(cfg: dict[str, Any], names: list[str]) -> MultiScaleRoIAlign:
    """RoI Align over the feature maps ``names`` (torchvision picks the FPN level per box)."""
    return MultiScaleRoIAlign(featmap_names=names, output_size=roi_output_size(cfg),
                              sampling_ratio=2)


def build_box_head(cfg: dict[str, Any], backbone: nn.Module,
                   c4_head: nn.Module | None = None) -> tuple[nn.Module, int]:
    """The RoI box head and its output width: ``TwoMLPHead(box_head_dim)`` on FPN backbones,
    the given layer4 + pooling head on C4 splits."""
    if c4_head is not None:
        return c4_head, c4_head.out_channels
    h, w = roi_output_size(cfg)
    dim = int(cfg["box_head_dim"])
    return TwoMLPHead(backbone.out_channels * h * w, dim), dim


RoIHeadsFactory = Callable[..., RoIHeads]
"""A ``RoIHeads`` class (or subclass, or a ``functools.partial`` of one) called with
torchvision's ``RoIHeads`` keyword arguments."""


def build_roi_heads(cfg: dict[str, Any], box_roi_pool: nn.Module, box_head: nn.Module,
                    box_predictor: nn.Module, factory: RoIHeadsFactory = RoIHeads) -> RoIHeads:
    """``factory(box_roi_pool=..., box_head=..., box_predictor=..., fg_iou_thresh=...)`` with
    the ``model.box`` settings, as ``FasterRCNN`` builds its own ``RoIHeads``."""
    box = cfg["box"]
    return factory(box_roi_pool=box_roi_pool, box_head=box_head, box_predictor=box_predictor,
                   fg_iou_thresh=box["fg_iou_thresh"], bg_iou_thresh=box["bg_iou_thresh"],
                   batch_size_per_image=box["batch_size_per_image"],
                   positive_fraction=box["positive_fraction"], bbox_reg_weights=None,
                   score_thresh=box["score_thresh"], nms_thresh=box["nms_thresh"],
                   detections_per_img=box["detections_per_img"])


def build_detector(cfg: dict[str, Any] | None = None, load_weights: bool = True,
                   roi_heads: RoIHeadsFactory | None = None) -> FasterRCNN:
    """Build the one-class Faster R-CNN described by a ``model`` config section.

    ``load_weights=False`` skips ``model.weights`` (used when a checkpoint supplies them).
    ``roi_heads``: a ``RoIHeads`` subclass (or factory) that replaces torchvision's; it gets the
    box RoI pooler, box head and predictor built here (see ``build_roi_heads``), so a joint
    model adds its heads by subclassing and keeps everything else.
    The model takes RGB float images [3, H, W] in [0, 1] and returns boxes in input pixels.
    """
    cfg = resolve_model_config(cfg)
    backbone, c4_head = build_backbone(cfg)
    names = feature_names(backbone)
    # FPN: + the max-pooled top level that only the RPN sees.
    levels = len(names) + (0 if c4_head is not None else 1)
    box_head, dim = build_box_head(cfg, backbone, c4_head)
    rpn, box = cfg["rpn"], cfg["box"]
    model = FasterRCNN(
        backbone,
        min_size=cfg["min_size"], max_size=cfg["max_size"],
        rpn_anchor_generator=build_anchor_generator(cfg, levels),
        box_roi_pool=build_roi_pooler(cfg, names),
        box_head=box_head, box_predictor=FastRCNNPredictor(dim, NUM_CLASSES),
        **{f"rpn_{k}": v for k, v in rpn.items()},
        **{f"box_{k}": v for k, v in box.items()},
    )
    if roi_heads is not None:
        default = model.roi_heads
        model.roi_heads = build_roi_heads(cfg, default.box_roi_pool, default.box_head,
                                          default.box_predictor, roi_heads)
    if load_weights and cfg["weights"] not in (None, "imagenet"):
        load_detection_weights(model, cfg)
    return model


def _person_rows(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reduce a COCO (91-class) box predictor to background + person; others pass through."""
    state = dict(state)
    cls_w = state.get("roi_heads.box_predictor.cls_score.weight")
    if cls_w is not None and cls_w.shape[0] > NUM_CLASSES:
        keep = torch.tensor([0, COCO_PERSON])
        keep4 = (keep[:, None] * 4 + torch.arange(4)).reshape(-1)
        head = "roi_heads.box_predictor."
        for name in ("cls_score.weight", "cls_score.bias"):
            state[head + name] = state[head + name][keep]
        for name in ("bbox_pred.weight", "bbox_pred.bias"):
            state[head + name] = state[head + name][keep4]
    return state


def load_detection_weights(model: FasterRCNN, cfg: dict[str, Any]) -> list[str]:
    """Load ``model.weights`` ("coco" or a file) into ``model``; return the skipped keys.

    Tensors whose shape differs (e.g. an RPN head for another number of anchors) are skipped
    and keep their fresh initialisation.
    """
    source = cfg["weights"]
    if source == "coco":
        coco = BACKBONES[cfg["backbone"]][2]
        if coco is None:
            raise PsearchError(f"model.weights=coco: torchvision has no COCO Faster R-CNN with a "
                               f"{cfg['backbone']} backbone (use imagenet, a file, or null)")
        path = _require_cached(coco, "COCO Faster R-CNN")
    else:
        path = Path(source)
        if not path.is_file():
            raise PsearchError(f"{path}: model.weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PsearchError(f"{path}: cannot read weights ({type(exc).__name__})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a checkpoint dict that wraps its state dict
    if not isinstance(state, dict):
        raise PsearchError(f"{path}: not a state dict of a torchvision Faster R-CNN")
    state = _person_rows(state)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith("backbone.") for k in usable):
        raise PsearchError(f"{path}: no tensor matches a {cfg['backbone']} Faster R-CNN")
    model.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))
