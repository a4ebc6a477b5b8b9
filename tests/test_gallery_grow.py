"""Galleries that grow: embed appends new manifest rows, index --add takes only new rows and
retrains an IVF quantizer the new rows would skew; interruptions keep the previous state."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import clustered, fake_rows, interrupt_after, tiny_checkpoint

from psearch.core.media import write_image
from psearch.formats.manifest import ManifestWriter
from psearch.gallery import index as ix
from psearch.gallery.build import index_embeddings
from psearch.gallery.store import HEADER_NAME, Gallery
from psearch.reid import ReidModel
from psearch.reid.embed import embed_manifest


def _grow(det, n=5, seed=1):
    """Append one more finished source of ``n`` crops to a detect directory."""
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        crop = f"crops/c.jpg_{i}.jpg"
        write_image(det / crop, rng.integers(0, 256, (40, 20, 3), dtype=np.uint8))
        crops.append(crop)
    with ManifestWriter(det) as writer:
        writer.add_source(str(det.parent / "c.jpg"), "image", 1, np.full(n, -1),
                          np.tile([0.0, 0.0, 10.0, 20.0], (n, 1)), np.full(n, 0.9), crops)


def test_embed_appends_the_rows_of_a_grown_manifest(tmp_path, manifest, monkeypatch):  # noqa: F811
    model = ReidModel.from_checkpoint(tiny_checkpoint(tmp_path / "reid.pt", dim=256), device="cpu")
    out = tmp_path / "emb"
    embed_manifest(model, manifest, out, batch_size=2, progress=False)
    before = np.load(out / "embeddings.npy")
    meta_before = (out / "embeddings.json").read_text()
    _grow(manifest)
    with monkeypatch.context() as patch:  # interrupted after one batch of new rows
        interrupt_after(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            embed_manifest(model, manifest, out, batch_size=2, workers=1, progress=False)
    np.testing.assert_array_equal(np.load(out / "embeddings.npy"), before)  # intact
    assert (out / "embeddings.json").read_text() == meta_before
    logs = []
    meta = embed_manifest(model, manifest, out, batch_size=2, progress=False, log=logs.append)
    assert logs == ["embed: resuming at row 9 of 12"]
    full = embed_manifest(model, manifest, tmp_path / "full", progress=False)
    assert meta == {**full}
    after = np.load(out / "embeddings.npy")
    np.testing.assert_array_equal(after[:7], before)
    np.testing.assert_allclose(after, np.load(tmp_path / "full" / "embeddings.npy"), atol=1e-5)


def test_embed_refuses_to_append_when_earlier_rows_changed(tmp_path, manifest):  # noqa: F811
    from psearch.core.errors import PsearchError

    model = ReidModel.from_checkpoint(tiny_checkpoint(tmp_path / "reid.pt", dim=256), device="cpu")
    embed_manifest(model, manifest, tmp_path / "emb", progress=False)
    text = (manifest / "manifest.csv").read_text().replace(",10.00,20.00,", ",11.00,20.00,", 1)
    (manifest / "manifest.csv").write_text(text)
    _grow(manifest)
    with pytest.raises(PsearchError, match="--restart"):
        embed_manifest(model, manifest, tmp_path / "emb", progress=False)


def test_index_add_takes_the_new_rows_of_grown_embeddings(tmp_path, manifest):  # noqa: F811
    model = ReidModel.from_checkpoint(tiny_checkpoint(tmp_path / "reid.pt", dim=256), device="cpu")
    emb, out = tmp_path / "emb", tmp_path / "gallery"
    embed_manifest(model, manifest, emb, progress=False)
    index_embeddings(emb, out)
    _grow(manifest)
    embed_manifest(model, manifest, emb, progress=False)
    gallery = index_embeddings(emb, out, add=True)
    assert gallery.changed and len(Gallery.load(out)) == 12
    assert [i["rows"] for i in gallery.header["inputs"]] == [7, 12]
    np.testing.assert_allclose(Gallery.load(out).vectors(), np.load(emb / "embeddings.npy"),
                               atol=1e-6)
    assert not index_embeddings(emb, out, add=True).changed  # nothing new the second time


def _ivf(tmp_path, vectors):
    gallery = Gallery.build(vectors, fake_rows(len(vectors)), index="ivf")
    gallery.save(tmp_path / "g")
    return Gallery.load(tmp_path / "g")


def test_ivf_add_of_the_same_distribution_keeps_the_quantizer(tmp_path):
    vectors = clustered(1100, per_identity=20)
    gallery = _ivf(tmp_path, vectors[:1000])
    info = dict(gallery.header["index"])
    assert info["trained_rows"] == 1000 and info["train_residual"] > 0
    gallery.add(vectors[1000:], fake_rows(100))
    assert gallery.retrained is None and gallery.header["index"]["nlist"] == info["nlist"]


def test_ivf_add_of_new_footage_retrains_and_still_finds_it(tmp_path):
    gallery = _ivf(tmp_path, clustered(1000, per_identity=20, seed=0))
    new = clustered(200, per_identity=20, seed=7)  # other identities: far from the centroids
    gallery.add(new, fake_rows(200))
    assert gallery.retrained and "farther from the centroids" in gallery.retrained
    info = gallery.header["index"]
    assert info["trained_rows"] == 1200 and info["retrains"] == 1 and "nprobe" in info
    gallery.save(tmp_path / "g")
    again = Gallery.load(tmp_path / "g")
    _, ids = again.search(new[:20], 1)
    assert (ids[:, 0] == np.arange(1000, 1020)).mean() >= 0.9


def test_ivf_add_that_outgrows_the_quantizer_retrains_with_more_lists(tmp_path):
    vectors = clustered(2200, per_identity=20)
    gallery = _ivf(tmp_path, vectors[:500])
    nlist = gallery.header["index"]["nlist"]
    gallery.add(vectors[500:], fake_rows(1700))
    assert gallery.retrained and f"> {ix.RETRAIN_GROWTH:g} x the 500" in gallery.retrained
    assert gallery.header["index"]["nlist"] == ix.default_nlist(2200) > nlist
    assert len(gallery) == 2200 and gallery.index.ntotal == 2200


def test_interrupted_add_leaves_the_previous_gallery(tmp_path, monkeypatch):
    gallery = _ivf(tmp_path, clustered(500))
    header = (tmp_path / "g" / HEADER_NAME).read_text()
    gallery.add(clustered(100, seed=3), fake_rows(100))
    import psearch.gallery.store as store

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "write_json_atomic", crash)
    with pytest.raises(KeyboardInterrupt):
        gallery.save(tmp_path / "g")
    assert (tmp_path / "g" / HEADER_NAME).read_text() == header
    assert len(Gallery.load(tmp_path / "g")) == 500
    assert json.loads(header)["rows"] == 500
