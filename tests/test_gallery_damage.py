"""Damaged galleries: every file truncated or overwritten gives one error naming it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import clustered, fake_rows, run_cli

from psearch.core.errors import PsearchError
from psearch.gallery.store import HEADER_NAME, Gallery


@pytest.fixture(params=["flat", "ivf"])
def gallery_dir(request, tmp_path):
    vectors = clustered(400)
    Gallery.build(vectors, fake_rows(400), index=request.param, nlist=4).save(tmp_path / "g")
    return tmp_path / "g"


def _files(directory):
    header = json.loads((directory / HEADER_NAME).read_text())
    return [directory / HEADER_NAME, directory / header["files"]["index"],
            directory / header["files"]["rows"]]


@pytest.mark.parametrize("damage", ["half", "empty", "garbage", "tail"])
def test_each_damaged_file_is_named_in_one_error(gallery_dir, damage):
    for path in _files(gallery_dir):
        original = path.read_bytes()
        damaged = {"half": original[: len(original) // 2], "empty": b"",
                   "garbage": bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8)),
                   "tail": original[:-7]}[damage]
        path.write_bytes(damaged)
        with pytest.raises(PsearchError) as err:
            Gallery.load(gallery_dir)
        assert str(path) in str(err.value) and "\n" not in str(err.value), (path, err.value)
        path.write_bytes(original)
    Gallery.load(gallery_dir)  # intact again


def test_header_with_wrong_types_is_refused(gallery_dir):
    path = gallery_dir / HEADER_NAME
    header = json.loads(path.read_text())
    for bad in ({"files": ["index.faiss"]}, {"rows": "many"}, {"dim": None},
                {"files": {"index": 3, "rows": "x.npz"}}):
        path.write_text(json.dumps({**header, **bad}))
        with pytest.raises(PsearchError, match=str(path)):
            Gallery.load(gallery_dir)


def test_query_cli_names_the_damaged_file(gallery_dir, capsys, tmp_path):
    rows = _files(gallery_dir)[2]
    rows.write_bytes(rows.read_bytes()[:100])
    crop = tmp_path / "crop.png"
    from psearch.core.media import write_image

    write_image(crop, np.zeros((20, 10, 3), np.uint8))
    code, _, err = run_cli(["query", "--gallery", str(gallery_dir), "--crop", str(crop)], capsys)
    assert code == 1 and err.startswith(f"error: {rows}") and err.count("\n") == 1
