"""The joint OIM model: person ids on sampled RoIs, training, checkpoints that detect, embed,
index and query, results scored by the evaluator, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support import (
    TINY_MODEL,
    TINY_SETS,
    assert_top_includes,
    first_train_batch,
    run_cli,
    sgd_steps,
)

from psearch.cli.main import main
from psearch.core.checkpoint import load_checkpoint, save_checkpoint
from psearch.core.errors import PsearchError
from psearch.data import load_dataset
from psearch.evaluation import evaluate, load_results, save_results
from psearch.formats.manifest import read_manifest
from psearch.joint.config import resolve_joint_config
from psearch.joint.evaluate import detected_results
from psearch.joint.infer import JointSearcher
from psearch.joint.model import JointSearchModel
from psearch.joint.roi_heads import BACKGROUND_PID
from psearch.joint.train import check_training_data
from psearch.nn.losses import TOIMLoss


def tiny_model(num_ids: int, **reid) -> JointSearchModel:
    config = resolve_joint_config({"model": TINY_MODEL,
                                   "reid": {"num_ids": num_ids, "queue_size": 50, **reid}})
    return JointSearchModel.from_config(config)


def test_the_oim_model_takes_the_triplet_aided_loss(cuhk_world) -> None:
    torch.manual_seed(0)
    images, targets, table = first_train_batch(cuhk_world)
    model = tiny_model(len(table), loss="toim", scale=10.0, focal_gamma=2.0).train()
    assert isinstance(model.roi_heads.criterion, TOIMLoss)
    losses = sgd_steps(model, images, targets, steps=1, lr=0.01)[-1]
    assert torch.isfinite(losses["loss_reid"]) and losses["loss_reid"].item() > 0
    assert model.roi_heads.criterion.oim.queue_ptr.item() > 0


def test_sampled_rois_carry_the_person_id_of_their_ground_truth_box() -> None:
    torch.manual_seed(0)
    model = tiny_model(10).train()
    target = {"boxes": torch.tensor([[10., 10, 40, 90], [60, 20, 90, 100], [100, 5, 130, 80]]),
              "labels": torch.ones(3, dtype=torch.int64), "pids": torch.tensor([7, -1, 2])}
    near = target["boxes"] + torch.tensor([1., 1, 1, 1])  # IoU > 0.5 with its own box only
    far = torch.tensor([[0., 100, 8, 120], [140, 100, 150, 119]])  # background
    model.roi_heads.sample_with_pids([torch.cat([near, far])], [target])
    [pids] = model.roi_heads.sampled_pids
    # Sampled: the 3 near boxes, the 3 ground-truth boxes themselves, 2 background.
    assert sorted(pids.tolist()) == sorted([7, -1, 2] * 2 + [BACKGROUND_PID] * 2)


def test_loss_falls_and_oim_memory_fills_on_the_tiny_world(cuhk_world) -> None:
    torch.manual_seed(0)
    images, targets, table = first_train_batch(cuhk_world)
    model = tiny_model(len(table)).train()
    history = sgd_steps(model, images, targets, steps=8, lr=0.02)
    losses, totals = history[-1], [sum(h.values()).item() for h in history]
    assert set(losses) >= {"loss_classifier", "loss_box_reg", "loss_reid", "loss_objectness"}
    assert min(totals[-2:]) < 0.85 * totals[0]
    oim = model.roi_heads.criterion
    seen = torch.cat([t["pids"] for t in targets])
    seen = seen[seen >= 0].unique()
    assert torch.allclose(oim.lut[seen].norm(dim=1), torch.ones(len(seen)), atol=1e-4)
    assert oim.queue_ptr.item() > 0  # unlabeled people entered the queue


def test_detections_carry_unit_embeddings_and_boxes_embed_on_the_frame() -> None:
    torch.manual_seed(0)
    config = resolve_joint_config({"model": {**TINY_MODEL, "box": {"score_thresh": 0.0}},
                                   "reid": {"num_ids": 4}})
    model = JointSearchModel.from_config(config, with_loss=False)
    searcher = JointSearcher(model, config)
    image = (np.random.default_rng(0).random((120, 90, 3)) * 255).astype(np.uint8)
    [(boxes, scores, feats)] = searcher.detect_and_embed([image], score_thresh=0.0,
                                                          max_detections=5)
    assert boxes.shape == (len(scores), 4) and feats.shape == (len(scores), 256)
    assert 0 < len(scores) <= 5 and np.all(np.diff(scores) <= 0)
    assert np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    [(same_boxes, _)] = searcher.detect([image], score_thresh=0.0, max_detections=5)
    assert np.array_equal(same_boxes, boxes)
    box = np.array([[10, 20, 50, 100]], np.float32)
    one = searcher.embed_boxes(image, box)
    two = searcher.embed_images_boxes([image, image[:, ::-1].copy()], [box, box])
    assert one.shape == (1, 256) and np.allclose(two[0], one, atol=1e-5)


@pytest.fixture(scope="module")
def trained(cuhk_world, tmp_path_factory):
    """A joint checkpoint trained one epoch on the tiny world (train-joint, no evaluation)."""
    out = tmp_path_factory.mktemp("joint") / "run"
    argv = ["train-joint", "--model", "oim", "--data", str(cuhk_world), "--format", "cuhk",
            "--out", str(out), "--no-eval"]
    for item in TINY_SETS:
        argv += ["--set", item]
    main(argv)
    return out / "last.pt"


def test_train_joint_writes_a_joint_checkpoint_with_its_config(trained) -> None:
    payload = load_checkpoint(trained, kind="joint")
    assert payload["epoch"] == 1 and payload["config"]["model"]["fpn_channels"] == 32
    assert payload["config"]["reid"]["num_ids"] == len(payload["pid_values"]) > 0
    assert payload["model"]["roi_heads.criterion.lut"].shape == (len(payload["pid_values"]), 256)


def test_joint_checkpoint_detects_embeds_indexes_and_answers_queries(
        trained, cuhk_world, tmp_path, capsys) -> None:
    dataset = load_dataset(cuhk_world, "cuhk")
    images = [str(r.path) for r in dataset.gallery[:4]]
    dets = tmp_path / "dets"
    detect = ["detect", "--weights", str(trained), *images, "--out", str(dets),
              "--score-thresh", "0", "--max-detections", "5", "--embed", "-q"]
    code, _, err = run_cli(detect, capsys)
    assert code == 0, err
    meta = json.loads((dets / "embeddings.json").read_text())
    one_pass = np.load(dets / "embeddings.npy")
    assert meta["rows"] == len(one_pass) == 20 and meta["dim"] == 256
    assert np.allclose(np.linalg.norm(one_pass, axis=1), 1, atol=1e-4)
    code, out, err = run_cli(detect, capsys)  # a rerun skips the finished inputs, rows stay aligned
    assert code == 0 and "4 already done" in out, err
    assert np.array_equal(np.load(dets / "embeddings.npy"), one_pass)

    emb = tmp_path / "emb"  # the same boxes embedded by RoI pooling on their frames
    code, _, err = run_cli(["embed", "--weights", str(trained), "--manifest", str(dets),
                        "--out", str(emb), "--quiet"], capsys)
    assert code == 0, err
    on_frames = np.load(emb / "embeddings.npy")
    assert on_frames.shape == one_pass.shape
    assert np.allclose(np.linalg.norm(on_frames, axis=1), 1, atol=1e-4)

    for name, source in (("one-pass", dets), ("on-frames", emb)):
        code, _, err = run_cli(["index", "--manifest", str(dets), "--embeddings", str(source),
                            "--out", str(tmp_path / name)], capsys)
        assert code == 0, err
    # A gallery detection as the query box: embedded on its frame as `psearch embed` did, so
    # its own row is at the top with cosine 1. The barely trained model may give other rows the
    # same vector: which of the tied rows FAISS lists first is not part of the contract.
    manifest = read_manifest(dets)
    row = int(np.argmax(manifest.scores))
    box = ",".join(f"{v:g}" for v in manifest.boxes[row])
    for name in ("one-pass", "on-frames"):
        code, out, err = run_cli(["query", "--gallery", str(tmp_path / name), "--image",
                              str(manifest.sources[row]), "--box", box, "--top-k", "20",
                              "--json"], capsys)
        assert code == 0, err
        [query] = json.loads(out)["queries"]
        assert len(query["matches"]) == 20
    assert_top_includes(query["matches"], row, score=1)


def test_joint_results_score_through_the_evaluator(trained, cuhk_world, tmp_path) -> None:
    dataset = load_dataset(cuhk_world, "cuhk")
    searcher = JointSearcher.from_checkpoint(trained)
    results = detected_results(searcher, dataset, score_thresh=0.0)
    save_results(tmp_path / "r.npz", results)
    report = evaluate(dataset, load_results(tmp_path / "r.npz"))
    assert set(report["search"]) == {"gallery-10", "gallery-20"} or report["search"]
    for metrics in report["search"].values():
        assert 0 <= metrics["mAP"] <= 1 and metrics["queries"] == len(dataset.queries)
    assert 0 <= report["detection"]["all"]["recall"] <= 1


def test_resume_refuses_a_reid_checkpoint_and_keeps_it(cuhk_world, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    save_checkpoint(out / "last.pt", "reid", {}, {})
    before = (out / "last.pt").read_bytes()
    code, _, err = run_cli(["train-joint", "--data", str(cuhk_world), "--out", str(out),
                        "--resume"], capsys)
    assert code == 1 and err.startswith("error:") and "'joint'" in err
    assert len(err.strip().splitlines()) == 1
    assert (out / "last.pt").read_bytes() == before


def test_training_data_needs_boxes_and_labeled_identities(cuhk_world) -> None:
    dataset = load_dataset(cuhk_world, "cuhk")
    for record in dataset.train:
        record.pids = np.full_like(record.pids, -1)
    with pytest.raises(PsearchError, match="no labeled identity"):
        check_training_data(dataset)
    for record in dataset.train:
        record.boxes, record.pids = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    with pytest.raises(PsearchError, match="no train image has a person box"):
        check_training_data(dataset)


def test_unknown_joint_config_key_is_one_clear_error() -> None:
    with pytest.raises(PsearchError, match="reid.queue: unknown config key"):
        resolve_joint_config({"reid": {"queue": 5}})


def test_batch_sampler_is_chosen_per_model_and_checked() -> None:
    def sampler(**cfg) -> str:
        return resolve_joint_config(cfg)["train"]["sampler"]

    assert sampler() == "shuffle" and sampler(reid={"model": "inet"}) == "pairs"
    assert sampler(train={"sampler": "pairs", "batch_size": 4}) == "pairs"
    with pytest.raises(PsearchError, match="train.sampler 'pk': expected one of"):
        sampler(train={"sampler": "pk"})
    with pytest.raises(PsearchError, match="reid.model dcinet trains on image pairs"):
        sampler(reid={"model": "dcinet"}, train={"sampler": "shuffle"})
    with pytest.raises(PsearchError, match="train.batch_size 3: .* must be even"):
        sampler(train={"sampler": "pairs", "batch_size": 3})
