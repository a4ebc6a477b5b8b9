"""ResNet "C4" split for single-map detectors (Faster R-CNN C4, as OIM, I-Net and QEEPS use):
the trunk conv1..layer3 gives one feature map at stride 16, and layer4 with global average
pooling is the RoI head that runs on every pooled region."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torchvision.models import resnet

STAGES = ("layer4", "layer3", "layer2", "layer1", "conv1")
"""Trainable stages counted from the top, as torchvision's ``trainable_layers``."""


class ResNetC4Trunk(nn.Module):
    """conv1..layer3 of a torchvision ResNet: images [B, 3, H, W] -> ``{"feat": [B, C, H/16,
    W/16]}`` with ``out_channels`` C (256 for resnet18, 1024 for resnet50)."""

    FEATURE = "feat"

    def __init__(self, net: resnet.ResNet) -> None:
        super().__init__()
        self.body = nn.Sequential(OrderedDict(
            (name, getattr(net, name))
            for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")))
        self.out_channels = net.layer4[0].conv1.in_channels

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict([(self.FEATURE, self.body(images))])


class ResNetC4Head(nn.Module):
    """layer4 + global average pooling: pooled regions [R, C, h, w] -> [R, ``out_channels``]
    (512 for resnet18, 2048 for resnet50)."""

    def __init__(self, net: resnet.ResNet) -> None:
        super().__init__()
        self.layer4 = net.layer4
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = net.fc.in_features

    def forward(self, regions: torch.Tensor) -> torch.Tensor:
        return self.pool(self.layer4(regions)).flatten(1)


def resnet_c4(arch: str, weights: Any, norm_layer: type[nn.Module],
              trainable_layers: int | None = None) -> tuple[ResNetC4Trunk, ResNetC4Head]:
    """Split torchvision's ``arch`` ("resnet18", "resnet50") into trunk and head.

    ``trainable_layers`` (0-5, counted from layer4 down to conv1): None trains every stage from
    scratch and all but conv1 from pretrained weights (as OIM does).
    """
    if trainable_layers is None:
        trainable_layers = len(STAGES) if weights is None else len(STAGES) - 1
    if not 0 <= trainable_layers <= len(STAGES):
        raise ValueError(f"trainable_layers must be in [0, {len(STAGES)}], "
                         f"got {trainable_layers}")
    net = getattr(resnet, arch)(weights=weights, norm_layer=norm_layer)
    frozen = STAGES[trainable_layers:]
    for name, param in net.named_parameters():
        if name.startswith(frozen) or (name.startswith("bn1") and "conv1" in frozen):
            param.requires_grad_(False)
    return ResNetC4Trunk(net), ResNetC4Head(net)
