"""Helpers shared by the tests (fixtures live in ``conftest.py``): running the CLI, clustered
vectors, a detect directory with real images, a tiny re-ID checkpoint and its embeddings
directory, a generated video, an interrupted embedding run.

Test modules import them with ``from support import ...`` (pytest puts ``tests/`` on the path).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import pytest

from psearch.core.io import file_sha256
from psearch.formats.manifest import ManifestWriter
from psearch.pipeline.toys import (  # noqa: F401  (re-exported for the tests)
    IMAGE_H,
    IMAGE_W,
    TINY_REID,
    clustered,
    fake_rows,
    person_images,
    tiny_checkpoint,
)

# A detector (and joint model) small enough to train a few iterations in seconds on one core:
# its model section, and the same as train-joint --set overrides.
TINY_MODEL = {"fpn_channels": 32, "box_head_dim": 64, "min_size": 96, "max_size": 160,
              "returned_layers": [3, 5], "anchor_sizes": [[16, 32], [64, 96], [128, 192]],
              "rpn": {"post_nms_top_n_train": 100, "post_nms_top_n_test": 50},
              "box": {"batch_size_per_image": 32}}
TINY_SETS = ["model.fpn_channels=32", "model.box_head_dim=64", "model.min_size=96",
             "model.max_size=160", "model.returned_layers=[3, 5]",
             "model.anchor_sizes=[[16, 32], [64, 96], [128, 192]]",
             "model.rpn.post_nms_top_n_train=100", "model.rpn.post_nms_top_n_test=50",
             "model.box.batch_size_per_image=32", "reid.queue_size=50", "train.epochs=1",
             "train.warmup_iters=2", "train.lr_steps=[]", "train.lr=0.01"]
def detect_dir(directory: Path, images: list[tuple[Path, np.ndarray]]) -> Path:
    """A detect directory listing every box of ``images`` (crops named but not written)."""
    with ManifestWriter(directory) as writer:
        for path, boxes in images:
            crops = [f"crops/{path.stem}_{j}.jpg" for j in range(len(boxes))]
            writer.add_source(str(path.resolve()), "image", 1, np.full(len(boxes), -1), boxes,
                              np.full(len(boxes), 0.9), crops)
    return directory


def embeddings_dir(directory: Path, manifest: Path, checkpoint: Path,
                   images: list[tuple[Path, np.ndarray]]) -> Path:
    """What `psearch embed` writes: embeddings.npy row-aligned with the manifest + its JSON."""
    from psearch.core.media import read_image
    from psearch.reid import ReidModel

    model = ReidModel.from_checkpoint(checkpoint, "cpu")
    vectors = np.concatenate([model.embed_boxes(read_image(p), b) for p, b in images])
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "embeddings.npy", vectors)
    (directory / "embeddings.json").write_text(json.dumps({
        "manifest": str(manifest.resolve()), "rows": len(vectors), "dim": model.dim,
        "checkpoint": str(checkpoint.resolve()), "checkpoint_sha256": file_sha256(checkpoint),
        "model": TINY_REID["backbone"]}))
    return directory


class CliResult(NamedTuple):
    """What one ``psearch`` invocation gave: exit code, standard output, standard error."""

    code: int
    out: str
    err: str


def run_cli(argv: list, capsys: pytest.CaptureFixture) -> CliResult:
    """Run the console entry point in-process with ``argv`` (paths allowed)."""
    from psearch.cli.main import main

    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def write_video(path, n_frames: int = 7, fps: float = 10.0, size=(128, 96)) -> str:
    """A small MJPG video of moving noise frames; returns its path."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    rng = np.random.default_rng(1)
    for _ in range(n_frames):
        writer.write(rng.integers(0, 255, (size[1], size[0], 3), np.uint8))
    writer.release()
    return str(path)


def interrupt_after(monkeypatch: pytest.MonkeyPatch, batches: int) -> None:
    """Make ReidModel.embed_batch raise KeyboardInterrupt on call ``batches + 1``."""
    from psearch.reid import ReidModel

    real, calls = ReidModel.embed_batch, []

    def embed_batch(self, batch):
        calls.append(len(batch))
        if len(calls) > batches:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(ReidModel, "embed_batch", embed_batch)


def first_train_batch(world: Path, fmt: str = "cuhk", indices: tuple[int, ...] = (0, 1)):
    """(images float [0, 1], targets with pids, identity table) of the given train images."""
    from psearch.data import load_dataset
    from psearch.nn.targets import DetectionTrainSet, collate, identity_table

    train = load_dataset(world, fmt).train
    table = identity_table(train)
    images, targets = collate([DetectionTrainSet(train, 0.0, table)[i] for i in indices])
    return [img.float() / 255 for img in images], targets, table


def sgd_steps(model, images: list, targets: list, steps: int, lr: float) -> list[dict]:
    """``steps`` SGD steps (momentum 0.9, gradients clipped at 10 as train-joint does) of a joint
    model on one batch; per step the loss terms it returned (tensors)."""
    import torch

    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    history = []
    for _ in range(steps):
        losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        history.append(losses)
    return history


def assert_top_includes(matches: list, row: int, score: float | None = None,
                        atol: float = 1e-3) -> None:
    """``row`` is among the matches tied at the top score (dicts or objects with ``row`` and
    ``score``; ranked best first), and the top score is ``score`` when given. Which of several
    rows tied at equal scores a search lists first is not part of any contract (FAISS and
    argsort break ties differently across machines), so tests assert this instead."""
    def field(match, name: str):
        return match[name] if isinstance(match, dict) else getattr(match, name)

    top = max(float(field(m, "score")) for m in matches)
    tied = [int(field(m, "row")) for m in matches if float(field(m, "score")) >= top - atol]
    assert row in tied, f"row {row} is not among the top-scored rows {tied} (score {top:.4f})"
    if score is not None:
        assert top == pytest.approx(score, abs=atol)
