"""The re-ID network (any timm backbone + linear/BatchNorm neck) and its inference API.

``ReidNet`` maps uint8 person crops [B, 3, H, W] to 256-d embeddings; ``ReidModel`` wraps a
trained net for users: ``ReidModel.from_checkpoint("last.pt").embed_crops(list_of_rgb_crops)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import timm
import timm.data
import torch
import torch.nn.functional as F
from torch import nn

from psearch.core.boxes import crop_boxes
from psearch.core.checkpoint import checkpoint_of_kind, load_model_state
from psearch.core.device import resolve_device
from psearch.core.errors import PsearchError
from psearch.reid.config import model_config
from psearch.reid.crops import CropEmbedder, resize_crop, resize_crops

CHECKPOINT_KIND = "reid"
__all__ = ["ReidModel", "ReidNet", "build_reid_net", "crop_boxes", "resize_crop", "resize_crops"]

def create_backbone(cfg: dict[str, Any], pretrained: bool | None = None) -> nn.Module:
    """The timm backbone of ``cfg`` with its classifier removed (``num_classes=0``).

    ``pretrained`` overrides ``cfg["pretrained"]``/``cfg["pretrained_file"]`` (False when the
    weights come from a psearch checkpoint anyway).
    """
    name = cfg["backbone"]
    if not timm.is_model(name):
        raise PsearchError(f"model.backbone {name!r}: not a timm model name "
                           f"(see timm.list_models())")
    file = cfg.get("pretrained_file")
    use_pretrained = bool(cfg.get("pretrained") or file) if pretrained is None else pretrained
    kwargs = dict(cfg.get("timm_kwargs") or {})
    if use_pretrained and not file:
        from psearch.core.weights import timm_weights  # the cached file; fetched with --download

        file = timm_weights(name)
    if use_pretrained and file:
        if not Path(file).is_file():
            raise PsearchError(f"{file}: pretrained weights file not found (model.pretrained_file)")
        kwargs["pretrained_cfg_overlay"] = {"file": str(file)}
    try:
        return timm.create_model(name, pretrained=use_pretrained, num_classes=0,
                                 global_pool=cfg.get("pool") or "avg", **kwargs)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if use_pretrained:
            where = file or "timm's cache / the Hugging Face hub"
            raise PsearchError(
                f"{name}: pretrained weights not available from {where} ({reason}); "
                f"pass a local file with --set model.pretrained_file=PATH or drop --pretrained"
            ) from None
        raise PsearchError(f"model.backbone {name!r}: timm cannot build it ({reason})") from None


class ReidNet(nn.Module):
    """Backbone -> global pooling -> Linear -> BatchNorm1d -> L2 normalisation.

    Input: uint8 (or float in [0, 255]) RGB images [B, 3, H, W]; normalised inside with the
    backbone's mean/std. ``forward`` gives unit-norm embeddings [B, dim]; ``neck_features`` the
    pre-normalisation features [B, dim] that the losses take.
    """

    def __init__(self, backbone: nn.Module, in_features: int, dim: int,
                 mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = nn.Sequential(nn.Linear(in_features, dim), nn.BatchNorm1d(dim))
        self.dim = dim
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255, persistent=False)

    def neck_features(self, images: torch.Tensor) -> torch.Tensor:
        """images uint8 [B, 3, H, W] -> features [B, dim] before normalisation."""
        x = (images.float() - self.mean) / self.std
        return self.neck(self.backbone(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images uint8 [B, 3, H, W] -> L2-normalised embeddings [B, dim]."""
        return F.normalize(self.neck_features(images), dim=1)


def build_reid_net(cfg: dict[str, Any], pretrained: bool | None = None) -> ReidNet:
    """Build the ``ReidNet`` described by a ``model`` config section (see DEFAULT_MODEL_CONFIG)."""
    cfg = model_config(cfg)
    backbone = create_backbone(cfg, pretrained)
    height, width = (int(v) for v in cfg["input_size"])
    backbone.eval()
    with torch.no_grad():  # the pooled width, whatever the family (head_hidden_size varies)
        in_features = backbone(torch.zeros(1, 3, height, width)).shape[1]
    backbone.train()
    data_cfg = timm.data.resolve_data_config({}, model=backbone)
    return ReidNet(backbone, in_features, int(cfg["dim"]), data_cfg["mean"], data_cfg["std"])


class ReidModel(CropEmbedder):
    """A trained re-ID embedding for inference.

    >>> model = ReidModel.from_checkpoint("runs/reid/last.pt", device="cpu")
    >>> feats = model.embed_crops([crop1, crop2])      # float32 [2, model.dim], unit norm
    >>> feats = model.embed_boxes(image, boxes)        # boxes float [N, 4] x1 y1 x2 y2
    """

    source = "crops"
    """``Embedder`` role: sees only each box's crop (``psearch embed`` reads the crop files)."""

    def __init__(self, net: ReidNet, config: dict[str, Any],
                 device: str | torch.device | None = "auto", batch_size: int = 128) -> None:
        self.config = config
        self.model_config = model_config(config.get("model"))
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        self.input_size = tuple(int(v) for v in self.model_config["input_size"])
        self.batch_size = batch_size
        self.checkpoint_path: Path | None = None

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device | None = "auto",
                        batch_size: int = 128, payload: dict[str, Any] | None = None
                        ) -> ReidModel:
        """Load a ``psearch train-reid`` checkpoint; ``PsearchError`` if it is not a usable one.
        ``payload``: the checkpoint already read by ``load_checkpoint``."""
        payload = checkpoint_of_kind(path, CHECKPOINT_KIND, payload)
        config = payload.get("config")
        if not isinstance(config, dict) or not isinstance(payload.get("model"), dict):
            raise PsearchError(f"{path}: re-ID checkpoint without 'config' or 'model' entries")
        net = build_reid_net(config.get("model", {}), pretrained=False)
        load_model_state(net, payload["model"], path)
        model = cls(net, config, device, batch_size)
        model.checkpoint_path = Path(path)
        return model

    @property
    def dim(self) -> int:
        """Embedding size D."""
        return self.net.dim

    def describe(self) -> dict[str, Any]:
        """What ``psearch embed`` records about the model."""
        return {"kind": CHECKPOINT_KIND, "backbone": self.backbone_name,
                "input_size": list(self.input_size), "dim": self.dim,
                "checkpoint": None if self.checkpoint_path is None else str(self.checkpoint_path)}

    @property
    def backbone_name(self) -> str:
        return str(self.model_config["backbone"])

    @torch.inference_mode()
    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """uint8 [N, height, width, 3] crops already at ``input_size`` -> float32 [N, D]."""
        images = torch.from_numpy(batch).to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        with torch.autocast(self.device.type, dtype=torch.float16,
                            enabled=self.device.type == "cuda"):
            feats = self.net(images)
        return F.normalize(feats.float(), dim=1).cpu().numpy()
