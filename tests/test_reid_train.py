"""Re-ID training: crops and labels, the P x K sampler, loss going down, train-reid end to end."""

import json

import numpy as np
import torch
from support import run_cli

from psearch.core.checkpoint import load_checkpoint
from psearch.data import load_dataset
from psearch.formats.manifest import ManifestWriter, read_manifest
from psearch.nn.losses import OIMLoss
from psearch.reid.data import CropDataset, CropStore, IdentityBalancedSampler, build_samples
from psearch.reid.model import build_reid_net

TINY_ARGS = ["--set", "model.backbone=test_resnet", "--set", "model.input_size=[64,32]",
             "--set", "data.p=4", "--set", "data.k=2", "--set", "data.unlabeled_per_batch=4",
             "--set", "train.eval_every=1", "--device", "cpu", "--quiet"]


def test_pk_sampler_gives_p_identities_with_k_crops_plus_unlabeled():
    labels = np.array([0] * 5 + [1] * 2 + [2] * 1 + [3] * 4 + [-1] * 6)
    sampler = IdentityBalancedSampler(labels, p=3, k=2, unlabeled=2, seed=0)
    batches = list(sampler)
    assert 1 <= len(batches) <= len(sampler) == (3 + 1 + 1 + 2) // 3  # groups of k // p
    for batch in batches:
        ids = labels[batch[:6]]
        assert len(batch) == 8
        assert len(set(ids)) == 3 and all((ids == i).sum() == 2 for i in set(ids))
        assert np.all(labels[batch[6:]] == -1)
    assert batches != list(sampler)  # a new shuffle every epoch


def test_detections_take_the_identity_of_a_ground_truth_they_overlap(cuhk_world, tmp_path):
    dataset = load_dataset(cuhk_world, "cuhk")
    record = next(r for r in dataset.train if (r.pids >= 0).any())
    person = int(np.flatnonzero(record.pids >= 0)[0])
    near = record.boxes[person] + np.array([1, 1, 1, 1], np.float32)  # IoU > 0.5
    far = np.array([0, 0, 3, 3], np.float32)  # overlaps no one
    with ManifestWriter(tmp_path / "dets") as writer:
        writer.add_source(str(record.path), "image", 1, np.array([-1, -1]), np.stack([near, far]),
                          np.array([0.9, 0.8]), ["c0.jpg", "c1.jpg"])
    plain = build_samples(dataset.train)
    extra = build_samples(dataset.train, read_manifest(tmp_path / "dets"), iou=0.5)
    assert len(extra) == len(plain) + 1  # the far box is dropped
    added = np.flatnonzero(np.all(np.isclose(extra.boxes, near, atol=0.01), axis=1))
    assert len(added) == 1
    assert extra.pid_values[extra.labels[added[0]]] == record.pids[person]


def test_crop_cache_holds_the_same_regions_as_decoding_on_demand(cuhk_world):
    samples = build_samples(load_dataset(cuhk_world, "cuhk").train[:3])
    cached = CropStore(samples, input_height=64, cache=True, progress=False)
    lazy = CropStore(samples, input_height=64, cache=False)
    for i in range(len(samples)):
        (region, box), (region2, box2) = cached.get(i), lazy.get(i)
        np.testing.assert_array_equal(region, region2)
        np.testing.assert_array_equal(box, box2)
    image, label = CropDataset(cached, (64, 32), augment=True)[0]
    assert image.shape == (3, 64, 32) and image.dtype == torch.uint8
    assert label == samples.labels[0]


def test_a_few_oim_training_steps_lower_the_loss():
    torch.manual_seed(0)
    net = build_reid_net({"backbone": "test_resnet", "input_size": [64, 32]})
    loss_fn = OIMLoss(net.dim, num_ids=4, queue_size=16)
    colours = torch.randint(0, 256, (4, 3, 1, 1))
    labels = torch.tensor([0, 1, 2, 3] * 2 + [-1] * 4)
    images = torch.cat([colours[labels[:8]], torch.randint(0, 256, (4, 3, 1, 1))])
    images = (images + torch.randint(0, 40, (12, 3, 64, 32))).clamp(0, 255).to(torch.uint8)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = loss_fn(net.neck_features(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_train_reid_trains_evaluates_saves_and_resumes(cuhk_world, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train-reid", "--data", str(cuhk_world), "--format", "cuhk", "--out", str(out),
            *TINY_ARGS]
    ran = run_cli([*args, "--epochs", "1"], capsys)
    assert ran.code == 0, ran.err
    assert "gt boxes): mAP" in ran.out

    ran = run_cli([*args, "--epochs", "1"], capsys)  # would overwrite: refused
    assert ran.code == 1 and "pass --resume" in ran.err

    ran = run_cli([*args, "--epochs", "2", "--resume"], capsys)
    assert ran.code == 0, ran.err
    assert "resuming" in ran.out
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(0.0 <= h["eval"]["mAP"] <= 1.0 for h in history)
    ckpt = load_checkpoint(out / "last.pt", "reid")
    assert load_checkpoint(out / "best.pt", "reid")["epoch"] in (1, 2)  # the better test mAP
    assert ckpt["epoch"] == 2 and ckpt["config"]["model"]["backbone"] == "test_resnet"
    num_ids = len(ckpt["pid_values"])
    assert ckpt["loss"]["lut"].shape == (num_ids, 256)
    assert ckpt["loss"]["queue"].shape == (5000, 256)
    assert torch.allclose(ckpt["loss"]["lut"].norm(dim=1), torch.ones(num_ids), atol=1e-4)


def test_train_reid_refuses_a_missing_dataset(tmp_path, capsys):
    ran = run_cli(["train-reid", "--data", str(tmp_path / "nowhere"), "--out",
                         str(tmp_path / "run")], capsys)
    assert ran.code == 1 and ran.err.startswith("error: ")
