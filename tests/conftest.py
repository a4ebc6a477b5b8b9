"""Shared fixtures: tiny synthetic worlds in the CUHK-SYSU and PRW formats, made once per run,
and a small detect directory of crops. Shared helper functions (running the CLI, tiny re-ID
checkpoints, generated images and videos) are in ``support.py``.

Each world is ``generate_world(..., preset="tiny", seed=0)``: 56 images of 256x192 (31 train, 25
test), 16 identities, CUHK galleries of 10 and 20. Tests must treat them as read-only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from psearch.core.media import write_image
from psearch.data.synth import generate_world
from psearch.formats.manifest import ManifestWriter


@pytest.fixture(scope="session")
def cuhk_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a tiny CUHK-SYSU-format world (``synth_summary.json`` has its exact counts)."""
    root = tmp_path_factory.mktemp("cuhk_world")
    generate_world(root, "cuhk", seed=0, preset="tiny")
    return root


@pytest.fixture(scope="session")
def prw_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a tiny PRW-format world (``synth_summary.json`` has its exact counts)."""
    root = tmp_path_factory.mktemp("prw_world")
    generate_world(root, "prw", seed=0, preset="tiny")
    return root


@pytest.fixture
def manifest(tmp_path):
    """A detect directory with two images: 3 + 4 crops of varied sizes."""
    rng = np.random.default_rng(0)
    det = tmp_path / "dets"
    with ManifestWriter(det) as writer:
        for source, n in (("a.jpg", 3), ("b.jpg", 4)):
            crops = []
            for i in range(n):
                crop = f"crops/{source}_{i}.jpg"
                size = (int(rng.integers(20, 90)), int(rng.integers(10, 40)), 3)
                write_image(det / crop, rng.integers(0, 256, size, dtype=np.uint8))
                crops.append(crop)
            boxes = np.tile([0.0, 0.0, 10.0, 20.0], (n, 1))
            writer.add_source(str(tmp_path / source), "image", 1, np.full(n, -1), boxes,
                              np.full(n, 0.9), crops)
    return det
