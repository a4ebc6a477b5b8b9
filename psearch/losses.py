"""Identity losses shared by every stage: OIM (Xiao et al. 2017, "Joint Detection and
Identification Feature Learning for Person Search") and a plain softmax cross-entropy baseline.

Imports torch only (no torchvision, timm or stage package), so the re-ID stage and the joint
models build on the same modules.

Both take the neck features [B, D] (before normalisation) and labels int64 [B] in
``0 .. num_ids - 1`` for labeled people and ``UNLABELED_PID`` (-1) for unlabeled ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from psearch.data.annotations import UNLABELED_PID
from psearch.errors import PsearchError


class OIMLoss(nn.Module):
    """Online instance matching: cosine logits against a lookup table and an unlabeled queue.

    Buffers (saved with the checkpoint): ``lut`` [num_ids, D], one unit-norm row per labeled
    training identity; ``queue`` [queue_size, D], a circular queue of unlabeled features;
    ``queue_ptr`` the next queue slot.

    Loss: ``cross_entropy(scale * f @ [lut; queue].T, label)`` over the labeled samples of the
    batch, ``f`` the L2-normalised features; the table is a constant in the gradient. Unlabeled
    samples add no loss term; they only enter the queue. A batch without labeled samples has loss 0.

    Update, in training mode, after the logits are computed, with the detached features:
    - every identity ``i`` present in the batch: ``lut[i] = normalize(m * lut[i] + (1 - m) *
      mean_i)`` with ``m = momentum`` and ``mean_i`` the mean of the batch's features of ``i``
      (an identity seen several times in one batch is updated once, with the mean);
    - the unlabeled features are written to the queue in batch order from ``queue_ptr`` on,
      wrapping around, and the pointer moves past them (exactly as writing them one by one:
      when a batch holds more than ``queue_size`` of them, its last ``queue_size`` remain).
    """

    def __init__(self, dim: int, num_ids: int, queue_size: int = 5000, scale: float = 30.0,
                 momentum: float = 0.5) -> None:
        super().__init__()
        if num_ids < 1:
            raise ValueError("OIMLoss needs at least one labeled identity")
        self.scale = scale
        self.momentum = momentum
        self.register_buffer("lut", torch.zeros(num_ids, dim))
        self.register_buffer("queue", torch.zeros(queue_size, dim))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.int64))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """features float [B, D], labels int64 [B] -> scalar loss (updates buffers in training)."""
        feats = F.normalize(features.to(self.lut.dtype), dim=1)
        labeled = labels != UNLABELED_PID
        table = torch.cat([self.lut, self.queue])  # a copy: in-place updates below are safe
        logits = self.scale * feats[labeled] @ table.t()
        if labeled.any():
            loss = F.cross_entropy(logits, labels[labeled])
        else:
            loss = feats.sum() * 0.0
        if self.training:
            self.update(feats.detach(), labels)
        return loss

    @torch.no_grad()
    def update(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        """Momentum update of the table rows of the batch's identities; enqueue unlabeled."""
        labeled = labels != UNLABELED_PID
        ids = labels[labeled]
        if ids.numel():
            sums = torch.zeros_like(self.lut).index_add_(0, ids, feats[labeled])
            counts = torch.bincount(ids, minlength=len(self.lut))
            present = counts > 0
            means = sums[present] / counts[present, None]
            self.lut[present] = F.normalize(
                self.momentum * self.lut[present] + (1 - self.momentum) * means, dim=1)
        unlabeled, size = feats[~labeled], len(self.queue)
        if len(unlabeled) and size:
            slots = (self.queue_ptr + torch.arange(len(unlabeled), device=feats.device)) % size
            self.queue[slots[-size:]] = unlabeled[-size:]  # later writes win, as in a loop
            self.queue_ptr.copy_((self.queue_ptr + len(unlabeled)) % size)


class SoftmaxLoss(nn.Module):
    """Plain softmax cross-entropy over identities: a linear classifier on the neck features.

    Unlabeled samples are ignored; a batch without labeled samples has loss 0.
    """

    def __init__(self, dim: int, num_ids: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(dim, num_ids)

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """features float [B, D], labels int64 [B] -> scalar loss."""
        labeled = labels != UNLABELED_PID
        if not labeled.any():
            return features.sum() * 0.0
        return F.cross_entropy(self.classifier(features[labeled].float()), labels[labeled])


LOSSES = ("oim", "softmax")


def build_loss(name: str, dim: int, num_ids: int, cfg: dict) -> nn.Module:
    """The identity loss ``name`` ("oim" or "softmax") with options from the ``loss`` config."""
    if name == "oim":
        return OIMLoss(dim, num_ids, queue_size=int(cfg.get("queue_size", 5000)),
                       scale=float(cfg.get("scale", 30.0)),
                       momentum=float(cfg.get("momentum", 0.5)))
    if name == "softmax":
        return SoftmaxLoss(dim, num_ids)
    raise PsearchError(f"loss.name {name!r}: expected one of {', '.join(LOSSES)}")
