"""Toy inputs for tests and benchmarks, made on the spot (nothing downloaded): clustered unit
vectors with their gallery rows, scenes with coloured "people", an untrained tiny re-ID
checkpoint. ``tests/support.py`` and ``benchmarks/serve_load.py`` share them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from psearch.core.checkpoint import save_checkpoint
from psearch.core.media import write_image
from psearch.gallery.rows import Rows

TINY_REID = {"backbone": "test_resnet", "dim": 32, "input_size": [64, 32]}
IMAGE_W, IMAGE_H = 160, 120


def clustered(n: int, dim: int = 32, per_identity: int = 10, noise: float = 0.15,
              seed: int = 0) -> np.ndarray:
    """float32 [n, dim] unit vectors: tight clusters (identities) around random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // per_identity), dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    views = centres[rng.integers(0, len(centres), n)] + noise / np.sqrt(dim) * \
        rng.standard_normal((n, dim))
    return (views / np.linalg.norm(views, axis=1, keepdims=True)).astype(np.float32)


def fake_rows(n: int, per_source: int = 4) -> Rows:
    """Metadata for n rows: images /world/img_{i // per_source}.jpg, box i = (i, i, i+10, i+20)."""
    i = np.arange(n)
    return Rows.from_columns([f"/world/img_{k}.jpg" for k in i // per_source], np.full(n, -1),
                             np.stack([i, i, i + 10, i + 20], 1), np.linspace(0.5, 1, n),
                             [f"/world/crops/{k}.jpg" for k in i])


def person_images(directory: Path, n_images: int = 4,
                  seed: int = 0) -> list[tuple[Path, np.ndarray]]:
    """Scene images with three coloured 'people' each -> [(path, boxes float32 [3, 4])]."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_images):
        image = np.full((IMAGE_H, IMAGE_W, 3), 90, np.uint8)
        boxes = np.array([[10, 20, 40, 100], [60, 10, 95, 110], [110, 30, 150, 115]], np.float32)
        for x1, y1, x2, y2 in boxes.astype(int):
            image[y1:y2, x1:x2] = rng.integers(0, 256, (y2 - y1, x2 - x1, 3), dtype=np.uint8)
        path = directory / f"scene_{k}.png"
        write_image(path, image)
        out.append((path, boxes))
    return out


def tiny_checkpoint(path: Path, dim: int = TINY_REID["dim"]) -> Path:
    """An untrained tiny re-ID checkpoint (deterministic weights) embedding into ``dim``."""
    import torch

    from psearch.reid.model import build_reid_net

    torch.manual_seed(0)
    config = {"model": {**TINY_REID, "dim": dim}}
    save_checkpoint(path, "reid", config, build_reid_net(config["model"]).state_dict())
    return path


