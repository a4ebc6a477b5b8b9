"""QEEPS: QSSE gates, QRPN labels, QSimNet, pair training from an OIM checkpoint, checkpoints,
pair-by-pair search and re-ranking, pair results through the shared evaluator, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support import run_cli
from torchvision.models import resnet18

from psearch.core.checkpoint import load_checkpoint, save_checkpoint
from psearch.core.errors import PsearchError
from psearch.core.media import read_image
from psearch.data import load_dataset
from psearch.evaluation import (
    PairResults,
    SearchResults,
    evaluate_pairs,
    pair_galleries,
    pairs_from_results,
)
from psearch.evaluation.pairs import subset_gallery
from psearch.evaluation.search import evaluate_search
from psearch.joint.config import resolve_joint_config
from psearch.joint.model import JointSearchModel
from psearch.joint.qeeps import QSSE, QSimNet, SiameseTrunk, qrpn_labels, residual, shortcut
from psearch.joint.qeeps_infer import QEEPSSearcher
from psearch.joint.qeeps_train import draw_pairs, train_qeeps
from psearch.nn.c4 import resnet_c4

# An OIM C4 model small enough for a few pair steps in seconds on one core.
TINY_C4 = {"backbone": "resnet18_c4", "min_size": 96, "max_size": 160, "roi_size": [8, 4],
           "anchor_sizes": [[16, 32, 64, 128]],
           "rpn": {"post_nms_top_n_train": 64, "post_nms_top_n_test": 32},
           "box": {"batch_size_per_image": 16, "detections_per_img": 20}}


def test_qsse_gates_both_streams_from_both_streams() -> None:
    torch.manual_seed(0)
    gate = QSSE(32, reduction=16)
    assert gate.fc1.out_features == 4  # 2C / r
    uq, ug = torch.randn(2, 32, 5, 7), torch.randn(2, 32, 9, 11)
    s = gate(uq, ug)
    assert s.shape == (2, 32) and bool(((s > 0) & (s < 1)).all())
    assert torch.allclose(s, torch.sigmoid(torch.tensor(4.0)))  # starts open
    torch.nn.init.normal_(gate.fc2.weight)
    changed = gate(uq + torch.randn_like(uq), ug)
    assert not torch.allclose(gate(uq, ug), changed)  # the query moves the gallery's gate


def test_siamese_trunk_is_the_plain_trunk_when_gates_are_one() -> None:
    torch.manual_seed(0)
    trunk, _ = resnet_c4("resnet18", None, torch.nn.BatchNorm2d)
    siamese = SiameseTrunk(trunk.eval()).eval()
    assert len(siamese.gates) == 6  # the BasicBlocks of layer1-3
    for gate in siamese.gates.values():
        torch.nn.init.constant_(gate.fc2.bias, 50.0)  # s = 1: X + U, as the plain block
    query, gallery = torch.rand(1, 3, 64, 48), torch.rand(1, 3, 96, 80)
    fq, fg = siamese(query, gallery)
    with torch.no_grad():
        assert torch.allclose(fg["feat"], trunk(gallery)["feat"], atol=1e-5)
        assert fq["feat"].shape == trunk(query)["feat"].shape
    block = resnet18().layer2[0].eval()  # residual + shortcut rebuild torchvision's block
    x = torch.rand(1, 64, 16, 16)
    with torch.no_grad():
        assert torch.allclose(torch.relu(residual(block, x) + shortcut(block, x)), block(x))


def test_siamese_trunk_refuses_fpn_backbones() -> None:
    with pytest.raises(PsearchError, match="C4"):
        SiameseTrunk(torch.nn.Identity())


def test_qrpn_labels_use_iou_06_and_no_negatives_on_other_people() -> None:
    query = torch.tensor([[0.0, 0, 10, 20]])
    other = torch.tensor([[100.0, 0, 110, 20]])
    anchors = torch.tensor([[0.0, 0, 10, 20],     # the query: positive
                            [0.0, 0, 10, 15],     # IoU 0.75 >= 0.6: positive
                            [0.0, 0, 10, 11],     # IoU 0.55: ignored
                            [100.0, 0, 110, 20],  # another person: never a negative
                            [101.0, 0, 111, 20],  # near another person: ignored too
                            [50.0, 0, 60, 20]])   # background: negative
    labels = qrpn_labels(anchors, query, other)
    assert labels.tolist() == [1, 1, -1, -1, -1, 0]
    absent = qrpn_labels(anchors, query[:0], other)  # a negative pair: no positive at all
    assert absent.tolist() == [0, 0, 0, -1, -1, 0]


def test_qsimnet_learns_same_person_from_squared_differences() -> None:
    torch.manual_seed(0)
    net = QSimNet(16)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    query = torch.nn.functional.normalize(torch.randn(16), dim=0)
    for _ in range(60):
        same = torch.nn.functional.normalize(query + 0.1 * torch.randn(8, 16), dim=1)
        other = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
        gallery = torch.cat([same, other])
        labels = torch.cat([torch.ones(8), torch.zeros(8)]).long()
        loss = torch.nn.functional.cross_entropy(net(query.expand_as(gallery), gallery), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2
    net.eval()
    scores = net.score(query, gallery)
    assert scores.shape == (16,) and scores[:8].min() > scores[8:].max()


def test_pairs_hold_the_person_or_not(cuhk_world) -> None:
    records = [r for r in load_dataset(cuhk_world).train if len(r.boxes)]
    pairs = draw_pairs(records, 40, 0.25, seed=0)
    assert len(pairs) == 40
    present = np.array([records[i].pids[j] in records[g].pids for i, j, g in pairs])
    assert (pairs[:, 0] != pairs[:, 2]).all()
    assert (~present).sum() == 10 and (records[pairs[0, 0]].pids[pairs[0, 1]] != -1)


@pytest.fixture(scope="module")
def oim_checkpoint(cuhk_world, tmp_path_factory):
    """An (untrained) OIM C4 joint checkpoint of the tiny world's identities."""
    from psearch.nn.targets import identity_table

    num_ids = len(identity_table(load_dataset(cuhk_world).train))
    config = resolve_joint_config({"model": TINY_C4, "reid": {"num_ids": num_ids,
                                                              "queue_size": 50}})
    torch.manual_seed(0)
    model = JointSearchModel.from_config(config)
    path = tmp_path_factory.mktemp("oim") / "last.pt"
    save_checkpoint(path, "joint", config, model.state_dict())
    return path


@pytest.fixture(scope="module")
def qeeps_run(cuhk_world, oim_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("qeeps")
    metrics = train_qeeps(load_dataset(cuhk_world), {"train": {"pairs_per_epoch": 4}}, out,
                          init=oim_checkpoint, epochs=1, progress=False, log=None).metrics
    return out, metrics


def test_qeeps_fine_tunes_from_oim_with_every_loss(qeeps_run, oim_checkpoint) -> None:
    out, metrics = qeeps_run
    losses = metrics["losses"]
    for name in ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg",
                 "loss_reid", "loss_qrpn", "loss_sim"):
        assert np.isfinite(losses[name]), name
    payload = load_checkpoint(out / "last.pt", kind="qeeps")  # weights_only
    assert payload["config"]["model"]["backbone"] == "resnet18_c4"
    assert payload["config"]["qeeps"]["qrpn_pos_iou"] == 0.6
    oim = load_checkpoint(oim_checkpoint)["model"]
    key = "roi_heads.box_predictor.cls_score.weight"
    assert payload["model"][key].shape == oim[key].shape
    assert any(k.startswith("backbone.gates.") for k in payload["model"])
    assert any(k.startswith("rpn.query_head.") for k in payload["model"])


def test_checkpoint_round_trip_searches_pairs(qeeps_run, cuhk_world) -> None:
    out, _ = qeeps_run
    dataset = load_dataset(cuhk_world)
    query = dataset.queries[0]
    qimg = read_image(dataset.image(query.image).path)
    galleries = [read_image(r.path) for r in dataset.gallery[:3]]
    first = QEEPSSearcher.from_checkpoint(out / "last.pt", batch_size=2)
    again = QEEPSSearcher.from_checkpoint(out / "last.pt", batch_size=3)
    a = first.search_pairs(qimg, query.box, galleries)
    b = again.search_pairs(qimg, query.box, galleries)
    assert len(a) == 3
    for (boxes, scores, sims), (_, _, sims2) in zip(a, b, strict=True):
        assert boxes.shape == (len(scores), 4) and sims.shape == scores.shape
        assert (scores >= 0.01).all() and ((sims >= 0) & (sims <= 1)).all()
        assert (np.diff(sims) <= 1e-6).all()  # ranked by match score
        np.testing.assert_allclose(sims, sims2, atol=1e-5)


def test_query_weights_searches_footage_pair_by_pair(qeeps_run, cuhk_world, capsys) -> None:
    out, _ = qeeps_run
    dataset = load_dataset(cuhk_world)
    query = dataset.queries[0]
    box = ",".join(f"{v:g}" for v in query.box)
    code, stdout, _ = run_cli(["query", "--weights", str(out / "last.pt"), "--image",
                           str(dataset.image(query.image).path), "--box", box, "--in",
                           str(dataset.gallery[0].path), "--in", str(dataset.gallery[1].path),
                           "--top-k", "3", "--json"], capsys)
    assert code == 0
    result = json.loads(stdout)
    assert len(result["matches"]) <= 3 and result["matches"]
    assert result["matches"][0]["row"] == -1


def test_query_guided_bad_input_is_one_line(qeeps_run, oim_checkpoint, cuhk_world, tmp_path,
                                            capsys) -> None:
    out, _ = qeeps_run
    dataset = load_dataset(cuhk_world)
    image = str(dataset.gallery[0].path)
    cases = [
        (["train-joint", "--model", "qeeps", "--data", str(cuhk_world), "--out",
          str(tmp_path / "q")], "needs --init"),
        (["query", "--weights", str(oim_checkpoint), "--image", image, "--box", "1,1,30,60",
          "--in", image], "cannot search query-gallery pairs"),
        (["query", "--weights", str(out / "last.pt"), "--crop", image, "--in", image],
         "whole picture"),
        (["query", "--rerank", str(out / "last.pt"), "--image", image, "--box", "1,1,30,60"],
         "give --gallery"),
        (["query", "--weights", str(out / "last.pt"), "--image", image, "--box", "1,1,30,60"],
         "give --in"),
        (["query", "--image", image, "--box", "1,1,30,60"], "give --gallery"),
    ]
    for argv, message in cases:
        code, _, err = run_cli(argv, capsys)
        assert code == 1 and message in err and "Traceback" not in err, (argv, err)
        assert len(err.strip().splitlines()) == 1


def test_qeeps_needs_a_c4_oim_checkpoint(cuhk_world, tmp_path) -> None:
    config = resolve_joint_config({"model": {"fpn_channels": 32, "box_head_dim": 64},
                                   "reid": {"num_ids": 3}})
    path = tmp_path / "fpn.pt"
    save_checkpoint(path, "joint", config, JointSearchModel.from_config(config).state_dict())
    with pytest.raises(PsearchError, match="C4"):
        train_qeeps(load_dataset(cuhk_world), None, tmp_path / "q", init=path, log=None,
                    progress=False)


def _random_results(dataset, seed: int = 0) -> SearchResults:
    rng = np.random.default_rng(seed)
    det = {}
    for r in dataset.gallery:
        boxes = np.concatenate([r.boxes + rng.normal(0, 2, r.boxes.shape),
                                [[5, 5, 40, 100]]]).astype(np.float32)
        feats = rng.normal(size=(len(boxes), 8))
        det[r.name] = (boxes, rng.uniform(0.2, 1, len(boxes)).astype(np.float32),
                       (feats / np.linalg.norm(feats, axis=1, keepdims=True)).astype(np.float32))
    queries = rng.normal(size=(len(dataset.queries), 8))
    return SearchResults.from_per_image(
        det, (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32))


@pytest.mark.parametrize("world", ["cuhk_world", "prw_world"])
def test_pair_results_score_exactly_as_the_search_protocol(world, request) -> None:
    dataset = load_dataset(request.getfixturevalue(world))
    results = _random_results(dataset)
    sizes = [10, 20] if dataset.cuhk_protocols else [None]
    for size in sizes:
        kwargs = {"gallery_size": size} if size else {"cross_camera": False}
        reference = evaluate_search(dataset, results, **kwargs)
        pairs = pairs_from_results(dataset, results, pair_galleries(dataset, **kwargs))
        got = evaluate_pairs(dataset, pairs, **kwargs)
        assert got.pop("subset") is None
        assert got == pytest.approx(reference)


def test_pair_subsets_are_labelled_and_complete(prw_world) -> None:
    dataset = load_dataset(prw_world)
    results = _random_results(dataset)
    galleries = pair_galleries(dataset, queries=[0, 2], max_gallery=5, seed=0)
    assert sorted(galleries) == [0, 2]
    full = next(iter(pair_galleries(dataset, queries=[0]).values()))
    cut = galleries[0]
    assert len(cut.images) == max(5, len(full.positives))
    assert set(full.images[full.positives]) <= set(cut.images)  # the person is always there
    np.testing.assert_array_equal(cut.images[cut.positives], full.images[full.positives])
    assert subset_gallery(cut, 100, 0) is cut
    pairs = pairs_from_results(dataset, results, galleries)
    metrics = evaluate_pairs(dataset, pairs, queries=[0, 2], max_gallery=5, seed=0)
    assert "2 of" in metrics["subset"] and "cut to 5" in metrics["subset"]
    with pytest.raises(PsearchError, match="was not searched"):
        evaluate_pairs(dataset, pairs, queries=[0, 1, 2], max_gallery=5, seed=0)
    with pytest.raises(PsearchError, match="match scores"):
        PairResults.from_per_query({0: {"a.jpg": (np.zeros((2, 4)), np.ones(2), np.ones(1))}})


class _FakeScorer:
    """A pair scorer whose match score is the gallery picture's mean value / 255."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def search_pairs(self, query, box, galleries):
        self.seen.extend(int(g.mean()) for g in galleries)
        return [(np.array([[1, 2, 30, 60]], np.float32), np.array([0.9], np.float32),
                 np.array([g.mean() / 255], np.float32)) for g in galleries]


def test_rerank_scores_only_the_faiss_shortlist(tmp_path) -> None:
    from psearch.core.media import write_image
    from psearch.gallery.rows import Rows
    from psearch.gallery.store import Gallery
    from psearch.search.pairs import rerank_gallery

    rng = np.random.default_rng(0)
    paths = []
    for level in range(6):  # picture i has value 40 * i; detections: 3 per picture
        path = tmp_path / f"p{level}.png"
        write_image(path, np.full((64, 48, 3), 40 * level, np.uint8))
        paths.append(str(path))
    vectors = rng.normal(size=(18, 8)).astype(np.float32)
    query = vectors[4] + 0.01  # nearest: a detection of picture 1
    gallery = Gallery.build(vectors, Rows.from_columns(
        np.repeat(paths, 3), np.full(18, -1), np.tile([[1, 2, 30, 60]], (18, 1)),
        np.ones(18), [""] * 18))

    class Search:  # the two attributes of PersonSearch that re-ranking uses
        def __init__(self) -> None:
            self.gallery = gallery
            self.embedder = type("E", (), {"embed_boxes": staticmethod(
                lambda image, boxes: query[None] / np.linalg.norm(query))})()

    scorer = _FakeScorer()
    image = np.zeros((64, 48, 3), np.uint8)
    matches = rerank_gallery(Search(), scorer, image, np.array([1, 2, 30, 60], np.float32),
                             top_n=3, top_k=5, progress=False)
    sims = vectors @ (query / np.linalg.norm(query))
    best = int(np.argmax([max(sims[3 * p:3 * p + 3]) for p in range(6)]))
    assert len(scorer.seen) == 3 and scorer.seen[0] == 40 * best  # N pairs, best first
    assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
    assert {m.source for m in matches} <= set(paths) and len(matches) == 3


def test_query_samples_are_fixed_and_nested() -> None:
    from psearch.evaluation import sample_queries

    small, large = sample_queries(50, 6), sample_queries(50, 12)
    assert len(set(small)) == 6 and set(small) <= set(large)
    np.testing.assert_array_equal(small, sample_queries(50, 6))
    assert len(sample_queries(5, 10)) == 5
