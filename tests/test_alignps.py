"""AlignPS: person ids on FCOS's positive locations, the TOIM loss against its formula, training,
checkpoints that detect, embed, index and answer queries, and bad input."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from support import assert_top_includes, detect_dir, first_train_batch, run_cli, sgd_steps

from psearch.cli.main import main
from psearch.core.checkpoint import load_checkpoint
from psearch.core.errors import PsearchError
from psearch.data import load_dataset
from psearch.evaluation import evaluate
from psearch.formats.manifest import read_manifest
from psearch.joint.alignps import AlignPS
from psearch.joint.config import resolve_joint_config
from psearch.joint.evaluate import detected_results
from psearch.joint.infer import JointSearcher
from psearch.joint.model import build_joint_model
from psearch.joint.roi_heads import BACKGROUND_PID
from psearch.nn.losses import TOIMLoss

TINY = {"model": {"min_size": 96, "max_size": 160, "returned_layers": [2, 3, 5],
                  "fpn_channels": 16},
        "reid": {"model": "alignps", "dim": 64, "queue_size": 50},
        "alignps": {"lateral_channels": 16, "head_channels": 32, "head_convs": 1}}
TINY_SETS = ["--set", "model.min_size=96", "--set", "model.max_size=160",
             "--set", "model.returned_layers=[2, 3, 5]", "--set", "model.fpn_channels=16",
             "--set", "reid.dim=64", "--set", "reid.queue_size=50",
             "--set", "alignps.lateral_channels=16", "--set", "alignps.head_channels=32",
             "--set", "alignps.head_convs=1", "--set", "train.epochs=1",
             "--set", "train.warmup_iters=2", "--set", "train.lr_steps=[]"]


def tiny_model(num_ids: int, **model: object) -> AlignPS:
    config = resolve_joint_config({**TINY, "model": {**TINY["model"], **model},
                                   "reid": {**TINY["reid"], "num_ids": num_ids}})
    return build_joint_model(config)


def test_fcos_positive_locations_carry_the_person_id_of_their_box() -> None:
    torch.manual_seed(0)
    model = tiny_model(10, min_size=128).train()  # a 128 x 160 image is not resized
    boxes = torch.tensor([[10., 10, 40, 90], [60, 20, 100, 110], [110, 5, 150, 80]])
    target = {"boxes": boxes, "labels": torch.ones(3, dtype=torch.int64),
              "pids": torch.tensor([7, -1, 2])}
    model([torch.rand(3, 128, 160)], [target])
    [matched] = model.head.matched_idxs
    [pids] = model.location_pids([target], [matched])
    stride = model.backbone.stride
    cols = torch.arange(160 // stride).repeat(128 // stride)
    rows = torch.arange(128 // stride).repeat_interleave(160 // stride)
    centres = torch.stack([cols, rows], 1).float() * stride  # torchvision's location centres
    box_centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    positive = pids != BACKGROUND_PID
    assert positive.sum() >= 3 and torch.equal(positive, matched >= 0)
    gt = matched[positive]
    assert torch.equal(pids[positive], target["pids"][gt])
    near = (centres[positive] - box_centres[gt]).abs().amax(1) < 1.5 * stride
    inside = ((centres[positive] > boxes[gt, :2]) & (centres[positive] < boxes[gt, 2:])).all(1)
    assert near.all() and inside.all()
    for k, centre in enumerate(box_centres):  # the location nearest each centre is its box's
        nearest = int((centres - centre).abs().amax(1).argmin())
        assert matched[nearest] == k and pids[nearest] == target["pids"][k]


def transliterated_toim(feats, labels, lut, queue, scale, gamma, margin):
    """TOIM written out sample by sample from its definition."""
    feats = [f / f.norm() for f in feats]
    table = torch.cat([lut, queue])
    oim_terms = []
    for f, y in zip(feats, labels.tolist(), strict=True):
        if y == -1:
            continue
        logits = [scale * float(f @ row) for row in table]
        top = max(logits)
        p = np.exp(logits[y] - top) / sum(np.exp(v - top) for v in logits)
        oim_terms.append(-((1 - p) ** gamma) * np.log(p))
    points = [(f, y) for f, y in zip(feats, labels.tolist(), strict=True) if y != -1]
    for y in sorted({y for _, y in points}):
        if float(lut[y].norm()) > 0:
            points.append((lut[y], y))
    hinges = []
    for a, ya in points:
        pos = max(float((a - p).norm()) for p, yp in points if yp == ya)
        neg = min(float((a - n).norm()) for n, yn in points if yn != ya)
        hinges.append(max(0.0, margin + pos - neg))
    return np.mean(oim_terms), np.mean(hinges)


def test_toim_matches_a_transliteration_of_its_formula() -> None:
    torch.manual_seed(0)
    loss = TOIMLoss(8, 5, queue_size=4, scale=10.0, focal_gamma=2.0, margin=0.3).train()
    loss.oim.lut[[0, 1, 3]] = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    loss.oim.queue[:2] = torch.nn.functional.normalize(torch.randn(2, 8), dim=1)
    feats = torch.randn(7, 8, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 2, -1, 3, 2])
    lut, queue = loss.oim.lut.clone(), loss.oim.queue.clone()
    terms = loss.terms(feats, labels)
    oim, triplet = transliterated_toim(feats.detach(), labels, lut, queue, 10.0, 2.0, 0.3)
    assert terms["loss_oim"].item() == pytest.approx(oim, rel=1e-5)
    assert terms["loss_triplet"].item() == pytest.approx(triplet, rel=1e-5) and triplet > 0
    sum(terms.values()).backward()
    assert feats.grad.abs().sum() > 0
    assert not torch.equal(loss.oim.lut[0], lut[0])  # the table moved after it was read


def test_losses_fall_on_the_tiny_world(cuhk_world) -> None:
    torch.manual_seed(0)
    images, targets, table = first_train_batch(cuhk_world)
    model = tiny_model(len(table)).train()
    history = sgd_steps(model, images, targets, steps=8, lr=0.01)
    losses, totals = history[-1], [sum(h.values()).item() for h in history]
    assert set(losses) == {"loss_classifier", "loss_box_giou", "loss_centerness", "loss_oim",
                           "loss_triplet"}
    assert min(totals[-2:]) < 0.85 * totals[0]
    assert model.criterion.oim.queue_ptr.item() > 0  # unlabeled people entered the queue


@pytest.fixture(scope="module")
def trained(cuhk_world, tmp_path_factory):
    """An AlignPS checkpoint trained one epoch on the tiny world (train-joint, no evaluation)."""
    out = tmp_path_factory.mktemp("alignps") / "run"
    main(["train-joint", "--model", "alignps", "--data", str(cuhk_world), "--format", "cuhk",
          "--out", str(out), "--no-eval", *TINY_SETS])
    return out / "last.pt"


def test_train_joint_writes_an_alignps_joint_checkpoint(trained) -> None:
    payload = load_checkpoint(trained, kind="joint")
    assert payload["epoch"] == 1 and payload["config"]["reid"]["model"] == "alignps"
    assert payload["config"]["alignps"]["lateral_channels"] == 16
    assert payload["model"]["criterion.oim.lut"].shape == (len(payload["pid_values"]), 64)


def test_resume_continues_with_the_toim_memory(trained, tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(trained.read_bytes())
    before = load_checkpoint(run / "last.pt")["model"]["criterion.oim.lut"]
    data = load_checkpoint(trained)["data"]["root"]
    main(["train-joint", "--model", "alignps", "--data", data, "--format", "cuhk", "--out",
          str(run), "--resume", "--epochs", "2", "--no-eval"])
    payload = load_checkpoint(run / "last.pt")
    after = payload["model"]["criterion.oim.lut"]
    assert payload["epoch"] == 2 and len(payload["history"]) == 2
    written = before.norm(dim=1) > 0
    assert written.any() and torch.allclose(after[written].norm(dim=1),
                                            torch.ones(int(written.sum())), atol=1e-4)


def test_alignps_checkpoint_detects_embeds_indexes_and_answers_queries(
        trained, cuhk_world, tmp_path, capsys) -> None:
    dataset = load_dataset(cuhk_world, "cuhk")
    images = [str(r.path) for r in dataset.gallery[:3]]
    dets = tmp_path / "dets"
    code, _, err = run_cli(["detect", "--weights", trained, *images, "--out", dets,
                            "--score-thresh", "0", "--max-detections", "5", "--embed", "-q"],
                           capsys)
    assert code == 0, err
    one_pass = np.load(dets / "embeddings.npy")
    assert json.loads((dets / "embeddings.json").read_text())["dim"] == 64
    assert one_pass.shape == (15, 64)
    assert np.allclose(np.linalg.norm(one_pass, axis=1), 1, atol=1e-4)
    code, _, err = run_cli(["index", "--manifest", dets, "--embeddings", dets, "--out",
                            tmp_path / "one-pass"], capsys)
    assert code == 0, err
    # Ground-truth boxes (an untrained model's own boxes are mostly sub-pixel) embedded at
    # their centres on their frames, indexed, and one of them asked back: itself, cosine 1
    # (among the rows tied at the top: an untrained model may give several boxes one vector).
    gt = detect_dir(tmp_path / "gt", [(r.path, r.boxes) for r in dataset.gallery[:3]])
    code, _, err = run_cli(["embed", "--weights", trained, "--manifest", gt, "--out",
                            tmp_path / "emb", "--quiet"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["index", "--manifest", gt, "--embeddings", tmp_path / "emb",
                            "--out", tmp_path / "gallery"], capsys)
    assert code == 0, err
    manifest = read_manifest(gt)
    row = len(manifest) - 1
    box = ",".join(f"{v:g}" for v in manifest.boxes[row])
    for gallery, rows in (("one-pass", len(one_pass)), ("gallery", len(manifest))):
        code, out, err = run_cli(["query", "--gallery", tmp_path / gallery, "--image",
                                  manifest.sources[row], "--box", box, "--top-k", rows,
                                  "--json"], capsys)
        assert code == 0, err
        [query] = json.loads(out)["queries"]
        assert len(query["matches"]) == rows
    assert_top_includes(query["matches"], row, score=1)


def test_alignps_results_score_through_the_evaluator(trained, cuhk_world) -> None:
    dataset = load_dataset(cuhk_world, "cuhk")
    searcher = JointSearcher.from_checkpoint(trained)
    assert searcher.describe()["model"] == "alignps" and searcher.dim == 64
    report = evaluate(dataset, detected_results(searcher, dataset, score_thresh=0.0))
    assert report["search"]
    for metrics in report["search"].values():
        assert 0 <= metrics["mAP"] <= 1 and metrics["queries"] == len(dataset.queries)


@pytest.mark.parametrize(("sets", "message"), [
    (["--set", "model.backbone=resnet18_c4"], "use an \\*_fpn backbone"),
    (["--set", "alignps.head_channels=48"], "GroupNorm\\(32\\)"),
    (["--set", "reid.loss=olp"], "reid.model alignps takes toim, oim"),
    (["--config", "joint_oim_cpu"], "the config is for reid.model 'oim'"),
])
def test_bad_alignps_configs_are_one_line_errors(cuhk_world, tmp_path, capsys, sets,
                                                 message) -> None:
    code, _, err = run_cli(["train-joint", "--model", "alignps", "--data", cuhk_world,
                            "--out", tmp_path / "run", *sets], capsys)
    assert code == 1 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_alignps_needs_detector_free_weights() -> None:
    with pytest.raises(PsearchError, match="starts from null or imagenet"):
        resolve_joint_config({"reid": {"model": "alignps"}, "model": {"weights": "coco"}})
