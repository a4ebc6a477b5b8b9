"""``psearch embed``: row-aligned unit vectors for a manifest, resumable, with clear errors."""

import json

import numpy as np
import pytest
from support import interrupt_after, run_cli, tiny_checkpoint

from psearch.core.checkpoint import save_checkpoint
from psearch.core.media import read_image
from psearch.formats.embeddings import PARTIAL_NAME, PROGRESS_NAME
from psearch.reid import ReidModel
from psearch.reid.embed import embed_manifest

TINY = {"backbone": "test_resnet", "input_size": [64, 32]}


def test_embed_writes_row_aligned_unit_vectors_and_metadata(tmp_path, manifest, capsys):
    ckpt = tiny_checkpoint(tmp_path / "reid.pt", dim=256)
    code, _, _ = run_cli(["embed", "--weights", ckpt, "--manifest", manifest / "manifest.csv",
                          "--out", tmp_path / "emb", "--batch-size", "3", "--device", "cpu",
                          "--quiet"], capsys)
    assert code == 0
    feats = np.load(tmp_path / "emb" / "embeddings.npy")
    meta = json.loads((tmp_path / "emb" / "embeddings.json").read_text())
    assert feats.shape == (7, 256) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    crops = sorted((manifest / "crops").iterdir())  # a_0..a_2, b_0..b_3: manifest order
    model = ReidModel.from_checkpoint(ckpt, device="cpu")
    np.testing.assert_allclose(feats, model.embed_crops([read_image(p) for p in crops]), atol=1e-5)
    assert meta["rows"] == 7 and meta["dim"] == 256 and meta["model"] == "test_resnet"
    assert meta["manifest"] == str((manifest / "manifest.csv").resolve())
    assert meta["checkpoint"] == str(ckpt.resolve()) and len(meta["checkpoint_sha256"]) == 64
    assert not (tmp_path / "emb" / PARTIAL_NAME).exists()


def test_interrupted_embed_resumes_where_it_stopped(tmp_path, manifest, monkeypatch):
    model = ReidModel.from_checkpoint(tiny_checkpoint(tmp_path / "reid.pt", dim=256), device="cpu")
    expected = embed_manifest(model, manifest, tmp_path / "full", batch_size=2, progress=False)
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            embed_manifest(model, manifest, tmp_path / "emb", batch_size=2, workers=1,
                           progress=False)
    progress = json.loads((tmp_path / "emb" / PROGRESS_NAME).read_text())
    assert progress["done"] == 4  # the two finished batches of two were kept
    logs = []
    meta = embed_manifest(model, manifest, tmp_path / "emb", batch_size=2, progress=False,
                          log=logs.append)
    assert logs == ["embed: resuming at row 4 of 7"]
    assert meta == expected
    np.testing.assert_allclose(np.load(tmp_path / "emb" / "embeddings.npy"),
                               np.load(tmp_path / "full" / "embeddings.npy"), atol=1e-6)
    assert not (tmp_path / "emb" / PROGRESS_NAME).exists()
    logs.clear()
    embed_manifest(model, manifest, tmp_path / "emb", progress=False, log=logs.append)
    assert logs == [f"embed: {tmp_path / 'emb' / 'embeddings.npy'} is up to date (7 rows)"]


def test_resuming_with_a_checkpoint_of_another_dim_is_refused(tmp_path, manifest, capsys,
                                                              monkeypatch):
    model = ReidModel.from_checkpoint(tiny_checkpoint(tmp_path / "a.pt", dim=256), device="cpu")
    with monkeypatch.context() as patch:
        interrupt_after(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            embed_manifest(model, manifest, tmp_path / "emb", batch_size=2, workers=1,
                           progress=False)
    other = tiny_checkpoint(tmp_path / "b.pt", dim=128)
    args = ["embed", "--weights", str(other), "--manifest", str(manifest), "--out",
            str(tmp_path / "emb"), "--device", "cpu", "--quiet"]
    code, _, err = run_cli(args, capsys)
    assert code == 1
    assert err.startswith("error: ") and "dim 256 -> 128" in err
    assert len(err.strip().splitlines()) == 1
    code, _, _ = run_cli([*args, "--restart"], capsys)
    assert code == 0
    assert np.load(tmp_path / "emb" / "embeddings.npy").shape == (7, 128)


def test_missing_crop_is_a_one_line_error(tmp_path, manifest, capsys):
    ckpt = tiny_checkpoint(tmp_path / "reid.pt", dim=256)
    (manifest / "crops" / "b.jpg_2.jpg").unlink()
    code, _, err = run_cli(["embed", "--weights", str(ckpt), "--manifest", str(manifest), "--out",
                     str(tmp_path / "emb"), "--device", "cpu"], capsys)
    assert code == 1
    assert "1 crop file(s) missing" in err and "b.jpg_2.jpg" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("kind", ["corrupt", "detector"])
def test_unusable_checkpoint_is_a_one_line_error(tmp_path, manifest, capsys, kind):
    ckpt = tmp_path / "x.pt"
    if kind == "corrupt":
        ckpt.write_bytes(b"\x00" * 100)
    else:
        save_checkpoint(ckpt, "detector", {}, {})
    code, _, err = run_cli(["embed", "--weights", str(ckpt), "--manifest", str(manifest), "--out",
                     str(tmp_path / "emb")], capsys)
    assert code == 1 and err.startswith(f"error: {ckpt}")
    assert len(err.strip().splitlines()) == 1
