"""Market-1501 crop datasets: the loader, generated crop sets, data info, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from psearch.cli.main import main
from psearch.core.errors import PsearchError
from psearch.data import detect_format, load_dataset
from psearch.data.market import DISTRACTOR_PID, JUNK_PID, parse_name
from psearch.data.synth import generate_world


@pytest.fixture(scope="module")
def market_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("market_world")
    generate_world(root, "market", seed=0, preset="tiny")
    return root


def write_crops(folder: Path, names: list[str], size=(32, 64)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        image = np.full((size[1], size[0], 3), 20 * i % 255, np.uint8)
        cv2.imwrite(str(folder / name), image)


def handmade(root: Path) -> Path:
    write_crops(root / "bounding_box_train", ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg",
                                              "-1_c1s1_000451_04.jpg"])
    write_crops(root / "bounding_box_test", ["0007_c2s1_000151_01.jpg", "0000_c1s1_000151_02.jpg",
                                             "-1_c3s2_000201_00.jpg"], size=(40, 90))
    write_crops(root / "query", ["0007_c1s1_000101_00.jpg"])
    (root / "bounding_box_test" / "Thumbs.db").write_bytes(b"\0")  # as in the real download
    return root


def test_handmade_tree_loads_every_fact(tmp_path):
    notes: list[str] = []
    dataset = load_dataset(handmade(tmp_path / "m"), "market", notes)
    assert dataset.crops and detect_format(tmp_path / "m") == "market"
    assert [r.name for r in dataset.gallery] == [  # sorted; Thumbs.db ignored
        "bounding_box_test/-1_c3s2_000201_00.jpg", "bounding_box_test/0000_c1s1_000151_02.jpg",
        "bounding_box_test/0007_c2s1_000151_01.jpg"]
    assert [int(r.pids[0]) for r in dataset.gallery] == [JUNK_PID, DISTRACTOR_PID, 7]
    assert [r.camera for r in dataset.gallery] == [3, 1, 2]
    np.testing.assert_array_equal(dataset.gallery[0].boxes, [[0, 0, 40, 90]])  # the whole crop
    assert [int(r.pids[0]) for r in dataset.train] == [-1, 2, 2]  # junk -> unlabeled
    (query,) = dataset.queries
    assert (query.pid, query.camera) == (7, 1)
    assert dataset.image(query.image).path.parent.name == "query"
    assert any("1 junk/distractor crops used as unlabeled" in n for n in notes)
    assert any("1 junk and 1 distractor" in n for n in notes)


def test_names_follow_the_convention():
    assert parse_name("0002_c1s1_000451_03.jpg") == (2, 1)
    assert parse_name("-1_c6s2_000001_00.jpg") == (-1, 6)
    for bad in ("0002_c1_000451_03.jpg", "p2_c1s1_000451_03.jpg", "0002_c1s1_000451.jpg"):
        with pytest.raises(PsearchError, match=bad):
            parse_name(bad, "query")


@pytest.mark.parametrize("part", ["bounding_box_train", "bounding_box_test", "query"])
def test_a_missing_part_is_one_line_error_naming_it(tmp_path, part, capsys):
    root = handmade(tmp_path / "m")
    for f in (root / part).iterdir():
        f.unlink()
    (root / part).rmdir()
    with pytest.raises(SystemExit) as exc:
        main(["data", "info", str(root), "--format", "market"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 1 and "\n" not in err
    assert err.startswith("error: ") and f"{root / part}: Market-1501 folder not found" in err


def test_a_bad_file_name_is_one_line_error_naming_it(tmp_path, capsys):
    root = handmade(tmp_path / "m")
    write_crops(root / "query", ["person7_cam1.jpg"])
    with pytest.raises(SystemExit) as exc:
        main(["data", "info", str(root)])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 1 and "\n" not in err
    assert "person7_cam1.jpg" in err and "PPPP_cCsS_FFFFFF_NN.jpg" in err


def test_generated_crop_set_is_a_fair_market_set(market_world):
    dataset = load_dataset(market_world)
    summary = json.loads((market_world / "synth_summary.json").read_text())
    assert summary["format"] == "market" and summary["complete"]
    assert not (market_world / "scenes.tmp").exists()
    assert len(dataset.train) == summary["train"]["images"]
    assert len(dataset.gallery) == summary["test"]["images"]
    assert len(dataset.queries) == summary["test"]["queries"] > 0
    train_ids = {int(r.pids[0]) for r in dataset.train}
    gallery_pids = np.array([int(r.pids[0]) for r in dataset.gallery])
    gallery_cams = np.array([r.camera for r in dataset.gallery])
    assert train_ids.isdisjoint(gallery_pids[gallery_pids > 0]) and min(train_ids) > 0
    assert (gallery_pids == JUNK_PID).any() and (gallery_pids == DISTRACTOR_PID).any()
    for query in dataset.queries:  # a match in another camera, and its own appearance too
        same = gallery_pids == query.pid
        assert (same & (gallery_cams != query.camera)).any()
        assert (same & (gallery_cams == query.camera)).any()
    shapes = {cv2.imread(str(r.path)).shape for r in dataset.gallery[:20]}
    assert shapes == {(128, 64, 3)}


def test_same_seed_same_crops(market_world, tmp_path):
    generate_world(tmp_path / "again", "market", seed=0, preset="tiny")
    for part in ("query", "bounding_box_test"):
        names = sorted(p.name for p in (market_world / part).iterdir())
        assert names == sorted(p.name for p in (tmp_path / "again" / part).iterdir())


def test_data_info_reports_the_market_set(market_world, capsys):
    main(["data", "info", str(market_world), "--format", "market", "--json"])
    info = json.loads(capsys.readouterr().out)
    summary = json.loads((market_world / "synth_summary.json").read_text())
    assert info["format"] == "market" and info["crops"]
    for split in ("train", "test"):
        assert info[split] == summary[split]
    assert any("junk" in note for note in info["notes"])


def test_convert_refuses_a_crop_dataset(market_world, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "convert", str(market_world), str(tmp_path / "out"), "--to", "folder"])
    assert exc.value.code == 1 and "crop dataset" in capsys.readouterr().err
