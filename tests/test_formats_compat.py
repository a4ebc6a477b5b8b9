"""Outputs written before frame times existed still read, and grow in the current format."""

from __future__ import annotations

import numpy as np

from psearch.formats.manifest import MANIFEST_COLUMNS, SOURCE_COLUMNS, ManifestWriter, read_manifest
from psearch.gallery.rows import ROW_ARRAYS, TIME_ARRAYS, Rows


def test_an_old_manifest_reads_and_is_upgraded_when_appended_to(tmp_path):
    (tmp_path / "manifest.csv").write_text(
        "source,frame,x1,y1,x2,y2,score,crop\n/v.mp4,3,0,0,10,20,0.9,crops/a.jpg\n")
    (tmp_path / "sources.csv").write_text("source,kind,frames,detections\n/v.mp4,video,10,1\n")
    old = read_manifest(tmp_path)
    assert len(old) == 1 and np.isnan(old.times).all()
    assert np.isnan(old.videos["/v.mp4"]).all()  # fps and step unknown
    with ManifestWriter(tmp_path) as writer:
        writer.add_source("/w.mp4", "video", 5, np.array([0, 4]), np.zeros((2, 4)),
                          np.ones(2), ["crops/b.jpg", "crops/c.jpg"], fps=25.0, step=2.0)
    lines = (tmp_path / "manifest.csv").read_text().splitlines()
    assert lines[0] == ",".join(MANIFEST_COLUMNS)
    assert (tmp_path / "sources.csv").read_text().splitlines()[0] == ",".join(SOURCE_COLUMNS)
    new = read_manifest(tmp_path)
    assert new.frames.tolist() == [3, 0, 4]
    np.testing.assert_allclose(new.times, [np.nan, 0.0, 0.16])
    assert new.videos["/w.mp4"] == (25.0, 2.0)


def test_old_gallery_rows_load_with_unknown_times(tmp_path):
    rows = Rows.from_columns(["/v.mp4"] * 3, [0, 1, 2], np.zeros((3, 4)), np.ones(3),
                             ["a", "b", "c"], [0.0, 0.04, 0.08], {"/v.mp4": (25.0, 1.0)})
    with open(tmp_path / "rows.npz", "wb") as f:  # the arrays of the format before times
        np.savez(f, **{k: getattr(rows, k) for k in ROW_ARRAYS if k not in TIME_ARRAYS})
    old = Rows.load(tmp_path / "rows.npz")
    assert len(old) == 3 and np.isnan(old.times).all() and np.isnan(old.source_fps).all()
    rows.save(tmp_path / "new.npz")
    again = Rows.load(tmp_path / "new.npz")
    np.testing.assert_allclose(again.times, [0.0, 0.04, 0.08])
    assert again.videos() == {"/v.mp4": (25.0, 1.0)}
    assert again.take(np.array([2, 0])).frames.tolist() == [2, 0]
