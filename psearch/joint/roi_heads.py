"""``PersonSearchRoIHeads``: torchvision's Faster R-CNN RoI heads plus a re-ID embedding.

The embedding head (Linear + BatchNorm1d to ``dim``, L2-normalised at the output) reads the same
pooled RoI features as the box classifier and regressor, as in OIM (Xiao et al. 2017). Person
ids reach the sampled RoIs through ``targets["pids"]`` (class index 0..L-1, -1 unlabeled):
torchvision's ``select_training_samples`` returns, for every sampled RoI, the index of its
matched ground-truth box; foreground RoIs take that box's id, background RoIs add no re-ID term.
At test time each detection keeps the embedding of the proposal it was regressed from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.ops import boxes as box_ops

BACKGROUND_PID = -2
"""Re-ID target of a background RoI in ``sampled_pids`` (-1 is an unlabeled person)."""


class EmbeddingHead(nn.Module):
    """RoI features [R, C] -> embeddings [R, dim] (not normalised; ``F.normalize`` for use)."""

    def __init__(self, in_channels: int, dim: int = 256) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, dim)
        self.bn = nn.BatchNorm1d(dim)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.bn(self.fc(feats))


class PersonSearchRoIHeads(RoIHeads):
    """``RoIHeads`` whose detections carry ``"embeddings"`` [K, dim] (unit norm) and whose
    training adds ``loss_reid`` = ``reid_weight * criterion(embeddings, ids)`` over the
    foreground RoIs (``criterion``: e.g. ``psearch.nn.losses.OIMLoss``; unlabeled ids are -1).
    """

    def __init__(self, *args, embedding_head: nn.Module, criterion: nn.Module | None = None,
                 reid_weight: float = 1.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.embedding_head = embedding_head
        self.criterion = criterion
        self.reid_weight = reid_weight
        self.sampled_pids: list[torch.Tensor] = []

    def sample_with_pids(self, proposals: list[torch.Tensor], targets: list[dict]
                         ) -> tuple[list, list, list, list]:
        """torchvision's sampling; also sets ``self.sampled_pids``: per image int64 [R], the
        matched person id of each sampled RoI, ``BACKGROUND_PID`` for background ones."""
        proposals, matched, labels, regression = self.select_training_samples(proposals, targets)
        self.sampled_pids = [torch.where(lab > 0, t["pids"][m] if len(t["pids"]) else -1,
                                         BACKGROUND_PID)
                             for t, m, lab in zip(targets, matched, labels, strict=True)]
        return proposals, matched, labels, regression

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_shapes: list[tuple[int, int]], targets: list[dict] | None = None
                ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        if self.training:
            if targets is None or any("pids" not in t for t in targets):
                raise ValueError("training targets need 'boxes', 'labels' and 'pids'")
            proposals, _, labels, regression = self.sample_with_pids(proposals, targets)
        feats = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(feats)
        if self.training:
            loss_cls, loss_reg = fastrcnn_loss(class_logits, box_regression, labels, regression)
            return [], {"loss_classifier": loss_cls, "loss_box_reg": loss_reg,
                        "loss_reid": self.reid_loss(feats, torch.cat(self.sampled_pids))}
        embeddings = F.normalize(self.embedding_head(feats), dim=1)
        return self.postprocess(class_logits, box_regression, embeddings, proposals,
                                image_shapes), {}

    def reid_loss(self, feats: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        """The criterion on the foreground RoIs (0 without a criterion or with < 2 of them:
        BatchNorm needs two samples)."""
        fg = pids != BACKGROUND_PID
        if self.criterion is None or int(fg.sum()) < 2:
            return feats.sum() * 0.0
        return self.reid_weight * self.criterion(self.embedding_head(feats[fg]), pids[fg])

    def embed(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor],
              image_shapes: list[tuple[int, int]]) -> torch.Tensor:
        """Unit embeddings [sum K_i, dim] of given ``boxes`` (per image [K_i, 4], in the
        resized images' pixels) pooled from ``features``."""
        feats = self.box_head(self.box_roi_pool(features, boxes, image_shapes))
        return F.normalize(self.embedding_head(feats), dim=1)

    def postprocess(self, class_logits: torch.Tensor, box_regression: torch.Tensor,
                    embeddings: torch.Tensor, proposals: list[torch.Tensor],
                    image_shapes: list[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        """Person boxes, scores and embeddings per image: score threshold, NMS, top-k, as
        torchvision's ``postprocess_detections`` for the single foreground class."""
        counts = [len(p) for p in proposals]
        boxes = self.box_coder.decode(box_regression, proposals)[:, 1]  # class 1: person
        scores = F.softmax(class_logits, -1)[:, 1]
        results = []
        for b, s, e, shape in zip(boxes.split(counts), scores.split(counts),
                                  embeddings.split(counts), image_shapes, strict=True):
            b = box_ops.clip_boxes_to_image(b, shape)
            keep = torch.where(s > self.score_thresh)[0]
            keep = keep[box_ops.remove_small_boxes(b[keep], min_size=1e-2)]
            keep = keep[box_ops.nms(b[keep], s[keep], self.nms_thresh)][:self.detections_per_img]
            results.append({"boxes": b[keep], "scores": s[keep], "embeddings": e[keep],
                            "labels": torch.ones(len(keep), dtype=torch.int64, device=b.device)})
        return results
