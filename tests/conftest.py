"""Shared fixtures: tiny synthetic worlds in the CUHK-SYSU and PRW formats, made once per run.

Each is ``generate_world(..., preset="tiny", seed=0)``: 56 images of 256x192 (31 train, 25
test), 16 identities, CUHK galleries of 10 and 20. Tests must treat them as read-only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from psearch.data.synth import generate_world


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
