"""Identity losses of I-Net and DC-I-Net (He & Zhang, ACCV 2018; Zhang et al., "Tasks Integrated
Networks", TPAMI): the on-line pairing loss (OLP) against a feature dictionary, the hard example
priority softmax (HEP) and its class-centre variant (C2HEP), and the criterion that combines them.

Imports torch only, like ``psearch.nn.losses`` (OIM), beside which it sits. Features are the
256-d embeddings; labels int64 are identity classes ``0 .. C-1`` and ``UNLABELED_PID`` (-1) for
unlabeled people; ``images`` int64 says which image of the batch each feature comes from.

Choices where the papers are silent (``shared/specs/joint.md`` sections 2, 3, 8) are marked
*(ours)* in the docstrings.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from psearch.data.annotations import UNLABELED_PID

EMPTY = -2
"""Label of a dictionary slot that holds no feature yet."""


def positive_pairs(labels: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor and positive indices [m] of every cross-image positive pair, both directions:
    ``(i, j)`` with ``labels[i] == labels[j] >= 0`` and ``images[i] != images[j]`` (each
    unordered pair gives the two subgroups of OLP, one per anchor)."""
    same = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)
    cross = images[:, None] != images[None, :]
    anchor, positive = torch.nonzero(same & cross, as_tuple=True)
    return anchor, positive


class FeatureDictionary(nn.Module):
    """I-Net's on-line feature dictionary: a FIFO of past features with their labels.

    Buffers (saved with the checkpoint): ``feats`` [size, D] (unit rows), ``labels`` [size]
    (``EMPTY`` for a slot never written, -1 for an unlabeled person), ``ptr`` the next slot.
    ``push`` writes in order from ``ptr``, wrapping around, so the oldest entries go first.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError("the feature dictionary needs at least one slot")
        self.register_buffer("feats", torch.zeros(size, dim))
        self.register_buffer("labels", torch.full((size,), EMPTY, dtype=torch.int64))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.int64))

    def negatives(self, labels: torch.Tensor) -> torch.Tensor:
        """Bool [B, size]: the filled slots whose label differs from ``labels[b]`` (unlabeled
        entries are negatives of everybody, labeled anchors only: *(ours)* the paper pairs
        p-w-id anchors)."""
        return (self.labels[None, :] != labels[:, None]) & (self.labels != EMPTY)[None, :]

    @torch.no_grad()
    def push(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        """Store ``feats`` [B, D] (detached) with ``labels`` [B], replacing the oldest."""
        size = len(self.labels)
        if not len(feats):
            return
        slots = (self.ptr + torch.arange(len(feats), device=feats.device)) % size
        self.feats[slots[-size:]] = feats[-size:].to(self.feats.dtype)
        self.labels[slots[-size:]] = labels[-size:]
        self.ptr.copy_((self.ptr + len(feats)) % size)


class OLPLoss(nn.Module):
    """On-line pairing loss (I-Net Eq. 1), with the anchor as the only path of the gradient.

    For the ``m`` subgroups (anchor ``a``, positive ``p``) of ``positive_pairs`` and the
    dictionary's negatives ``n_k`` of ``a`` (label differs from ``a``'s)::

        L = -(1/m) sum_i log( e^{s d(a,p)} / (e^{s d(a,p)} + sum_k e^{s d(a,n_k)}) )

    ``d`` the cosine similarity, ``s = scale`` (1 in the paper; *(ours)* configurable since
    cosines in [-1, 1] give a flat softmax). The positive and the negatives are constants
    (Eq. 2 differentiates with respect to the anchor only). No positive pair: loss 0.
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, feats: torch.Tensor, labels: torch.Tensor, images: torch.Tensor,
                dictionary: FeatureDictionary) -> torch.Tensor:
        """feats [B, D] (normalised here), labels [B], images [B] -> scalar loss."""
        x = F.normalize(feats.float(), dim=1)
        anchor, positive = positive_pairs(labels, images)
        if not len(anchor):
            return feats.sum() * 0.0
        a = x[anchor]
        pos = (a * x[positive].detach()).sum(1, keepdim=True)
        neg = a @ dictionary.feats.t().to(a.dtype, copy=True)  # pushes come after backward
        neg = neg.masked_fill(~dictionary.negatives(labels[anchor]), float("-inf"))
        logits = self.scale * torch.cat([pos, neg], 1)
        return -torch.log_softmax(logits, 1)[:, 0].mean()


def hard_example_pool(feats: torch.Tensor, labels: torch.Tensor, images: torch.Tensor,
                      dictionary: FeatureDictionary, num_classes: int, hard: int, size: int,
                      background: int | None = None) -> torch.Tensor:
    """The HEP pool of priority classes (I-Net Sec. 3.3), sorted int64 [>= min(size, C)]:

    1. the labeled identities of the batch (the pair's);
    2. for every OLP subgroup, the labels of its ``hard`` hardest negatives in the dictionary
       (highest cosine to the anchor); an unlabeled one counts as ``background`` (HEP's extra
       class; None, as C2HEP: dropped);
    3. classes drawn at random without repetition until the pool holds ``size``.

    Larger than ``size`` when 1 and 2 already exceed it (the paper only fills up).
    """
    device = labels.device
    chosen = torch.zeros(num_classes + (background is not None), dtype=torch.bool, device=device)
    chosen[labels[labels >= 0]] = True
    anchor, _ = positive_pairs(labels, images)
    if len(anchor) and hard > 0:
        x = F.normalize(feats.detach().float(), dim=1)
        sims = (x[anchor] @ dictionary.feats.t().float()).masked_fill(
            ~dictionary.negatives(labels[anchor]), float("-inf"))
        top, index = sims.topk(min(hard, sims.shape[1]), dim=1)
        hard_labels = dictionary.labels[index][torch.isfinite(top)]
        if background is not None:
            hard_labels = torch.where(hard_labels == UNLABELED_PID, background, hard_labels)
        chosen[hard_labels[hard_labels >= 0]] = True
    missing = size - int(chosen.sum())
    if missing > 0:
        rest = torch.nonzero(~chosen).squeeze(1)
        chosen[rest[torch.randperm(len(rest), device=device)[:missing]]] = True
    return torch.nonzero(chosen).squeeze(1)


class HEPLoss(nn.Module):
    """Hard example priority softmax (I-Net Eq. 5): an FC classifier over ``C + 1`` classes (the
    labeled identities and a background class, index C), the softmax restricted to the pool::

        L = -(1/n) sum_i log( e^{s_i[y_i]} / sum_{t in P} e^{s_i[t]} )

    over the ``n`` labeled samples, ``s_i`` the classifier's scores of the unit feature ``x_i``
    *(ours: the FC reads the L2-normalised feature fed to OLP)*.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.classifier = nn.Linear(dim, num_classes + 1)

    def forward(self, feats: torch.Tensor, labels: torch.Tensor, pool: torch.Tensor
                ) -> torch.Tensor:
        """feats [B, D], labels [B], pool int64 [T] (holding every label >= 0) -> scalar."""
        labeled = labels >= 0
        if not labeled.any():
            return feats.sum() * 0.0
        scores = self.classifier(F.normalize(feats[labeled].float(), dim=1))[:, pool]
        target = torch.searchsorted(pool, labels[labeled])
        return F.cross_entropy(scores, target)


class C2HEPLoss(nn.Module):
    """Class-centre guided HEP (DC-I-Net Eqs. 7-9): a softmax over the pool's class centres::

        p_j = e^{lam d(x, c_j)} / sum_{l in P} e^{lam d(x, c_l)},   L = -(1/n) sum_i log p_{y_i}

    ``d`` cosine, ``lam = scale`` (10), over the ``n`` labeled samples. Buffers: ``centers``
    [C, D], ``seen`` [C] bool. After the loss, each class ``j`` of the batch moves its centre:
    ``c_j <- phi c_j + (1 - phi) x_j`` (``phi = momentum``, 0.5), ``x_j`` the mean of the batch's
    unit features of ``j`` *(ours: Eq. 7 per feature; one batch mean as the OIM table)*; a class
    seen for the first time takes ``x_j`` *(ours: the paper leaves the start open)*. Classes
    never seen are left out of the softmax, and so are samples whose class is among them.
    """

    def __init__(self, dim: int, num_classes: int, scale: float = 10.0,
                 momentum: float = 0.5) -> None:
        super().__init__()
        self.scale, self.momentum = scale, momentum
        self.register_buffer("centers", torch.zeros(num_classes, dim))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    def forward(self, feats: torch.Tensor, labels: torch.Tensor, pool: torch.Tensor
                ) -> torch.Tensor:
        """feats [B, D], labels [B], pool int64 [T] -> scalar (updates centres in training)."""
        x = F.normalize(feats.float(), dim=1)
        pool = pool[(pool < len(self.seen))]
        pool = pool[self.seen[pool]]
        use = (labels >= 0) & self.seen[labels.clamp(min=0)]
        if use.any():
            logits = self.scale * x[use] @ F.normalize(self.centers[pool], dim=1).t()
            loss = F.cross_entropy(logits, torch.searchsorted(pool, labels[use]))
        else:
            loss = feats.sum() * 0.0
        if self.training:
            self.update(x.detach(), labels)
        return loss

    @torch.no_grad()
    def update(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        """Momentum update of the centres of the batch's labeled classes (see the class)."""
        ids = labels[labels >= 0]
        if not ids.numel():
            return
        sums = torch.zeros_like(self.centers).index_add_(0, ids, x[labels >= 0])
        counts = torch.bincount(ids, minlength=len(self.centers))
        present = counts > 0
        means = sums[present] / counts[present, None]
        old = self.centers[present]
        fresh = ~self.seen[present]
        self.centers[present] = torch.where(
            fresh[:, None], means, self.momentum * old + (1 - self.momentum) * means)
        self.seen[present] = True


PAIR_LOSSES = ("olp+hep", "olp+c2hep", "olp", "hep", "c2hep")
"""The identity losses of the pair models (``reid.loss`` of ``inet`` and ``dcinet``)."""


class PairCriterion(nn.Module):
    """OLP and/or (C2)HEP on the foreground RoIs of a batch of image pairs; returns the terms
    ``{"loss_olp", "loss_hep" | "loss_c2hep"}`` (weights ``olp_weight``, ``cls_weight``).

    The dictionary is kept whatever the terms (HEP's pool reads its hard negatives) and takes
    the batch's features after the losses (labeled and unlabeled people alike).
    """

    def __init__(self, loss: str, dim: int, num_classes: int, dictionary_size: int,
                 olp_scale: float = 1.0, hard_negatives: int = 20, pool_size: int = 100,
                 c2hep_scale: float = 10.0, momentum: float = 0.5, olp_weight: float = 1.0,
                 cls_weight: float = 1.0) -> None:
        super().__init__()
        if loss not in PAIR_LOSSES:
            raise ValueError(f"loss {loss!r}: expected one of {', '.join(PAIR_LOSSES)}")
        terms = loss.split("+")
        self.num_classes, self.hard, self.pool_size = num_classes, hard_negatives, pool_size
        self.olp_weight, self.cls_weight = olp_weight, cls_weight
        self.dictionary = FeatureDictionary(dictionary_size, dim)
        self.olp = OLPLoss(olp_scale) if "olp" in terms else None
        self.classify: nn.Module | None = None
        if "hep" in terms:
            self.classify = HEPLoss(dim, num_classes)
        elif "c2hep" in terms:
            self.classify = C2HEPLoss(dim, num_classes, c2hep_scale, momentum)

    def forward(self, feats: torch.Tensor, labels: torch.Tensor, images: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        """feats [B, D] (raw embeddings), labels [B], images [B] -> the loss terms."""
        terms: dict[str, torch.Tensor] = {}
        if self.olp is not None:
            terms["loss_olp"] = self.olp_weight * self.olp(feats, labels, images,
                                                           self.dictionary)
        if self.classify is not None:
            hep = isinstance(self.classify, HEPLoss)
            pool = hard_example_pool(feats, labels, images, self.dictionary, self.num_classes,
                                     self.hard, self.pool_size,
                                     background=self.num_classes if hep else None)
            name = "loss_hep" if hep else "loss_c2hep"
            terms[name] = self.cls_weight * self.classify(feats, labels, pool)
        if self.training:
            self.dictionary.push(F.normalize(feats.detach().float(), dim=1), labels)
        return terms
