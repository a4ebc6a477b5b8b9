"""A trained QEEPS for users: it answers one query over gallery images pair by pair.

>>> qeeps = QEEPSSearcher.from_checkpoint("runs/qeeps/last.pt", device="cpu")
>>> [(boxes, scores, sims)] = qeeps.search_pairs(query_rgb, (x1, y1, x2, y2), [gallery_rgb])

Every (query, gallery image) pair is a full two-stream forward pass: the QSSE gates couple the
streams, so nothing of the query can be cached across gallery images.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psearch.core.boxes import check_box
from psearch.core.checkpoint import checkpoint_of_kind, load_model_state
from psearch.core.device import resolve_device
from psearch.joint.infer import LOSS_PREFIX
from psearch.joint.qeeps_train import CHECKPOINT_KIND, build_qeeps, resolve_qeeps_config
from psearch.nn.images import image_tensors

PairDetections = list[tuple[np.ndarray, np.ndarray, np.ndarray]]
"""Per gallery image: boxes float32 [K, 4], detector scores float32 [K], match scores
(QSimNet) float32 [K], ranked by match score."""


class QEEPSSearcher:
    """Inference wrapper of a ``QEEPSModel`` (eval mode, no gradients, numpy in/out)."""

    def __init__(self, model: Any, config: dict[str, Any], device: Any = "cpu",
                 checkpoint: str | None = None, batch_size: int = 4) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.config, self.batch_size = config, batch_size
        self.checkpoint_path = Path(checkpoint) if checkpoint else None

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: Any = "cpu", batch_size: int = 4,
                        payload: dict[str, Any] | None = None) -> QEEPSSearcher:
        payload = checkpoint_of_kind(path, CHECKPOINT_KIND, payload)
        config = resolve_qeeps_config(payload["config"])
        model = build_qeeps(config, with_loss=False)
        load_model_state(model, payload["model"], path, skip_prefixes=(LOSS_PREFIX,))
        return cls(model, config, device, str(Path(path).resolve()), batch_size)

    def search_pairs(self, query: np.ndarray, box: Any, galleries: list[np.ndarray]
                     ) -> PairDetections:
        """The query person (``box`` x1, y1, x2, y2 in RGB uint8 ``query``) in each gallery
        image: one pair per image, ``batch_size`` pairs per forward pass."""
        h, w = query.shape[:2]
        box = torch.tensor(check_box(box, w, h), dtype=torch.float32, device=self.device)
        [q] = image_tensors([query], self.device)
        out: PairDetections = []
        for start in range(0, len(galleries), self.batch_size):
            chunk = image_tensors(galleries[start:start + self.batch_size], self.device)
            with torch.inference_mode():
                found = self.model.search([q] * len(chunk), [box] * len(chunk), chunk)
            out.extend((d["boxes"].float().cpu().numpy(), d["scores"].float().cpu().numpy(),
                        d["sims"].float().cpu().numpy()) for d in found)
        return out

    def describe(self) -> dict[str, Any]:
        return {"backend": "qeeps", "checkpoint": str(self.checkpoint_path or ""),
                "backbone": self.config["model"]["backbone"], "device": str(self.device)}
