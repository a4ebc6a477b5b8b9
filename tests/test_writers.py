"""CUHK-SYSU and PRW writers: the MATLAB layouts of the real files, and a lossless round trip."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io

from psearch.core.errors import PsearchError
from psearch.data import UNLABELED_PID, load_dataset
from psearch.data.annotations import ImageRecord, PersonSearchDataset, QueryRecord
from psearch.data.writers import make_cuhk_protocols, write_cuhk, write_prw

U = UNLABELED_PID


def _toy(tmp_path: Path) -> PersonSearchDataset:
    """2 train images (person 1 twice), 4 test images (person 5 three times), 1 query."""
    source = tmp_path / "source"
    source.mkdir()
    layout = [
        ("c1s1_000010.jpg", "train", [[10, 20, 40, 100], [50, 10, 70, 60]], [1, U]),
        ("c2s1_000020.jpg", "train", [[0, 5, 30, 95]], [1]),
        ("c1s2_000030.jpg", "test", [[-3.5, 4, 20, 90], [30, 30, 60, 110]], [5, U]),
        ("c2s2_000040.jpg", "test", [[5, 5, 25, 70]], [U]),
        ("c3s1_000050.jpg", "test", [[40, 0, 72, 80]], [5]),
        ("c3s1_000060.jpg", "test", [[12, 12, 44, 112], [60, 10, 80, 60]], [U, 5]),
    ]
    records = []
    for k, (name, split, boxes, pids) in enumerate(layout):
        cv2.imwrite(str(source / name), np.full((120, 90, 3), 20 * k, np.uint8))
        camera = int(name[1])
        records.append(ImageRecord(name, source / name, boxes, pids, camera=camera, split=split))
    train = [r for r in records if r.split == "train"]
    gallery = [r for r in records if r.split == "test"]
    queries = [QueryRecord("c3s1_000050.jpg", [40, 0, 72, 80], 5, camera=3)]
    return PersonSearchDataset("toy", source, train, gallery, queries)


def _cuhk_ready(dataset: PersonSearchDataset) -> PersonSearchDataset:
    """CUHK boxes are whole pixels inside the image: clip the PRW-style negative corner."""
    for record in (*dataset.train, *dataset.gallery):
        record.boxes = np.maximum(record.boxes, 0)
    return dataset


def _reference_clip(boxes: np.ndarray) -> np.ndarray:
    """What PRW readers make of a box: negative x, y of ``[x y w h]`` clipped to 0, w, h kept."""
    corner = np.maximum(boxes[:, :2], 0)
    return np.concatenate([corner, corner + boxes[:, 2:] - boxes[:, :2]], axis=1)


def _load(path: Path, name: str) -> np.ndarray:
    return scipy.io.loadmat(path)[name]


# --- CUHK-SYSU -----------------------------------------------------------------------------


def test_cuhk_images_person_pool_and_train_have_the_real_layout(tmp_path):
    dataset = _cuhk_ready(_toy(tmp_path))
    out = tmp_path / "cuhk"
    write_cuhk(dataset, out, gallery_sizes=(2, 3))
    annotation = out / "annotation"

    img = _load(annotation / "Images.mat", "Img")
    assert img.shape == (1, 6)
    assert img.dtype.names == ("imname", "nAppear", "box")
    first = img[0, 0]
    assert str(first["imname"][0]) == "c1s1_000010.jpg"
    assert first["nAppear"][0, 0] == 2
    assert first["box"].shape == (1, 2) and first["box"].dtype.names == ("idlocate",)
    np.testing.assert_array_equal(first["box"][0, 1]["idlocate"], [[50, 10, 20, 50]])  # [x y w h]

    person = _load(annotation / "Person.mat", "Person")
    assert person.shape == (1, 2) and person.dtype.names == ("idname", "nAppear", "scene")
    assert [str(p["idname"][0]) for p in person[0]] == ["p1", "p5"]
    scene = person[0, 1]["scene"]
    assert scene.shape == (1, 3) and scene.dtype.names == ("imname", "idlocate", "ishard")

    pool = _load(annotation / "pool.mat", "pool")
    assert pool.shape == (4, 1)
    assert [str(c[0][0]) for c in pool] == [r.name for r in dataset.gallery]

    train = _load(annotation / "test/train_test/Train.mat", "Train")
    assert train.shape == (1, 1) and train.dtype == object  # N x 1 cell
    identity = train[0, 0]
    assert identity.shape == (1, 1) and identity.dtype.names == ("idname", "nAppear", "scene")
    assert str(identity[0, 0]["idname"][0]) == "p1" and identity[0, 0]["nAppear"][0, 0] == 2
    images_boxes = {
        (str(im["imname"][0]), *b["idlocate"][0].tolist()) for im in img[0] for b in im["box"][0]
    }
    for appearance in identity[0, 0]["scene"][0]:  # found in Images.mat by exact equality
        key = (str(appearance["imname"][0]), *appearance["idlocate"][0].tolist())
        assert key in images_boxes


def test_cuhk_testg_lists_positives_first_then_empty_idlocate_distractors(tmp_path):
    dataset = _cuhk_ready(_toy(tmp_path))
    out = tmp_path / "cuhk"
    write_cuhk(dataset, out, gallery_sizes=(2, 3))
    folder = out / "annotation/test/train_test"
    g2, g3 = _load(folder / "TestG2.mat", "TestG2"), _load(folder / "TestG3.mat", "TestG3")
    assert g2.shape == (1, 1) and g2.dtype.names == ("Query", "Gallery")
    query = g2[0, 0]["Query"]
    assert query.shape == (1, 1)
    assert query.dtype.names == ("imname", "idlocate", "ishard", "idname")
    assert str(query[0, 0]["imname"][0]) == "c3s1_000050.jpg"
    assert str(query[0, 0]["idname"][0]) == "p5"
    np.testing.assert_array_equal(query[0, 0]["idlocate"], [[40, 0, 32, 80]])

    gallery = g3[0, 0]["Gallery"]
    assert gallery.shape == (1, 3) and gallery.dtype.names == ("imname", "idlocate", "ishard")
    names = [str(g["imname"][0]) for g in gallery[0]]
    assert names[:2] == ["c1s2_000030.jpg", "c3s1_000060.jpg"]  # positives first
    assert "c3s1_000050.jpg" not in names  # never the query's own image
    np.testing.assert_array_equal(gallery[0, 1]["idlocate"], [[60, 10, 20, 50]])
    assert gallery[0, 2]["idlocate"].shape == (1, 0)  # MATLAB zeros(1, 0)
    assert gallery[0, 2]["idlocate"][0].size == 0
    assert [str(g["imname"][0]) for g in g2[0, 0]["Gallery"][0]] == names[:2]


def test_cuhk_round_trip_through_the_loader(tmp_path):
    dataset = _cuhk_ready(_toy(tmp_path))
    out = tmp_path / "cuhk"
    write_cuhk(dataset, out, gallery_sizes=(2, 3))
    loaded = load_dataset(out, "cuhk")
    for mine, theirs in ((dataset.train, loaded.train), (dataset.gallery, loaded.gallery)):
        assert [r.name for r in theirs] == [r.name for r in mine]
        for a, b in zip(mine, theirs, strict=True):
            np.testing.assert_array_equal(b.boxes, a.boxes)
            np.testing.assert_array_equal(b.pids, a.pids)
            assert (out / "Image/SSM" / a.name).read_bytes() == a.path.read_bytes()
    assert [(q.image, q.pid) for q in loaded.queries] == [("c3s1_000050.jpg", 5)]
    assert sorted(loaded.cuhk_protocols) == [2, 3]
    assert [name for name, _ in loaded.cuhk_protocols[3][0]] == [
        name for name, _ in make_cuhk_protocols(dataset.gallery, dataset.queries, (2, 3))[3][0]
    ]


def test_cuhk_rejects_what_it_cannot_write(tmp_path):
    dataset = _cuhk_ready(_toy(tmp_path))
    with pytest.raises(PsearchError, match="gallery size 4 needs at least 5 test images"):
        write_cuhk(dataset, tmp_path / "a", gallery_sizes=(4,))
    with pytest.raises(PsearchError, match="more than gallery size 1"):
        write_cuhk(dataset, tmp_path / "b", gallery_sizes=(1,))
    dataset.train[0].name = "sub/x.jpg"
    with pytest.raises(PsearchError, match="plain file names"):
        write_cuhk(dataset, tmp_path / "c", gallery_sizes=(3,))


def test_cuhk_world_protocols(cuhk_world):
    folder = cuhk_world / "annotation/test/train_test"
    g10, g20 = _load(folder / "TestG10.mat", "TestG10"), _load(folder / "TestG20.mat", "TestG20")
    assert g10.shape == g20.shape == (1, 6)
    for small, large in zip(g10[0], g20[0], strict=True):
        assert str(small["Query"][0, 0]["imname"][0]) == str(large["Query"][0, 0]["imname"][0])
        found = [g["idlocate"].size == 4 for g in large["Gallery"][0]]
        assert len(found) == 20 and any(found)
        assert found == sorted(found, reverse=True)  # positives, then distractors
        names = [str(g["imname"][0]) for g in large["Gallery"][0]]
        assert [str(g["imname"][0]) for g in small["Gallery"][0]] == names[:10]
        assert str(small["Query"][0, 0]["imname"][0]) not in names
        for g in large["Gallery"][0]:
            if g["idlocate"].size:
                assert np.array_equal(g["idlocate"], np.rint(g["idlocate"]))


# --- PRW -----------------------------------------------------------------------------------


def test_prw_files_have_the_real_layout(tmp_path):
    dataset = _toy(tmp_path)
    out = tmp_path / "prw"
    write_prw(dataset, out, box_variables={"c2s2_000040.jpg": "anno_file"})
    boxes = _load(out / "annotations/c1s2_000030.jpg.mat", "box_new")
    np.testing.assert_array_equal(boxes, [[5, -3.5, 4, 23.5, 86], [-2, 30, 30, 30, 80]])
    alternative = scipy.io.loadmat(out / "annotations/c2s2_000040.jpg.mat")
    assert "anno_file" in alternative and "box_new" not in alternative

    cell = _load(out / "frame_test.mat", "img_index_test")
    assert cell.shape == (4, 1) and cell.dtype == object
    assert str(cell[0, 0][0]) == "c1s2_000030"
    assert str(_load(out / "frame_train.mat", "img_index_train")[1, 0][0]) == "c2s1_000020"
    np.testing.assert_array_equal(_load(out / "ID_train.mat", "ID_train"), [[1]])
    np.testing.assert_array_equal(_load(out / "ID_test.mat", "ID_test"), [[5]])

    assert (out / "query_info.txt").read_bytes() == b"5 40 0 32 80 c3s1_000050\r\n"
    assert (out / "frames/c3s1_000060.jpg").is_file()


def test_prw_round_trip_through_the_loader(tmp_path):
    dataset = _toy(tmp_path)
    out = tmp_path / "prw"
    write_prw(dataset, out, box_variables={"c2s2_000040.jpg": "anno_previous"})
    loaded = load_dataset(out, "prw", prw_boxes="exact")  # the written values, as they are
    for mine, theirs in ((dataset.train, loaded.train), (dataset.gallery, loaded.gallery)):
        assert [r.name for r in theirs] == [r.name for r in mine]
        for a, b in zip(mine, theirs, strict=True):
            np.testing.assert_array_equal(b.boxes, _reference_clip(a.boxes))
            np.testing.assert_array_equal(b.pids, a.pids)
            assert b.camera == a.camera
    (query,) = loaded.queries
    assert (query.image, query.pid, query.camera) == ("c3s1_000050.jpg", 5, 3)
    np.testing.assert_array_equal(query.box, [40, 0, 72, 80])


def test_prw_rejects_names_that_are_not_frames(tmp_path):
    dataset = _toy(tmp_path)
    dataset.gallery[0].name = "street.jpg"
    with pytest.raises(PsearchError, match="not a PRW frame name"):
        write_prw(dataset, tmp_path / "prw")


def test_prw_world_has_alternative_variables_and_negative_coordinates(prw_world):
    variables, negative = set(), 0
    for path in (prw_world / "annotations").glob("*.mat"):
        mat = scipy.io.loadmat(path)
        (name,) = [k for k in mat if not k.startswith("__")]
        variables.add(name)
        negative += int((mat[name][:, 1:3] < 0).sum())
        assert mat[name].shape[1] == 5 and set(mat[name][:, 0]) - {-2} <= set(range(1, 17))
    assert variables == {"box_new", "anno_file", "anno_previous"}
    assert negative > 0
    lines = (prw_world / "query_info.txt").read_bytes().split(b"\r\n")
    assert lines[-1] == b"" and all(len(line.split()) == 6 for line in lines[:-1])


# --- image files ---------------------------------------------------------------------------


def test_images_are_copied_linked_or_left_in_place(tmp_path):
    dataset = _toy(tmp_path)
    source = dataset.train[0].path
    write_prw(dataset, tmp_path / "copy")
    copied = tmp_path / "copy/frames" / source.name
    assert copied.read_bytes() == source.read_bytes() and not os.path.samefile(copied, source)
    write_prw(dataset, tmp_path / "link", images="link")
    assert os.path.samefile(tmp_path / "link/frames" / source.name, source)
    write_prw(dataset, tmp_path / "skip", images="skip")
    assert not (tmp_path / "skip/frames").exists()
    for record in (*dataset.train, *dataset.gallery):  # already in place: nothing to do
        record.path = copied.parent / record.name
    write_prw(dataset, tmp_path / "copy")
    assert copied.read_bytes() == source.read_bytes()


def test_a_missing_source_image_is_a_clear_error(tmp_path):
    dataset = _toy(tmp_path)
    dataset.train[1].path.unlink()
    with pytest.raises(PsearchError, match="image file of 'c2s1_000020.jpg' not found"):
        write_prw(dataset, tmp_path / "prw")
