"""``psearch data info`` and ``psearch data convert`` on generated worlds, and their errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from support import run_cli

from psearch.data import load_dataset


def info(root: Path, capsys: pytest.CaptureFixture) -> dict:
    code, out, err = run_cli(["data", "info", str(root), "--json"], capsys)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("world", ["cuhk_world", "prw_world"])
def test_info_counts_match_the_synth_summary(
    world: str, request: pytest.FixtureRequest, capsys
) -> None:
    root = request.getfixturevalue(world)
    summary = json.loads((root / "synth_summary.json").read_text())
    report = info(root, capsys)
    assert report["format"] == summary["format"]
    assert report["train"] == summary["train"]
    assert report["test"] == summary["test"]


def test_info_reports_cuhk_protocols(cuhk_world: Path, capsys) -> None:
    report = info(cuhk_world, capsys)
    sizes = [int(n) for n in report["protocols"]]
    assert sizes == sorted(sizes) and sizes
    for n in sizes:
        stats = report["protocols"][str(n)]
        assert stats["queries"] == report["test"]["queries"]
        assert stats["gallery_min"] == stats["gallery_max"] == n
        assert stats["queries_without_positives"] == 0


def test_convert_round_trips_keep_counts_and_protocols(
    cuhk_world: Path, prw_world: Path, tmp_path: Path, capsys
) -> None:
    before = {"cuhk": info(cuhk_world, capsys), "prw": info(prw_world, capsys)}
    for fmt, root in (("cuhk", cuhk_world), ("prw", prw_world)):
        folder, back = tmp_path / f"{fmt}-folder", tmp_path / f"{fmt}-back"
        assert run_cli(["data", "convert", root, folder, "--to", "folder"], capsys).code == 0
        assert run_cli(["data", "convert", str(folder), str(back), "--to", fmt], capsys)[0] == 0
        for converted in (folder, back):
            report = info(converted, capsys)
            assert (report["train"], report["test"]) == (before[fmt]["train"], before[fmt]["test"])
            assert report["protocols"] == before[fmt]["protocols"]
    source, copy = load_dataset(cuhk_world), load_dataset(tmp_path / "cuhk-back")
    for n in source.cuhk_protocols:
        for got, want in zip(copy.cuhk_protocols[n], source.cuhk_protocols[n], strict=True):
            assert [name for name, _ in got] == [name for name, _ in want]
            for (_, a), (_, b) in zip(got, want, strict=True):
                assert (a is None and b is None) or np.array_equal(a, b)


def test_convert_prw_to_cuhk_builds_galleries(prw_world: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cuhk"
    code, _, err = run_cli(
        ["data", "convert", str(prw_world), str(out), "--to", "cuhk", "--gallery-sizes", "5,10"],
        capsys,
    )
    assert code == 0, err
    ds, prw = load_dataset(out), load_dataset(prw_world)
    assert [(q.image, q.pid) for q in ds.queries] == [(q.image, q.pid) for q in prw.queries]
    assert len(ds.cuhk_protocols) >= 1
    for n, galleries in ds.cuhk_protocols.items():
        for query, gallery in zip(ds.queries, galleries, strict=True):
            names = [name for name, _ in gallery]
            assert len(names) == n and query.image not in names and len(set(names)) == n
            positives = [name for name, box in gallery if box is not None]
            assert names[: len(positives)] == positives  # the person's images come first
            expected = {r.name for r in ds.gallery if query.pid in r.pids.tolist()} - {query.image}
            assert set(positives) == expected


def test_convert_refuses_a_non_empty_output(cuhk_world: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    code, _, err = run_cli(
        ["data", "convert", str(cuhk_world), str(tmp_path), "--to", "folder"], capsys
    )
    assert code == 1 and "not empty" in err
    assert (tmp_path / "keep.txt").read_text() == "precious"


def one_line_error(code: int, err: str) -> str:
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def test_missing_root_is_one_line_error(tmp_path: Path, capsys) -> None:
    line = one_line_error(*run_cli(["data", "info", str(tmp_path / "none")], capsys)[::2])
    assert "dataset folder not found" in line


def test_corrupt_mat_file_is_one_line_error(cuhk_world: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "world"
    shutil.copytree(cuhk_world, root)
    (root / "annotation" / "pool.mat").write_bytes(b"MATLAB 5.0 MAT-file, broken" + bytes(100))
    line = one_line_error(*run_cli(["data", "info", str(root)], capsys)[::2])
    assert "pool.mat: not a readable .mat file" in line


def test_check_images_reports_undecodable_images(prw_world: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "world"
    shutil.copytree(prw_world, root)
    victim = sorted((root / "frames").iterdir())[0]
    victim.write_bytes(b"not a jpeg")
    code, out, err = run_cli(["data", "info", str(root), "--check-images"], capsys)
    assert f"unreadable: {victim.name}" in out
    assert "1 images cannot be decoded" in one_line_error(code, err)
