"""The synthetic world: deterministic, a fair person-search test, and written as it says."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner

from psearch.cli.main import cli
from psearch.core.errors import PsearchError
from psearch.data import UNLABELED_PID, detect_format, load_dataset
from psearch.data.synth import generate_world, make_config, world
from psearch.data.synth.people import NON_COLOUR_ATTRIBUTES, TWO_COLOUR_PATTERNS
from psearch.data.synth.world import make_identities, plan_world

COLOUR_ATTRIBUTES = (
    "upper",
    "upper2",
    "lower",
    "shoes",
    "skin",
    "hair",
    "hat_colour",
    "bag_colour",
)


def _records(root: Path, fmt: str):
    dataset = load_dataset(root, fmt)
    return dataset, [*dataset.train, *dataset.gallery]


def _image_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_same_world_whatever_the_number_of_workers(cuhk_world, tmp_path, monkeypatch):
    monkeypatch.setattr(world, "IMAGES_PER_WORKER", 10)  # use the pool even for a tiny world
    again = tmp_path / "again"
    generate_world(again, "cuhk", seed=0, preset="tiny", workers=2)
    assert _image_bytes(again) == _image_bytes(cuhk_world)
    first, second = load_dataset(cuhk_world, "cuhk"), load_dataset(again, "cuhk")
    for a, b in zip([*first.train, *first.gallery], [*second.train, *second.gallery], strict=True):
        assert a.name == b.name
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.pids, b.pids)


def test_another_seed_gives_another_world():
    config = make_config("cuhk", "tiny")
    plans_0, _, _ = plan_world("cuhk", config, 0)
    plans_1, _, _ = plan_world("cuhk", config, 1)
    assert [p.name for p in plans_0] != [p.name for p in plans_1]


# --- a fair test of person search ----------------------------------------------------------


@pytest.mark.parametrize("fmt", ["cuhk", "prw"])
def test_train_and_test_identities_are_disjoint(fmt, cuhk_world, prw_world):
    dataset = load_dataset(cuhk_world if fmt == "cuhk" else prw_world, fmt)

    def ids(records):
        return {int(p) for r in records for p in r.pids if p != UNLABELED_PID}

    assert ids(dataset.train) and ids(dataset.gallery)
    assert not ids(dataset.train) & ids(dataset.gallery)
    assert {q.pid for q in dataset.queries} == ids(dataset.gallery)


@pytest.mark.parametrize("fmt", ["cuhk", "prw"])
def test_every_identity_is_in_two_images_from_two_cameras(fmt):
    plans, queries, _ = plan_world(fmt, make_config(fmt, "ci"), 0)
    where: dict[int, list] = {}
    for plan in plans:
        for ident in plan.labeled:
            where.setdefault(ident.pid, []).append(plan)
    for pid, images in where.items():
        assert len({p.name for p in images}) >= 2, pid
        assert len({p.camera.index for p in images}) >= 2, pid
        assert len({p.split for p in images}) == 1, pid
    assert {pid for _, pid in queries} == {
        pid for pid, images in where.items() if images[0].split == "test"
    }


def test_prw_queries_have_gallery_appearances_in_other_cameras(prw_world):
    dataset, _ = _records(prw_world, "prw")
    cameras_of: dict[int, set[int]] = {}
    for record in dataset.gallery:
        for pid in record.pids[record.pids != UNLABELED_PID]:
            cameras_of.setdefault(int(pid), set()).add(record.camera)
    assert len(dataset.queries) > len({q.pid for q in dataset.queries})  # several per identity
    for query in dataset.queries:
        assert cameras_of[query.pid] - {query.camera}


@pytest.mark.parametrize("fmt", ["cuhk", "prw"])
def test_one_to_eight_people_per_image_with_passers_by(fmt, cuhk_world, prw_world):
    _, records = _records(cuhk_world if fmt == "cuhk" else prw_world, fmt)
    counts = [len(r.pids) for r in records]
    assert min(counts) >= 1 and max(counts) <= 8
    assert max(counts) >= 5  # crowded images exist
    pids = np.concatenate([r.pids for r in records])
    assert (pids == UNLABELED_PID).sum() > 0.2 * len(pids)


def test_people_are_occluded_cut_by_the_border_and_vary_in_size(cuhk_world):
    _, records = _records(cuhk_world, "cuhk")
    overlapping = cut = 0
    heights = []
    for r in records:
        b = r.boxes
        heights += list(b[:, 3] - b[:, 1])
        cut += int(((b[:, 0] <= 0) | (b[:, 2] >= 256) | (b[:, 3] >= 192)).sum())
        iw = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
        ih = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
        overlapping += int(((iw > 0) & (ih > 0)).sum() - len(b)) // 2
    assert overlapping >= 5 and cut >= 3
    assert np.percentile(heights, 98) >= 2.5 * np.percentile(heights, 2)


@pytest.mark.parametrize("fmt", ["cuhk", "prw"])
def test_loaded_boxes_lie_inside_their_images(fmt, cuhk_world, prw_world):
    _, records = _records(cuhk_world if fmt == "cuhk" else prw_world, fmt)
    boxes = np.concatenate([r.boxes for r in records])
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 256).all() and (boxes[:, 3] <= 192).all()
    assert (boxes[:, 2:] - boxes[:, :2] >= 4).all()


def test_near_duplicate_pairs_share_colours_and_differ_in_details():
    config = make_config("cuhk", "ci")
    train, test = make_identities(config, np.random.default_rng(0))
    by_pid = {i.pid: i for i in (*train, *test)}
    pairs = [(i, by_pid[i.twin]) for i in by_pid.values() if i.twin and i.pid < i.twin]
    assert len(pairs) == round(config.near_duplicate_fraction * config.n_identities / 2)
    test_pids = {i.pid for i in test}
    for a, b in pairs:
        assert by_pid[b.pid].twin == a.pid
        assert (a.pid in test_pids) == (b.pid in test_pids)
        for attribute in COLOUR_ATTRIBUTES:
            assert getattr(a, attribute) == getattr(b, attribute), attribute
        differing = [k for k in NON_COLOUR_ATTRIBUTES if getattr(a, k) != getattr(b, k)]
        assert 1 <= len(differing) <= 2
        if "pattern" in differing:
            assert a.pattern in TWO_COLOUR_PATTERNS and b.pattern in TWO_COLOUR_PATTERNS
    assert {a.pid for a, _ in pairs} & test_pids  # the test split has near-duplicates


def test_a_gallery_larger_than_the_test_split_is_a_clear_error(tmp_path):
    with pytest.raises(PsearchError, match="gallery size 100 needs at least 101 test images"):
        generate_world(tmp_path / "w", "cuhk", preset="tiny", gallery_sizes=(50, 100))
    assert not (tmp_path / "w" / "synth_summary.json").exists()


def test_a_world_replaces_a_previous_world_in_the_same_folder(tmp_path):
    small = dict(preset="tiny", n_images=24, n_identities=6, gallery_sizes=(5,))
    generate_world(tmp_path, "prw", **small)
    assert detect_format(tmp_path) == "prw"
    summary = generate_world(tmp_path, "cuhk", **small)
    assert summary["complete"] and detect_format(tmp_path) == "cuhk"
    assert not (tmp_path / "frames").exists() and not (tmp_path / "frame_test.mat").exists()


def test_bad_options_are_clear_errors(tmp_path):
    with pytest.raises(PsearchError, match="unknown synth option"):
        make_config("cuhk", "tiny", n_people=3)
    with pytest.raises(PsearchError, match="3x range"):
        make_config("cuhk", "tiny", person_height=(40, 80))
    with pytest.raises(PsearchError, match="preset"):
        make_config("cuhk", "huge")
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(PsearchError, match="not empty"):
        generate_world(tmp_path, "cuhk", preset="tiny")
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_presets_have_the_promised_sizes():
    bench = make_config("cuhk", "bench")
    assert bench.n_images >= 2000 and bench.n_identities >= 500
    for fmt in ("cuhk", "prw"):
        for preset in ("tiny", "ci", "bench"):
            c = make_config(fmt, preset)
            assert c.person_height[1] >= 3 * c.person_height[0]
            assert c.people_per_image == (1, 8)


# --- the files say what the summary says ---------------------------------------------------


def test_cuhk_summary_matches_the_files(cuhk_world):
    summary = json.loads((cuhk_world / "synth_summary.json").read_text())
    annotation = cuhk_world / "annotation"
    images = scipy.io.loadmat(annotation / "Images.mat")["Img"][0]
    pool = {str(c[0][0]) for c in scipy.io.loadmat(annotation / "pool.mat")["pool"]}
    persons = scipy.io.loadmat(annotation / "Person.mat")["Person"][0]
    labeled = Counter()
    for person in persons:
        for scene in person["scene"][0]:
            labeled["test" if str(scene["imname"][0]) in pool else "train"] += 1
    queries = scipy.io.loadmat(annotation / "test/train_test/TestG10.mat")["TestG10"][0]
    for split in ("train", "test"):
        mine = [im for im in images if (str(im["imname"][0]) in pool) == (split == "test")]
        boxes = sum(int(im["nAppear"][0, 0]) for im in mine)
        counts = summary[split]
        assert counts["images"] == len(mine)
        assert counts["boxes"] == boxes
        assert counts["labeled_boxes"] == labeled[split]
        assert counts["unlabeled_boxes"] == boxes - labeled[split]
    assert summary["test"]["queries"] == len(queries)
    assert summary["train"]["identities"] + summary["test"]["identities"] == len(persons)
    assert len(list((cuhk_world / "Image/SSM").glob("*.jpg"))) == len(images)


def test_prw_summary_matches_the_files(prw_world):
    summary = json.loads((prw_world / "synth_summary.json").read_text())
    for split in ("train", "test"):
        cell = scipy.io.loadmat(prw_world / f"frame_{split}.mat")[f"img_index_{split}"]
        ids = np.concatenate([_prw_boxes(prw_world, str(c[0][0]))[:, 0] for c in cell])
        counts = summary[split]
        assert counts["images"] == len(cell)
        assert counts["boxes"] == len(ids)
        assert counts["unlabeled_boxes"] == int((ids == -2).sum())
        assert counts["identities"] == len(set(ids[ids != -2].tolist()))
    lines = (prw_world / "query_info.txt").read_bytes().split(b"\r\n")
    assert summary["test"]["queries"] == len(lines) - 1 and lines[-1] == b""


def _prw_boxes(root: Path, stem: str) -> np.ndarray:
    mat = scipy.io.loadmat(root / "annotations" / f"{stem}.jpg.mat")
    return next(mat[k] for k in ("box_new", "anno_file", "anno_previous") if k in mat)


# --- the command ---------------------------------------------------------------------------


def test_cli_writes_a_world_and_prints_its_counts(tmp_path):
    out = tmp_path / "world"
    args = ["synth", str(out), "--format", "prw", "--preset", "tiny", "--images", "30"]
    result = CliRunner().invoke(cli, [*args, "--identities", "8", "--size", "200x160"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "synth_summary.json").read_text())
    assert summary["train"]["images"] + summary["test"]["images"] == 30
    assert summary["config"]["image_size"] == [200, 160]
    assert "labeled_boxes" in result.output and str(summary["test"]["queries"]) in result.output
    assert load_dataset(out, "prw").queries


def test_cli_writes_the_cuhk_galleries_asked_for(tmp_path):
    out = tmp_path / "world"
    args = ["synth", str(out), "--preset", "tiny", "--images", "24", "--identities", "6"]
    result = CliRunner().invoke(cli, [*args, "--gallery-sizes", "5,8"])
    assert result.exit_code == 0, result.output
    protocols = load_dataset(out, "cuhk").cuhk_protocols
    assert sorted(protocols) == [5, 8]
    assert all(len(gallery) == 8 for gallery in protocols[8])


def test_cli_rejects_a_bad_size(tmp_path):
    result = CliRunner().invoke(cli, ["synth", str(tmp_path / "w"), "--size", "big"])
    assert isinstance(result.exception, PsearchError)
    assert "WIDTHxHEIGHT" in str(result.exception)
