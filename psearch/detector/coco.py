"""torchvision's COCO Faster R-CNN used as it is, as a person detector (``--weights coco``).

The published 91-class models are rebuilt with torchvision's own architecture and settings,
their weights read from the torch hub cache (fetched there only under ``--download``, see
``psearch.core.weights``), and their output reduced to "person" (COCO
category 1) by keeping only the detections labelled "person": the scores are the published
model's own. No training on the user's footage is needed.

>>> det = CocoPersonDetector.from_name("coco-mobilenet", device="cpu")
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchvision.models.detection import (
    FasterRCNN_MobileNet_V3_Large_FPN_Weights,
    FasterRCNN_ResNet50_FPN_V2_Weights,
    FasterRCNN_ResNet50_FPN_Weights,
    fasterrcnn_mobilenet_v3_large_fpn,
    fasterrcnn_resnet50_fpn,
    fasterrcnn_resnet50_fpn_v2,
)

from psearch.core.errors import PsearchError
from psearch.detector.inference import PersonDetector, detection_limits
from psearch.detector.model import COCO_PERSON
from psearch.nn.images import image_tensors
from psearch.roles import Detections

COCO_MODELS: dict[str, tuple[Any, Any]] = {
    # --weights name: (torchvision builder, its COCO weights entry)
    "coco": (fasterrcnn_resnet50_fpn_v2, FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1),
    "coco-v1": (fasterrcnn_resnet50_fpn, FasterRCNN_ResNet50_FPN_Weights.COCO_V1),
    "coco-mobilenet": (fasterrcnn_mobilenet_v3_large_fpn,
                       FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1),
}
"""The COCO person detectors ``psearch detect --weights NAME`` accepts."""


def build_coco_person_model(name: str) -> torch.nn.Module:
    """torchvision's 91-class COCO Faster R-CNN ``name`` with its cached weights."""
    from psearch.core.weights import torchvision_weights

    if name not in COCO_MODELS:
        raise PsearchError(f"{name}: not a COCO detector (known: {', '.join(COCO_MODELS)})")
    builder, weights = COCO_MODELS[name]
    path = torchvision_weights(weights, f"COCO Faster R-CNN ({name})")
    model = builder(weights=None, weights_backbone=None, num_classes=91)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise PsearchError(f"{path}: not torchvision's {name} weights "
                           f"({type(exc).__name__}: {first[:120]})") from None
    return model


class CocoPersonDetector(PersonDetector):
    """A ``PersonDetector`` holding torchvision's COCO Faster R-CNN; ``detect`` returns its
    "person" detections only (scores and boxes as the 91-class model gives them)."""

    name = "coco"

    @classmethod
    def from_name(cls, name: str = "coco", device: Any = "cpu", batch_size: int = 8,
                  **_options: Any) -> CocoPersonDetector:
        """The registry's loader for ``--weights coco|coco-v1|coco-mobilenet``."""
        model = build_coco_person_model(name)
        _, weights = COCO_MODELS[name]
        config = {"model": {"backbone": name, "weights": weights.url}}
        det = cls(model, config, device=device, checkpoint=None, batch_size=batch_size)
        det.name = name
        return det

    @torch.inference_mode()
    def detect(self, images: list[np.ndarray], score_thresh: float = 0.5,
               max_detections: int | None = None) -> Detections:
        """Same contract as ``PersonDetector.detect``; other COCO classes are dropped before
        ``max_detections`` applies."""
        results: Detections = []
        with detection_limits(self.model.roi_heads, score_thresh, None):
            for start in range(0, len(images), self.batch_size):
                batch = image_tensors(images[start:start + self.batch_size], self.device)
                for out in self.model(batch):
                    person = out["labels"] == COCO_PERSON
                    boxes = out["boxes"][person][:max_detections]
                    scores = out["scores"][person][:max_detections]
                    results.append((boxes.float().cpu().numpy(),
                                    scores.float().cpu().numpy()))
        return results

    def describe(self) -> dict[str, Any]:
        _, weights = COCO_MODELS[self.name]
        return {"backend": "faster_rcnn_coco", "checkpoint": None, "name": self.name,
                "weights": f"{type(weights).__name__}.{weights.name}",
                "coco_box_map": weights.meta["_metrics"]["COCO-val2017"]["box_map"],
                "device": str(self.device)}


def load_coco(device: Any = "cpu", **options: Any) -> CocoPersonDetector:
    """``--weights coco``: ResNet-50-FPN v2 (torchvision's most accurate COCO Faster R-CNN)."""
    return CocoPersonDetector.from_name("coco", device=device, **options)


def load_coco_v1(device: Any = "cpu", **options: Any) -> CocoPersonDetector:
    """``--weights coco-v1``: the original ResNet-50-FPN."""
    return CocoPersonDetector.from_name("coco-v1", device=device, **options)


def load_coco_mobilenet(device: Any = "cpu", **options: Any) -> CocoPersonDetector:
    """``--weights coco-mobilenet``: MobileNetV3-Large-FPN, the fastest on a CPU."""
    return CocoPersonDetector.from_name("coco-mobilenet", device=device, **options)
