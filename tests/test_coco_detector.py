"""``--weights coco*``: torchvision's COCO Faster R-CNN as a person detector, from the cache."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from psearch.cli.main import cli
from psearch.core.errors import PsearchError
from psearch.core.weights import torchvision_file
from psearch.detector.coco import COCO_MODELS, CocoPersonDetector
from psearch.detector.model import COCO_PERSON
from psearch.registry import load_detector


@pytest.fixture()
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def _cache_random(name: str) -> torch.nn.Module:
    """A randomly initialised model saved where the hub cache keeps the real file."""
    builder, weights = COCO_MODELS[name]
    torch.manual_seed(0)
    model = builder(weights=None, weights_backbone=None, num_classes=91)
    path = torchvision_file(weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval()


def test_missing_weights_is_one_line_error(hub):
    with pytest.raises(PsearchError, match="not in the torch hub cache; pass --download"):
        load_detector("coco", device="cpu")
    cv2.imwrite(str(hub / "a.jpg"), np.zeros((64, 64, 3), np.uint8))
    result = CliRunner().invoke(cli, ["detect", "--weights", "coco-mobilenet",
                                      str(hub / "a.jpg"), "--out", str(hub / "out")])
    assert isinstance(result.exception, PsearchError)  # main() prints it as one line
    assert "fasterrcnn_mobilenet_v3_large_fpn" in str(result.exception)


def test_cached_coco_detector_keeps_person_detections_only(hub):
    reference = _cache_random("coco-mobilenet")
    det = load_detector("coco-mobilenet", device="cpu", batch_size=2)
    assert isinstance(det, CocoPersonDetector)
    assert det.describe()["coco_box_map"] == 32.8
    for key, value in reference.state_dict().items():
        assert torch.equal(det.model.state_dict()[key], value)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    [(boxes, scores)] = det.detect([image], score_thresh=0.0, max_detections=5)
    with torch.inference_mode():
        reference.roi_heads.score_thresh = 0.0
        [out] = reference([torch.from_numpy(image).permute(2, 0, 1).float() / 255])
    person = out["labels"] == COCO_PERSON
    assert len(boxes) == min(5, int(person.sum()))
    np.testing.assert_allclose(scores, out["scores"][person][:5].numpy(), atol=1e-6)
    np.testing.assert_allclose(boxes, out["boxes"][person][:5].numpy(), atol=1e-4)


def test_broken_cached_file_is_one_line_error(hub):
    path = torchvision_file(COCO_MODELS["coco-mobilenet"][1])
    path.parent.mkdir(parents=True)
    torch.save({"unrelated": torch.zeros(1)}, path)
    with pytest.raises(PsearchError, match="not torchvision's coco-mobilenet weights"):
        load_detector("coco-mobilenet", device="cpu")


def test_weights_list_shows_coco_detectors(hub):
    result = CliRunner().invoke(cli, ["weights", "list"])
    assert result.exit_code == 0, result.output
    for name in COCO_MODELS:
        assert f"detect-{name} " in result.output
