"""The gallery directory: build, add, search, save, load, and atomic writes."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
from support import clustered, fake_rows

from psearch.core.errors import PsearchError
from psearch.gallery import index as ix
from psearch.gallery.rows import Rows
from psearch.gallery.store import HEADER_NAME, Gallery

REID = {"checkpoint": "/models/reid.pt", "checkpoint_sha256": "ab" * 32, "model": "resnet50"}


def brute_force(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ gallery.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def test_flat_search_equals_numpy_brute_force():
    vectors, queries = clustered(500), clustered(20, seed=1)
    gallery = Gallery.build(vectors, fake_rows(500), index="flat", reid=REID)
    scores, ids = gallery.search(queries, k=10)
    want_scores, _ = brute_force(vectors, queries, 10)
    # The top-10 scores agree and every returned row has the score said; which of two rows
    # within float rounding of each other (here 1e-6 apart) comes first is FAISS's own affair.
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(queries @ vectors.T, ids, axis=1), scores,
                               atol=1e-5)
    assert all(len(set(row)) == 10 for row in ids.tolist())


def test_matches_carry_the_metadata_of_their_rows():
    vectors = clustered(40)
    gallery = Gallery.build(vectors, fake_rows(40), index="flat", reid=REID)
    [matches] = gallery.matches(vectors[13:14], k=3)
    top = matches[0]
    assert (top.rank, top.row, top.frame) == (1, 13, -1)
    assert top.score == pytest.approx(1.0, abs=1e-5)
    assert top.source == "/world/img_3.jpg" and top.crop == "/world/crops/13.jpg"
    np.testing.assert_array_equal(top.box, [13, 13, 23, 33])
    assert [m.rank for m in matches] == [1, 2, 3]
    assert matches[0].score >= matches[1].score >= matches[2].score


def test_k_larger_than_the_gallery_returns_every_row_once():
    gallery = Gallery.build(clustered(5), fake_rows(5), index="flat")
    [matches] = gallery.matches(clustered(1, seed=3), k=50)
    assert sorted(m.row for m in matches) == [0, 1, 2, 3, 4]


def test_unnormalized_embeddings_are_indexed_as_cosine():
    vectors = clustered(30)
    gallery = Gallery.build(vectors * 7.0, fake_rows(30), index="flat")
    scores, ids = gallery.search(vectors[:1] * 0.1, k=1)
    assert ids[0, 0] == 0 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_reach_the_target_recall_on_clustered_data(kind):
    vectors = clustered(4000, per_identity=20, seed=2)
    rng = np.random.default_rng(5)  # queries: fresh noisy views of indexed people
    queries = vectors[rng.choice(4000, 100)] + 0.1 / np.sqrt(32) * rng.standard_normal((100, 32))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    gallery = Gallery.build(vectors, fake_rows(4000), index=kind, target_recall=0.95)
    knob = ix.KNOB[kind]
    assert gallery.header["index"][knob] >= 1
    _, found = gallery.search(queries, k=10)
    _, exact = brute_force(vectors, queries, 10)
    assert ix.recall_at_k(found, exact) >= 0.9


def test_auto_is_exact_for_small_galleries_and_ivf_for_large_ones():
    assert ix.resolve_kind("auto", 1000) == "flat"
    assert ix.resolve_kind("auto", ix.AUTO_FLAT_MAX_ROWS + 1) == "ivf"
    assert ix.factory_string("ivf", 256, 1_000_000) == "IVF4000,Flat"
    assert ix.factory_string("ivfpq", 256, 1_000_000, pq_m=16) == "IVF4000,PQ16"


def test_ivf_header_records_nlist_and_tuned_nprobe():
    gallery = Gallery.build(clustered(2000), fake_rows(2000), index="ivf", nlist=16)
    info = gallery.header["index"]
    assert info["factory"] == "IVF16,Flat" and info["nlist"] == 16
    assert 1 <= info["nprobe"] <= 16 and info["tuned_recall_at_10"] >= 0.95


def test_save_load_round_trip(tmp_path):
    vectors = clustered(300)
    gallery = Gallery.build(vectors, fake_rows(300), index="ivf", nlist=8, reid=REID)
    gallery.save(tmp_path / "g")
    loaded = Gallery.load(tmp_path / "g")
    assert loaded.header["reid"] == REID and loaded.header["rows"] == 300
    assert loaded.header["index"]["nprobe"] == gallery.header["index"]["nprobe"]
    np.testing.assert_array_equal(loaded.search(vectors[:5], 5)[1],
                                  gallery.search(vectors[:5], 5)[1])
    np.testing.assert_array_equal(loaded.rows.boxes, gallery.rows.boxes)
    assert isinstance(faiss.read_index(str(tmp_path / "g" / loaded.header["files"]["index"])),
                      faiss.Index)


def test_add_appends_rows_and_keeps_old_ids(tmp_path):
    first, second = clustered(100), clustered(50, seed=9)
    gallery = Gallery.build(first, fake_rows(100), index="flat", reid=REID)
    gallery.save(tmp_path / "g")
    gallery = Gallery.load(tmp_path / "g")
    extra = Rows.from_columns(["/video.mp4"] * 50, np.arange(50), np.zeros((50, 4)),
                              np.ones(50), [""] * 50)
    gallery.add(second, extra, reid=REID)
    gallery.save(tmp_path / "g")
    loaded = Gallery.load(tmp_path / "g")
    assert len(loaded) == 150 and loaded.header["generation"] == 2
    [[top]] = loaded.matches(second[7:8], k=1)
    assert (top.row, top.source, top.frame, top.where) == (107, "/video.mp4", 7, "/video.mp4:7")
    [[top]] = loaded.matches(first[3:4], k=1)
    assert (top.row, top.source) == (3, "/world/img_0.jpg")
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == [
        HEADER_NAME, "index-000002.faiss", "rows-000002.npz"]


def test_add_refuses_embeddings_of_another_model_or_size():
    gallery = Gallery.build(clustered(20), fake_rows(20), index="flat", reid=REID)
    other = {**REID, "checkpoint_sha256": "cd" * 32}
    with pytest.raises(PsearchError, match="sha256"):
        gallery.add(clustered(5), fake_rows(5), reid=other)
    with pytest.raises(PsearchError, match="dimension 16"):
        gallery.add(clustered(5, dim=16), fake_rows(5), reid=REID)


def test_interrupted_save_leaves_the_previous_gallery_intact(tmp_path, monkeypatch):
    vectors = clustered(60)
    Gallery.build(vectors, fake_rows(60), index="flat", reid=REID).save(tmp_path / "g")
    before = {p.name: p.read_bytes() for p in (tmp_path / "g").iterdir()}

    bigger = Gallery.load(tmp_path / "g")
    bigger.add(clustered(10, seed=4), fake_rows(10), reid=REID)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Rows, "save", crash)  # the index file is written, then the crash
    with pytest.raises(OSError):
        bigger.save(tmp_path / "g")
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in (tmp_path / "g").iterdir()
            if not p.name.startswith("index-000002")} == before
    assert len(Gallery.load(tmp_path / "g")) == 60
    bigger.save(tmp_path / "g")  # the next good save cleans up the orphan
    assert len(Gallery.load(tmp_path / "g")) == 70
    assert len(list((tmp_path / "g").glob("index-*.faiss"))) == 1


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(PsearchError, match="not a psearch gallery"):
        Gallery.load(tmp_path)
    Gallery.build(clustered(10), fake_rows(10), index="flat").save(tmp_path / "g")
    header = json.loads((tmp_path / "g" / HEADER_NAME).read_text())
    index_file = tmp_path / "g" / header["files"]["index"]
    index_file.write_bytes(b"garbage")
    with pytest.raises(PsearchError, match=rf"{index_file.name}: corrupt FAISS index"):
        Gallery.load(tmp_path / "g")
    index_file.unlink()
    with pytest.raises(PsearchError, match="index file missing"):
        Gallery.load(tmp_path / "g")
    (tmp_path / "g" / HEADER_NAME).write_text(json.dumps({**header, "version": 99}))
    with pytest.raises(PsearchError, match="newer"):
        Gallery.load(tmp_path / "g")


def test_an_empty_gallery_cannot_be_built():
    with pytest.raises(PsearchError, match="empty"):
        Gallery.build(np.zeros((0, 8), np.float32), Rows.empty())


def test_nan_embeddings_are_refused():
    vectors = clustered(10)
    vectors[3, 0] = np.nan
    with pytest.raises(PsearchError, match="NaN"):
        Gallery.build(vectors, fake_rows(10))


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_a_memory_mapped_gallery_searches_like_a_loaded_one(kind, tmp_path):
    vectors = clustered(600)
    Gallery.build(vectors, fake_rows(600), index=kind, reid=REID).save(tmp_path / "g")
    loaded, mapped = Gallery.load(tmp_path / "g"), Gallery.load(tmp_path / "g", mmap=True)
    queries = np.ascontiguousarray(vectors[:5])
    for a, b in zip(loaded.matches(queries, 7), mapped.matches(queries, 7), strict=True):
        assert [(m.source, m.score) for m in a] == [(m.source, m.score) for m in b]
