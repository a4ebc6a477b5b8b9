"""The one embed stage with a joint checkpoint ("frames" embedder): boxes embedded on their
frames, resumed after an interrupt and appended when the manifest grows, like a re-ID one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from support import TINY_SETS, run_cli

from psearch.core.checkpoint import save_checkpoint
from psearch.core.config import apply_overrides
from psearch.core.media import read_image, write_image
from psearch.formats.embeddings import PROGRESS_NAME
from psearch.formats.manifest import ManifestWriter
from psearch.joint.config import resolve_joint_config
from psearch.joint.infer import JointSearcher
from psearch.joint.model import build_joint_model
from psearch.registry import load_embedder
from psearch.reid.embed import embed_manifest

BOXES = np.array([[10, 10, 60, 110], [70, 5, 120, 100], [20, 30, 90, 115]], np.float32)


@pytest.fixture(scope="module")
def joint_checkpoint(tmp_path_factory):
    """An untrained tiny joint checkpoint (deterministic weights)."""
    torch.manual_seed(0)
    config = apply_overrides({}, TINY_SETS)
    model = build_joint_model(resolve_joint_config(config), load_weights=False, with_loss=False)
    path = tmp_path_factory.mktemp("joint") / "joint.pt"
    save_checkpoint(path, "joint", config, model.state_dict())
    return path


def add_frames(det, names, seed):
    """Append finished image sources (frames of 160x120, no crop files) to a detect dir."""
    rng = np.random.default_rng(seed)
    with ManifestWriter(det) as writer:
        for name, n in names:
            write_image(det.parent / name, rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
            writer.add_source(str(det.parent / name), "image", 1, np.full(n, -1), BOXES[:n],
                              np.full(n, 0.9), [f"crops/{name}_{i}.jpg" for i in range(n)])


def count_calls(patch, fail_after=None):
    """Count ``JointSearcher.embed_boxes`` calls (one per frame); raise KeyboardInterrupt on
    call ``fail_after + 1``."""
    real, calls = JointSearcher.embed_boxes, []

    def embed_boxes(self, image, boxes):
        calls.append(len(boxes))
        if fail_after is not None and len(calls) > fail_after:
            raise KeyboardInterrupt
        return real(self, image, boxes)

    patch.setattr(JointSearcher, "embed_boxes", embed_boxes)
    return calls


def test_joint_embed_resumes_and_appends_like_a_reid_one(tmp_path, joint_checkpoint, capsys,
                                                         monkeypatch):
    det, out = tmp_path / "dets", tmp_path / "emb"
    add_frames(det, [("a.png", 3), ("b.png", 2)], seed=0)
    model = load_embedder(joint_checkpoint, device="cpu")
    assert model.source == "frames"
    full = embed_manifest(model, det, tmp_path / "full", progress=False)
    expected = np.load(tmp_path / "full" / "embeddings.npy")
    on_frames = np.concatenate([model.embed_boxes(read_image(tmp_path / "a.png"), BOXES[:3]),
                                model.embed_boxes(read_image(tmp_path / "b.png"), BOXES[:2])])
    np.testing.assert_allclose(expected, on_frames, atol=1e-5)
    assert full["rows"] == 5 and full["dim"] == model.dim and full["rows_digest"]

    with monkeypatch.context() as patch:  # interrupted on the second frame
        count_calls(patch, fail_after=1)
        with pytest.raises(KeyboardInterrupt):
            embed_manifest(model, det, out, progress=False)
    assert json.loads((out / PROGRESS_NAME).read_text())["done"] == 3  # frame a was kept
    logs: list[str] = []
    with monkeypatch.context() as patch:
        calls = count_calls(patch)
        meta = embed_manifest(model, det, out, progress=False, log=logs.append)
    assert logs == ["embed: resuming at row 3 of 5"] and calls == [2]  # only frame b
    assert meta == full
    np.testing.assert_allclose(np.load(out / "embeddings.npy"), expected, atol=1e-6)

    add_frames(det, [("c.png", 3)], seed=1)  # the manifest grows: only c is embedded
    with monkeypatch.context() as patch:
        calls = count_calls(patch)
        logs.clear()
        embed_manifest(model, det, out, progress=False, log=logs.append)
    assert calls == [3]
    assert logs == [f"embed: appending 3 new rows to the 5 of {out / 'embeddings.npy'}"]
    grown = np.load(out / "embeddings.npy")
    np.testing.assert_array_equal(grown[:5], np.load(tmp_path / "full" / "embeddings.npy"))

    code, stdout, err = run_cli(["embed", "--weights", str(joint_checkpoint), "--manifest",
                                 str(det), "--out", str(out), "--device", "cpu", "--quiet"],
                                capsys)  # the CLI: the same stage, up to date
    assert code == 0, err
    assert "is up to date (8 rows)" in stdout
