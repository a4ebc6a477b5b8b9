"""``psearch export onnx`` and the onnxruntime re-ID embedder (same embeddings, same ranking)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import detect_dir, embeddings_dir, person_images, run_cli, tiny_checkpoint

pytest.importorskip("onnxruntime")

from psearch.cli.main import main  # noqa: E402
from psearch.core.errors import PsearchError  # noqa: E402
from psearch.core.media import read_image  # noqa: E402
from psearch.registry import load_embedder  # noqa: E402
from psearch.reid.onnx import OnnxEmbedder  # noqa: E402
from psearch.roles import Embedder  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    checkpoint = tiny_checkpoint(root / "reid.pt")
    main(["export", "onnx", "--weights", str(checkpoint), "--out", str(root / "reid.onnx")])
    return root, checkpoint, root / "reid.onnx"


def test_onnx_embeddings_equal_pytorch(exported):
    _, checkpoint, onnx_path = exported
    torch_model, onnx_model = load_embedder(checkpoint, device="cpu"), load_embedder(onnx_path)
    assert isinstance(onnx_model, OnnxEmbedder) and isinstance(onnx_model, Embedder)
    assert onnx_model.source == "crops" and onnx_model.dim == torch_model.dim
    assert onnx_model.input_size == torch_model.input_size
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (200, 160, 3), dtype=np.uint8)
    boxes = np.array([[10, 10, 60, 150], [50, 20, 150, 190], [0, 0, 160, 200]], np.float32)
    ref, got = torch_model.embed_boxes(image, boxes), onnx_model.embed_boxes(image, boxes)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert not np.allclose(got[0], got[1], atol=1e-3)  # the boxes are told apart
    meta = onnx_model.describe()
    assert meta["checkpoint_sha256"] and meta["backend"] == "onnxruntime"


def test_export_prints_the_difference(exported, capsys, tmp_path):
    _, checkpoint, _ = exported
    result = run_cli(["export", "onnx", "--weights", str(checkpoint), "--out",
                      str(tmp_path / "m.onnx"), "--check-crops", "3"], capsys)
    assert result.code == 0, result.err
    diff = float(result.out.split("crops: ")[1].split()[0])
    assert diff < 1e-4


def test_gallery_query_with_onnx_gives_the_same_ranking(exported, capsys):
    root, checkpoint, onnx_path = exported
    images = person_images(root / "images", n_images=4)
    dets = detect_dir(root / "dets", images)
    emb = embeddings_dir(root / "emb", dets, checkpoint, images)
    gallery = root / "gallery"
    main(["index", "--manifest", str(dets), "--embeddings", str(emb), "--out", str(gallery)])
    capsys.readouterr()
    path, boxes = images[2]
    box = ",".join(f"{v:g}" for v in boxes[1])
    base = ["query", "--gallery", str(gallery), "--image", str(path), "--box", box,
            "--top-k", "8", "--json", "--device", "cpu"]
    ref = run_cli(base, capsys)
    got = run_cli([*base, "--checkpoint", str(onnx_path)], capsys)
    assert ref.code == 0 and got.code == 0, got.err
    [ref_q], [got_q] = json.loads(ref.out)["queries"], json.loads(got.out)["queries"]
    key = [(m["source"], m["frame"], m["box"]) for m in ref_q["matches"]]
    assert len(key) == 8
    assert [(m["source"], m["frame"], m["box"]) for m in got_q["matches"]] == key
    np.testing.assert_allclose([m["score"] for m in got_q["matches"]],
                               [m["score"] for m in ref_q["matches"]], atol=1e-4)


def test_embed_with_onnx_writes_the_same_embeddings(exported, capsys):
    root, checkpoint, onnx_path = exported
    dets = root / "dets"  # written by the ranking test, without crop files: write them
    with open(dets / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            image = read_image(row["source"])
            x1, y1, x2, y2 = (int(float(row[k])) for k in ("x1", "y1", "x2", "y2"))
            crop = dets / row["crop"]
            crop.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(crop), cv2.cvtColor(image[y1:y2, x1:x2], cv2.COLOR_RGB2BGR))
    for weights, out in ((checkpoint, "emb_pt"), (onnx_path, "emb_onnx")):
        result = run_cli(["embed", "--weights", weights, "--manifest", dets, "--out",
                          root / out, "--quiet", "--device", "cpu"], capsys)
        assert result.code == 0, result.err
    ref, got = np.load(root / "emb_pt" / "embeddings.npy"), np.load(root / "emb_onnx" /
                                                                    "embeddings.npy")
    assert got.shape == ref.shape and len(got) > 0
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_an_onnx_of_another_checkpoint_is_refused(exported, capsys, tmp_path):
    root, _, _ = exported
    other = tiny_checkpoint(tmp_path / "other.pt", dim=16)
    main(["export", "onnx", "--weights", str(other), "--out", str(tmp_path / "o.onnx")])
    capsys.readouterr()
    result = run_cli(["query", "--gallery", str(root / "gallery"), "--image",
                      str(root / "images" / "scene_0.png"), "--box", "1,1,40,90", "--json",
                      "--checkpoint",
                      str(tmp_path / "o.onnx")], capsys)
    assert result.code == 1 and "sha256 differs" in result.err


def test_onnx_embedder_imports_no_torch(exported):
    _, _, onnx_path = exported
    code = ("import sys; from psearch.registry import load_embedder; "
            f"e = load_embedder({str(onnx_path)!r}); "
            "import numpy as np; e.embed_crops([np.zeros((64, 32, 3), np.uint8)]); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parents[1], check=True)
    assert out.stdout.strip() == "False"


def test_bad_onnx_files_are_one_line_errors(tmp_path):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(PsearchError, match="onnxruntime cannot load it"):
        load_embedder(bad)
    with pytest.raises(PsearchError, match="ONNX file not found"):
        load_embedder(tmp_path / "missing.onnx")
