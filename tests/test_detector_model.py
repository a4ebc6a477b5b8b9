"""The detector model and its training: builders, weights, checkpoints, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support import TINY_MODEL

from psearch.baselines.hog import HogDetector
from psearch.core.checkpoint import load_checkpoint
from psearch.core.errors import PsearchError
from psearch.data import load_dataset
from psearch.detector import PersonDetector, build_detector
from psearch.detector.model import NUM_CLASSES
from psearch.detector.train import resolve_config, train_detector
from psearch.nn.targets import DetectionTrainSet
from psearch.nn.targets import collate as _collate
from psearch.registry import load_detector

# A one-epoch training config around TINY_MODEL.
TINY = {"model": TINY_MODEL,
        "train": {"epochs": 1, "batch_size": 4, "lr": 0.01, "warmup_iters": 2, "lr_steps": []}}


def test_model_has_one_person_class_and_upright_anchors() -> None:
    model = build_detector({**TINY_MODEL, "aspect_ratios": [2.0, 3.0]})
    assert model.roi_heads.box_predictor.cls_score.out_features == NUM_CLASSES
    # Levels: two FPN maps and the pooled one, 2 sizes x 2 ratios on each.
    assert model.rpn.anchor_generator.num_anchors_per_location() == [4, 4, 4]
    anchors = model.rpn.anchor_generator.cell_anchors[1]  # sizes 64, 96 x ratios 2, 3 (h / w)
    heights, widths = anchors[:, 3] - anchors[:, 1], anchors[:, 2] - anchors[:, 0]
    assert torch.allclose(heights / widths, torch.tensor([2.0, 2.0, 3.0, 3.0]), rtol=0.05)


@pytest.mark.parametrize("bad, message", [
    ({"anchor_sizes": [[32], [64]]}, "FPN levels"),
    ({"anchor_sizes": [[32], [64], [96, 128]]}, "same number"),
    ({"backbone": "vgg"}, "model.backbone"),
    ({"anchor_size": [[32]]}, "unknown key"),
    ({"rpn": {"nms": 0.5}}, "model.rpn"),
])
def test_bad_model_config_is_refused(bad: dict, message: str) -> None:
    with pytest.raises(PsearchError, match=message):
        build_detector({**TINY_MODEL, **bad})


def test_missing_coco_weights_name_the_cache_and_never_download(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(PsearchError, match="not in the torch hub cache"):
        build_detector({**TINY_MODEL, "weights": "coco"})


def test_resnet18_fpn_has_no_coco_weights_to_start_from() -> None:
    with pytest.raises(PsearchError, match="no COCO Faster R-CNN"):
        build_detector({"backbone": "resnet18_fpn", "weights": "coco"})


def test_resnet18_fpn_builds_from_scratch_with_one_person_class() -> None:
    model = build_detector({"backbone": "resnet18_fpn", "min_size": 96, "max_size": 160})
    assert model.roi_heads.box_predictor.cls_score.out_features == NUM_CLASSES


def test_coco_weights_file_gives_its_person_rows_to_the_predictor(tmp_path) -> None:
    torch.manual_seed(0)
    state = build_detector(TINY_MODEL).state_dict()
    head = "roi_heads.box_predictor."
    state[head + "cls_score.weight"] = torch.randn(91, 64)
    state[head + "cls_score.bias"] = torch.randn(91)
    state[head + "bbox_pred.weight"] = torch.randn(91 * 4, 64)
    state[head + "bbox_pred.bias"] = torch.randn(91 * 4)
    torch.save(state, tmp_path / "coco.pth")
    model = build_detector({**TINY_MODEL, "weights": str(tmp_path / "coco.pth")})
    loaded = model.state_dict()
    assert torch.equal(loaded[head + "cls_score.weight"], state[head + "cls_score.weight"][[0, 1]])
    assert torch.equal(loaded[head + "bbox_pred.bias"], state[head + "bbox_pred.bias"][:8])
    key = "backbone.fpn.layer_blocks.0.0.weight"
    assert torch.equal(loaded[key], state[key])


def test_train_set_flips_boxes_with_the_image(cuhk_world) -> None:
    record = load_dataset(cuhk_world, "cuhk").train[0]
    image, target = DetectionTrainSet([record], hflip=1.0)[0]
    w = image.shape[2]
    assert torch.allclose(target["boxes"][:, 0], w - torch.from_numpy(record.boxes[:, 2]))
    assert torch.equal(target["labels"], torch.ones(len(record.boxes), dtype=torch.int64))


def test_a_few_iterations_lower_the_loss(cuhk_world) -> None:
    torch.manual_seed(0)
    dataset = load_dataset(cuhk_world, "cuhk")
    images, targets = _collate([DetectionTrainSet(dataset.train, 0.0)[i] for i in range(2)])
    images = [img.float() / 255 for img in images]
    model = build_detector(TINY_MODEL).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        loss = sum(model(images, targets).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-2:]) < 0.85 * losses[0]


def test_train_writes_checkpoints_metrics_and_resumes(cuhk_world, tmp_path) -> None:
    dataset = load_dataset(cuhk_world, "cuhk")
    dataset.train, dataset.gallery = dataset.train[:8], dataset.gallery[:4]  # 2 iterations
    out = tmp_path / "run"
    result = train_detector(dataset, resolve_config(TINY), out, device="cpu", progress=False)
    metrics = result.metrics
    assert result.out_dir == out and [r["epoch"] for r in result.history] == [1]
    assert set(metrics["detection"]) == {"all", "labeled"}
    assert 0 <= metrics["detection"]["all"]["recall"] <= 1
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1
    payload = load_checkpoint(out / "last.pt", kind="detector")
    assert payload["epoch"] == 1 and len(payload["data_fingerprint"]) == 64
    assert payload["train_seconds"] > 0
    assert payload["config"]["model"]["fpn_channels"] == 32  # the full config travels with it
    assert payload["optimizer"]["state"] and payload["scheduler"]["last_epoch"] == 2
    assert not (out / "epoch_1.pt").exists()  # only last.pt unless train.keep_epochs

    with pytest.raises(PsearchError, match="--resume"):
        train_detector(dataset, resolve_config(TINY), out, device="cpu", progress=False)
    train_detector(dataset, None, out, device="cpu", resume=True, epochs=2, evaluate=False,
                   progress=False)
    resumed = load_checkpoint(out / "last.pt")
    assert resumed["epoch"] == 2 and [r["epoch"] for r in resumed["history"]] == [1, 2]

    dataset.train = dataset.train[:-1]  # other data: resuming would silently mix runs
    with pytest.raises(PsearchError, match="fingerprint"):
        train_detector(dataset, None, out, device="cpu", resume=True, epochs=3, progress=False)

    detector = load_detector(out / "last.pt")
    assert isinstance(detector, PersonDetector)
    image = np.zeros((120, 90, 3), np.uint8)
    [(boxes, scores)] = detector.detect([image], score_thresh=0.0, max_detections=7)
    assert boxes.dtype == np.float32 and boxes.shape == (len(scores), 4) and len(scores) <= 7
    assert np.all(np.diff(scores) <= 0)


def test_hog_scores_are_sigmoid_margins_above_the_threshold(cuhk_world) -> None:
    dataset = load_dataset(cuhk_world, "cuhk")
    from psearch.core.media import read_image

    images = [read_image(r.path) for r in dataset.gallery[:3]]
    detector = load_detector("hog")
    assert isinstance(detector, HogDetector)
    detector.upscale = 2.0
    loose = detector.detect(images, score_thresh=0.2)
    strict = detector.detect(images, score_thresh=0.6)
    assert sum(len(s) for _, s in loose) >= sum(len(s) for _, s in strict)
    for image, (boxes, scores) in zip(images, strict, strict=True):
        assert boxes.dtype == np.float32 and scores.dtype == np.float32
        assert np.all((scores >= 0.6) & (scores <= 1))
        h, w = image.shape[:2]
        assert np.all(boxes >= 0)
        assert np.all(boxes[:, [0, 2]] <= w) and np.all(boxes[:, [1, 3]] <= h)
