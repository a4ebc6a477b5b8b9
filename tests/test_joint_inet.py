"""I-Net and DC-I-Net joint models: pair sampling, the RoI heads' terms, refined-box re-ID,
train-joint checkpoints (memories saved, resumed) that detect, embed and query, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support import TINY_MODEL, TINY_SETS, sgd_steps
from support import run_cli as run

from psearch.core.checkpoint import load_checkpoint
from psearch.core.errors import PsearchError
from psearch.data import load_dataset
from psearch.evaluation import evaluate
from psearch.joint.config import resolve_joint_config
from psearch.joint.evaluate import detected_results
from psearch.joint.inet import DCINetRoIHeads, INetRoIHeads
from psearch.joint.infer import JointSearcher
from psearch.joint.model import JointSearchModel
from psearch.joint.pairs import PairBatchSampler, partners
from psearch.nn.inet_losses import EMPTY
from psearch.nn.targets import DetectionTrainSet, collate, identity_table


def tiny(model: str, num_ids: int, **reid) -> JointSearchModel:
    config = resolve_joint_config({"model": TINY_MODEL, "train": {"batch_size": 2},
                                   "reid": {"model": model, "num_ids": num_ids,
                                            "dictionary_size": 64, "pool_size": 4, **reid}})
    return JointSearchModel.from_config(config)


def test_pair_batches_share_a_labeled_person_and_follow_the_epoch() -> None:
    pids = [np.array([1, -1]), np.array([2]), np.array([1, 3]), np.array([-1]),
            np.array([3, 2]), np.array([4])]
    assert [p.tolist() for p in partners(pids)] == [[2], [4], [0, 4], [], [1, 2], []]
    sampler = PairBatchSampler(pids, pairs_per_batch=1, seed=0)
    assert len(sampler) == 2  # 4 images have a partner
    for epoch in range(4):
        sampler.epoch = epoch
        batches = list(sampler)
        assert len(batches) == 2
        for a, b in batches:
            shared = set(pids[a][pids[a] >= 0]) & set(pids[b][pids[b] >= 0])
            assert a != b and shared
    sampler.epoch = 3
    assert list(sampler) == batches  # resume: the same epoch gives the same pairs
    long = PairBatchSampler(pids, pairs_per_batch=2, seed=0, images_per_epoch=len(pids) * 2)
    batches = list(long)
    assert len(batches) == len(long) == 3 and all(len(b) == 4 for b in batches)
    with pytest.raises(PsearchError, match="share a labeled person"):
        PairBatchSampler([np.array([1]), np.array([2, -1])])


@pytest.fixture(scope="module")
def pair_batch(cuhk_world):
    """Two train images of the tiny world that share a person, as (images, targets, L)."""
    train = load_dataset(cuhk_world, "cuhk").train
    table = identity_table(train)
    [pair] = list(PairBatchSampler([r.pids for r in train], 1, seed=0))[:1]
    images, targets = collate([DetectionTrainSet(train, 0.0, table)[i] for i in pair])
    return [img.float() / 255 for img in images], targets, len(table)


@pytest.mark.parametrize("model,terms", [("inet", {"loss_olp", "loss_hep"}),
                                         ("dcinet", {"loss_olp", "loss_c2hep"})])
def test_pair_models_train_with_their_terms_and_fill_their_memories(pair_batch, model, terms):
    torch.manual_seed(0)
    images, targets, num_ids = pair_batch
    net = tiny(model, num_ids).train()
    heads = net.roi_heads
    assert type(heads) is (INetRoIHeads if model == "inet" else DCINetRoIHeads)
    history = sgd_steps(net, images, targets, steps=6, lr=0.01)
    losses, totals = history[-1], [h["loss_classifier"].item() for h in history]
    assert terms <= set(losses) and "loss_reid" not in losses
    assert {"loss_classifier", "loss_box_reg", "loss_objectness"} <= set(losses)
    assert min(totals[-2:]) < totals[0]  # (the re-ID terms grow as the dictionary fills)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_olp"].item() > 0  # the two images gave cross-image positives
    dictionary = heads.criterion.dictionary
    filled = dictionary.labels != EMPTY
    assert filled.any() and (dictionary.labels[filled] >= -1).all()
    if model == "dcinet":
        assert heads.criterion.classify.seen.any()


def test_dcinet_matches_refined_boxes_to_ground_truth_for_their_ids() -> None:
    heads = tiny("dcinet", 5).roi_heads
    target = {"boxes": torch.tensor([[10., 10, 40, 90], [60, 20, 90, 100]]),
              "pids": torch.tensor([3, -1])}
    refined = torch.tensor([[11., 11, 41, 91], [0, 0, 8, 8], [61, 19, 91, 99], [10, 10, 80, 90]])
    boxes, pids, images = heads._refined_targets(refined, [refined], [(120, 160)], [target])
    assert pids[0].tolist() == [3, -1] and images.tolist() == [0, 0]
    assert torch.equal(boxes[0], refined[[0, 2]])


def test_dcinet_detections_carry_the_embedding_of_their_own_box() -> None:
    """DC-I-Net re-pools the kept boxes: a detection's embedding is that of its box."""
    torch.manual_seed(0)
    config = resolve_joint_config({"model": {**TINY_MODEL, "box": {"score_thresh": 0.0}},
                                   "train": {"batch_size": 2},
                                   "reid": {"model": "dcinet", "num_ids": 4}})
    searcher = JointSearcher(JointSearchModel.from_config(config, with_loss=False), config)
    image = (np.random.default_rng(0).random((120, 90, 3)) * 255).astype(np.uint8)
    [(boxes, scores, feats)] = searcher.detect_and_embed([image], score_thresh=0.0,
                                                          max_detections=5)
    assert 0 < len(boxes) <= 5 and feats.shape == (len(boxes), 256)
    assert np.allclose(searcher.embed_boxes(image, boxes), feats, atol=1e-4)


@pytest.fixture(scope="module")
def trained_dcinet(cuhk_world, tmp_path_factory):
    """DC-I-Net trained one epoch on the tiny world with train-joint (no evaluation)."""
    out = tmp_path_factory.mktemp("dcinet") / "run"
    argv = ["train-joint", "--model", "dcinet", "--data", str(cuhk_world), "--format", "cuhk",
            "--out", str(out), "--no-eval", "--set", "train.batch_size=2",
            "--set", "reid.pool_size=8"]
    for item in TINY_SETS:
        if not item.startswith("reid.queue_size"):
            argv += ["--set", item]
    from psearch.cli.main import main
    main(argv)
    return out


def test_dcinet_checkpoint_holds_its_memories_and_resumes_with_them(trained_dcinet, capsys):
    payload = load_checkpoint(trained_dcinet / "last.pt", kind="joint")
    state = payload["model"]
    assert payload["config"]["reid"]["model"] == "dcinet"
    assert state["roi_heads.criterion.dictionary.feats"].shape == (40 * 32, 256)
    assert (state["roi_heads.criterion.dictionary.labels"] != EMPTY).any()
    assert state["roi_heads.criterion.classify.seen"].any()
    assert "roi_heads.reid_head.fc6.weight" in state
    config = dict(payload["config"])
    model = JointSearchModel.from_config(config, load_weights=False)
    model.load_state_dict(state)  # strict: every buffer of the memories has its place
    ptr = state["roi_heads.criterion.dictionary.ptr"].item()
    code, out, err = run(["train-joint", "--model", "dcinet", "--data",
                          str(payload["data"]["root"]), "--format", "cuhk",
                          "--out", str(trained_dcinet), "--resume", "--epochs", "2",
                          "--no-eval"], capsys)
    assert code == 0, err
    resumed = load_checkpoint(trained_dcinet / "last.pt", kind="joint")
    assert resumed["epoch"] == 2
    moved = resumed["model"]["roi_heads.criterion.dictionary.ptr"].item()
    feats = resumed["model"]["roi_heads.criterion.dictionary.feats"]
    size = len(feats)
    # The second epoch went on from the first one's pointer (a fresh dictionary starts at 0).
    assert moved != ptr and (resumed["model"]["roi_heads.criterion.dictionary.labels"]
                             != EMPTY).sum() >= min(size, ptr)


def test_dcinet_checkpoint_detects_embeds_and_scores(trained_dcinet, cuhk_world, tmp_path,
                                                     capsys) -> None:
    weights = trained_dcinet / "last.pt"
    dataset = load_dataset(cuhk_world, "cuhk")
    images = [str(r.path) for r in dataset.gallery[:3]]
    dets = tmp_path / "dets"
    code, _, err = run(["detect", "--weights", str(weights), *images, "--out", str(dets),
                        "--score-thresh", "0", "--max-detections", "4", "--embed", "-q"],
                       capsys)
    assert code == 0, err
    assert json.loads((dets / "embeddings.json").read_text())["rows"] == 12
    code, _, err = run(["embed", "--weights", str(weights), "--manifest", str(dets),
                        "--out", str(tmp_path / "emb"), "--quiet"], capsys)
    assert code == 0, err
    # DC-I-Net embeds every box by re-pooling it: one pass and on-frame rows agree.
    assert np.allclose(np.load(tmp_path / "emb" / "embeddings.npy"),
                       np.load(dets / "embeddings.npy"), atol=1e-4)
    code, _, err = run(["index", "--manifest", str(dets), "--embeddings", str(dets),
                        "--out", str(tmp_path / "gallery")], capsys)
    assert code == 0, err
    searcher = JointSearcher.from_checkpoint(weights)
    report = evaluate(dataset, detected_results(searcher, dataset, score_thresh=0.0))
    for metrics in report["search"].values():
        assert 0 <= metrics["mAP"] <= 1 and metrics["queries"] == len(dataset.queries)


def test_pair_model_config_errors_are_one_line(cuhk_world, tmp_path, capsys) -> None:
    with pytest.raises(PsearchError, match="reid.loss 'oim': reid.model inet takes"):
        resolve_joint_config({"reid": {"model": "inet", "loss": "oim"}})
    with pytest.raises(PsearchError, match="must be even"):
        resolve_joint_config({"reid": {"model": "dcinet"}, "train": {"batch_size": 3}})
    with pytest.raises(PsearchError, match="reid.roi_size"):
        resolve_joint_config({"reid": {"model": "dcinet", "roi_size": 7}})
    assert resolve_joint_config({"reid": {"model": "dcinet"}})["reid"]["loss"] == "olp+c2hep"
    code, _, err = run(["train-joint", "--model", "inet", "--data", str(cuhk_world),
                        "--out", str(tmp_path / "r"), "--set", "reid.loss=c2hepp"], capsys)
    assert code == 1 and err.startswith("error:") and len(err.strip().splitlines()) == 1
