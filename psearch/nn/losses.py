"""Identity losses shared by every stage: OIM (Xiao et al. 2017, "Joint Detection and
Identification Feature Learning for Person Search"), TOIM (OIM plus a batch-hard triplet term
over the batch and the lookup table: AlignPS, Yan et al. 2021) and a plain softmax
cross-entropy baseline.

Imports torch only (no torchvision, timm or stage package), so the re-ID stage and the joint
models build on the same modules.

Both take the neck features [B, D] (before normalisation) and labels int64 [B] in
``0 .. num_ids - 1`` for labeled people and ``UNLABELED_PID`` (-1) for unlabeled ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from psearch.core.errors import PsearchError
from psearch.data.annotations import UNLABELED_PID


class OIMLoss(nn.Module):
    """Online instance matching: cosine logits against a lookup table and an unlabeled queue.

    Buffers (saved with the checkpoint): ``lut`` [num_ids, D], one unit-norm row per labeled
    training identity; ``queue`` [queue_size, D], a circular queue of unlabeled features;
    ``queue_ptr`` the next queue slot.

    Loss: ``cross_entropy(scale * f @ [lut; queue].T, label)`` over the labeled samples of the
    batch, ``f`` the L2-normalised features; the table is a constant in the gradient. Unlabeled
    samples add no loss term; they only enter the queue. A batch without labeled samples has loss 0.
    With ``focal_gamma`` > 0 each labeled sample's term ``-log p_t`` is weighted by
    ``(1 - p_t) ** focal_gamma`` (the focal form AlignPS's released configs train with).

    Update, in training mode, after the logits are computed, with the detached features:
    - every identity ``i`` present in the batch: ``lut[i] = normalize(m * lut[i] + (1 - m) *
      mean_i)`` with ``m = momentum`` and ``mean_i`` the mean of the batch's features of ``i``
      (an identity seen several times in one batch is updated once, with the mean);
    - the unlabeled features are written to the queue in batch order from ``queue_ptr`` on,
      wrapping around, and the pointer moves past them (exactly as writing them one by one:
      when a batch holds more than ``queue_size`` of them, its last ``queue_size`` remain).
    """

    def __init__(self, dim: int, num_ids: int, queue_size: int = 5000, scale: float = 30.0,
                 momentum: float = 0.5, focal_gamma: float = 0.0) -> None:
        super().__init__()
        if num_ids < 1:
            raise ValueError("OIMLoss needs at least one labeled identity")
        self.scale = scale
        self.momentum = momentum
        self.focal_gamma = focal_gamma
        self.register_buffer("lut", torch.zeros(num_ids, dim))
        self.register_buffer("queue", torch.zeros(queue_size, dim))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.int64))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """features float [B, D], labels int64 [B] -> scalar loss (updates buffers in training)."""
        feats = F.normalize(features.to(self.lut.dtype), dim=1)
        labeled = labels != UNLABELED_PID
        table = torch.cat([self.lut, self.queue])  # a copy: in-place updates below are safe
        logits = self.scale * feats[labeled] @ table.t()
        if labeled.any() and self.focal_gamma:
            log_p = F.log_softmax(logits, dim=1).gather(1, labels[labeled, None])[:, 0]
            loss = -((1 - log_p.exp()) ** self.focal_gamma * log_p).mean()
        elif labeled.any():
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


def batch_hard_triplet(features: torch.Tensor, labels: torch.Tensor,
                       margin: float) -> torch.Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017): the mean over anchors of
    ``relu(margin + max_pos d(a, p) - min_neg d(a, n))``, ``d`` the Euclidean distance, the
    hardest positive taken over every row of the anchor's label (itself included, at distance
    ~0) and the hardest negative over the other labels. features float [N, D], labels int64 [N];
    0 when fewer than two labels are present."""
    if labels.unique().numel() < 2:
        return features.sum() * 0.0
    squares = features.pow(2).sum(1)
    dist = (squares[:, None] + squares[None, :] - 2 * features @ features.t())
    dist = dist.clamp(min=1e-12).sqrt()
    same = labels[:, None] == labels[None, :]
    hardest_pos = dist.masked_fill(~same, float("-inf")).amax(1)
    hardest_neg = dist.masked_fill(same, float("inf")).amin(1)
    return F.relu(margin + hardest_pos - hardest_neg).mean()


class TOIMLoss(nn.Module):
    """Triplet-aided OIM (AlignPS, Yan et al. 2021): ``OIMLoss`` plus a batch-hard triplet term.

    The triplet term (``batch_hard_triplet``, ``margin``) runs over the batch's labeled
    L2-normalised features together with the lookup-table rows of their identities, read before
    this batch updates the table (constants in the gradient; rows not yet written, all zero,
    are left out: our choice). ``terms`` returns ``{"loss_oim", "loss_triplet"}`` (the latter
    times ``triplet_weight``); ``forward`` their sum. Buffers are the OIM ones (``oim.lut``,
    ``oim.queue``, ``oim.queue_ptr``).
    """

    def __init__(self, dim: int, num_ids: int, queue_size: int = 5000, scale: float = 30.0,
                 momentum: float = 0.5, focal_gamma: float = 0.0, margin: float = 0.3,
                 triplet_weight: float = 1.0) -> None:
        super().__init__()
        self.oim = OIMLoss(dim, num_ids, queue_size, scale, momentum, focal_gamma)
        self.margin, self.triplet_weight = margin, triplet_weight

    def terms(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """features float [B, D], labels int64 [B] -> the two loss terms (updates the OIM
        memory in training)."""
        labeled = labels != UNLABELED_PID
        ids = labels[labeled].unique()
        rows = self.oim.lut[ids].clone()
        written = rows.norm(dim=1) > 0
        feats = F.normalize(features.to(rows.dtype), dim=1)
        triplet = batch_hard_triplet(torch.cat([feats[labeled], rows[written]]),
                                     torch.cat([labels[labeled], ids[written]]), self.margin)
        return {"loss_oim": self.oim(features, labels),
                "loss_triplet": self.triplet_weight * triplet}

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return sum(self.terms(features, labels).values())


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


LOSSES = ("oim", "toim", "softmax")


def build_loss(name: str, dim: int, num_ids: int, cfg: dict) -> nn.Module:
    """The identity loss ``name`` ("oim", "toim" or "softmax") with options from the ``loss``
    config."""
    oim = {"queue_size": int(cfg.get("queue_size", 5000)), "scale": float(cfg.get("scale", 30.0)),
           "momentum": float(cfg.get("momentum", 0.5)),
           "focal_gamma": float(cfg.get("focal_gamma", 0.0))}
    if name == "oim":
        return OIMLoss(dim, num_ids, **oim)
    if name == "toim":
        return TOIMLoss(dim, num_ids, **oim, margin=float(cfg.get("triplet_margin", 0.3)),
                        triplet_weight=float(cfg.get("triplet_weight", 1.0)))
    if name == "softmax":
        return SoftmaxLoss(dim, num_ids)
    raise PsearchError(f"loss.name {name!r}: expected one of {', '.join(LOSSES)}")
