"""Public detector parts: the C4 split, person ids in the targets, an injected RoIHeads."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.models.detection.roi_heads import RoIHeads

from psearch.data import load_dataset
from psearch.detector import build_detector
from psearch.detector.model import (
    build_anchor_generator,
    build_backbone,
    build_roi_pooler,
    feature_names,
    resolve_model_config,
)
from psearch.nn.targets import DetectionTrainSet, collate, identity_table, pid_classes

C4 = {"backbone": "resnet18_c4", "min_size": 96, "max_size": 160, "roi_size": [8, 4],
      "anchor_sizes": [[16, 32, 64, 128]],
      "rpn": {"post_nms_top_n_train": 64, "post_nms_top_n_test": 32},
      "box": {"batch_size_per_image": 16}}


def test_c4_split_is_a_stride_16_trunk_and_a_layer4_head() -> None:
    cfg = resolve_model_config(C4)
    trunk, head = build_backbone(cfg)
    assert feature_names(trunk) == ["feat"]
    feats = trunk(torch.zeros(1, 3, 96, 128))["feat"]
    assert feats.shape == (1, trunk.out_channels, 6, 8) and trunk.out_channels == 256
    regions = build_roi_pooler(cfg, ["feat"])({"feat": feats}, [torch.tensor([[0., 0, 32, 64]])],
                                              [(96, 128)])
    assert regions.shape == (1, 256, 8, 4)
    assert head(regions).shape == (1, head.out_channels) and head.out_channels == 512
    assert build_anchor_generator(cfg, 1).num_anchors_per_location() == [12]


def test_c4_detector_keeps_torchvision_state_dict_names() -> None:
    keys = build_detector(C4).state_dict()
    assert "backbone.body.layer3.0.conv1.weight" in keys
    assert "roi_heads.box_head.layer4.0.conv1.weight" in keys
    assert "roi_heads.box_predictor.cls_score.weight" in keys


def test_targets_carry_person_ids_and_flip_with_their_boxes(cuhk_world) -> None:
    records = load_dataset(cuhk_world, "cuhk").train
    record = next(r for r in records if (r.pids == -1).any() and (r.pids != -1).any())
    _, target = DetectionTrainSet([record], hflip=1.0)[0]
    assert torch.equal(target["pids"], torch.from_numpy(record.pids))
    assert torch.equal(target["labels"], torch.ones(len(record.pids), dtype=torch.int64))
    table = identity_table(records)
    _, target = DetectionTrainSet([record], hflip=0.0, pid_values=table)[0]
    labeled = record.pids != -1
    assert torch.equal(target["pids"][labeled], torch.from_numpy(
        np.searchsorted(table, record.pids[labeled])))
    assert (target["pids"][~labeled] == -1).all()
    assert pid_classes(np.array([table[0], 10**9, -1]), table).tolist() == [0, -1, -1]


class PidRoIHeads(RoIHeads):
    """A custom RoI head: records the person ids that reach the sampled RoIs."""

    def select_training_samples(self, proposals, targets):
        proposals, matched, labels, regression = super().select_training_samples(proposals,
                                                                                   targets)
        self.sampled_pids = [torch.where(lab > 0, t["pids"][m], -2)
                             for t, m, lab in zip(targets, matched, labels, strict=True)]
        return proposals, matched, labels, regression


def test_a_custom_roi_heads_built_through_the_builder_trains_a_step(cuhk_world) -> None:
    torch.manual_seed(0)
    dataset = load_dataset(cuhk_world, "cuhk")
    images, targets = collate([DetectionTrainSet(dataset.train, 0.0)[i] for i in range(2)])
    model = build_detector(C4, roi_heads=PidRoIHeads).train()
    assert type(model.roi_heads) is PidRoIHeads
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 16
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    before = model.roi_heads.box_predictor.cls_score.weight.detach().clone()
    losses = model([img.float() / 255 for img in images], targets)
    sum(losses.values()).backward()
    optimizer.step()
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness",
                           "loss_rpn_box_reg"}
    assert not torch.equal(before, model.roi_heads.box_predictor.cls_score.weight)
    for pids, target in zip(model.roi_heads.sampled_pids, targets, strict=True):
        fg = pids[pids != -2]
        assert len(fg) >= len(target["boxes"])  # ground-truth boxes join the proposals
        assert set(fg.tolist()) <= set(target["pids"].tolist())
