"""``psearch index`` and ``psearch query`` end to end with a tiny real re-ID checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from support import (
    detect_dir,
    embeddings_dir,
    person_images,
    run_cli,
    tiny_checkpoint,
)

from psearch.cli.main import main
from psearch.core.media import read_image
from psearch.gallery.store import HEADER_NAME, Gallery


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Scene images, their detect directory, a tiny checkpoint and the embeddings."""
    root = tmp_path_factory.mktemp("world")
    images = person_images(root / "images", n_images=4)
    dets = detect_dir(root / "dets", images)
    checkpoint = tiny_checkpoint(root / "reid.pt")
    emb = embeddings_dir(root / "emb", dets, checkpoint, images)
    return root, images, dets, checkpoint, emb


@pytest.fixture(scope="module")
def gallery(world, tmp_path_factory):
    root, _, dets, _, emb = world
    out = tmp_path_factory.mktemp("g") / "gallery"
    main(["index", "--manifest", str(dets), "--embeddings", str(emb), "--out", str(out)])
    return out


def test_index_writes_a_gallery_recording_the_checkpoint(world, gallery):
    _, _, _, checkpoint, emb = world
    header = json.loads((gallery / HEADER_NAME).read_text())
    info = json.loads((emb / "embeddings.json").read_text())
    assert header["rows"] == 12 and header["dim"] == 32 and header["index"]["kind"] == "flat"
    assert header["reid"]["checkpoint"] == str(checkpoint.resolve())
    assert header["reid"]["checkpoint_sha256"] == info["checkpoint_sha256"]


def test_query_json_ranks_the_query_person_first(world, gallery, capsys):
    _, images, *_ = world
    path, boxes = images[2]
    box = ",".join(f"{v:g}" for v in boxes[1])
    code, out, err = run_cli(["query", "--gallery", gallery, "--image", path, "--box", box,
                              "--top-k", "5", "--json", "--device", "cpu"], capsys)
    assert code == 0, err
    [query] = json.loads(out)["queries"]
    assert query["box"] == [float(v) for v in boxes[1]]
    top = query["matches"][0]
    assert (top["rank"], top["source"], top["frame"]) == (1, str(path.resolve()), -1)
    assert top["box"] == [float(v) for v in boxes[1]] and top["score"] == pytest.approx(1, abs=1e-4)
    assert [m["rank"] for m in query["matches"]] == [1, 2, 3, 4, 5]


def test_query_prints_a_table_and_draws_one_sheet_per_box(world, gallery, capsys, tmp_path):
    _, images, *_ = world
    path, boxes = images[0]
    args = ["query", "--gallery", str(gallery), "--image", str(path), "--top-k", "3",
            "--show", str(tmp_path / "hits.png"), "--device", "cpu"]
    for b in boxes[:2]:
        args += ["--box", ",".join(f"{v:g}" for v in b)]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split() == ["rank", "score", "box", "source"]
    assert lines[2].split()[0] == "1" and lines[2].endswith(path.name)
    assert read_image(tmp_path / "hits-1.png").shape[0] > 0
    assert (tmp_path / "hits-2.png").is_file() and not (tmp_path / "hits.png").exists()


def test_query_with_a_crop(world, gallery, capsys, tmp_path):
    _, images, *_ = world
    path, boxes = images[3]
    x1, y1, x2, y2 = boxes[0].astype(int)
    crop = tmp_path / "crop.png"
    from psearch.core.media import write_image

    write_image(crop, read_image(path)[y1:y2, x1:x2])
    code, out, err = run_cli(["query", "--gallery", str(gallery), "--crop", str(crop), "--json",
                          "--top-k", "1", "--device", "cpu"], capsys)
    assert code == 0, err
    assert json.loads(out)["queries"][0]["matches"][0]["row"] == 9


def test_index_add_takes_only_rows_the_gallery_lacks(world, capsys, tmp_path):
    _, _, dets, _, emb = world
    out = tmp_path / "g"
    assert run_cli(["index", "--embeddings", str(emb), "--out", str(out)], capsys)[0] == 0
    code, stdout, err = run_cli(["index", "--embeddings", str(emb), "--out", str(out), "--add"],
                            capsys)
    assert code == 0, err
    assert "nothing new" in stdout and len(Gallery.load(out)) == 12


def _one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize("box, fragment", [
    ("30,30,30,60", "zero area"), ("400,400,500,500", "outside"), ("1,2,3", "4 numbers")])
def test_bad_boxes_are_one_line_errors(world, gallery, capsys, box, fragment):
    _, images, *_ = world
    code, _, err = run_cli(["query", "--gallery", str(gallery), "--image", str(images[0][0]),
                        "--box", box, "--device", "cpu"], capsys)
    _one_line_error(code, err, fragment)


def test_missing_or_corrupt_galleries_are_one_line_errors(world, gallery, capsys, tmp_path):
    _, images, *_ = world
    query = ["--image", str(images[0][0]), "--box", "10,20,40,100", "--device", "cpu"]
    code, _, err = run_cli(["query", "--gallery", str(tmp_path / "nope"), *query], capsys)
    _one_line_error(code, err, "not a psearch gallery")

    broken = tmp_path / "broken"
    broken.mkdir()
    for f in gallery.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    index_file = next(broken.glob("index-*.faiss"))
    index_file.write_bytes(index_file.read_bytes()[:100])
    code, _, err = run_cli(["query", "--gallery", str(broken), *query], capsys)
    _one_line_error(code, err, index_file.name, "corrupt FAISS index")


def test_a_changed_checkpoint_is_refused(world, capsys, tmp_path):
    """The sha256 recorded at index time must match the checkpoint used at query time."""
    root, images, dets, checkpoint, emb = world
    out = tmp_path / "g"
    run_cli(["index", "--embeddings", str(emb), "--out", str(out)], capsys)
    moved = tmp_path / "other.pt"
    moved.write_bytes(checkpoint.read_bytes() + b"\0")
    code, _, err = run_cli(["query", "--gallery", str(out), "--image", str(images[0][0]), "--box",
                        "10,20,40,100", "--checkpoint", str(moved), "--device", "cpu"], capsys)
    _one_line_error(code, err, "sha256 differs")


def test_a_gallery_of_another_embedding_size_is_refused(world, capsys, tmp_path):
    root, images, dets, checkpoint, emb = world
    from psearch.formats.manifest import read_manifest
    from psearch.gallery.rows import Rows

    rows = Rows.from_manifest(read_manifest(dets))
    header = json.loads((emb / "embeddings.json").read_text())
    reid = {k: header[k] for k in ("checkpoint", "checkpoint_sha256", "model")}
    vectors = np.random.default_rng(0).standard_normal((len(rows), 64)).astype(np.float32)
    Gallery.build(vectors, rows, index="flat", reid=reid).save(tmp_path / "g64")
    code, _, err = run_cli(["query", "--gallery", str(tmp_path / "g64"), "--image",
                        str(images[0][0]), "--box", "10,20,40,100", "--device", "cpu"], capsys)
    _one_line_error(code, err, "32 dimensions", "holds 64")


def test_index_refuses_to_overwrite_or_mismatched_rows(world, gallery, capsys, tmp_path):
    _, _, dets, _, emb = world
    code, _, err = run_cli(["index", "--embeddings", str(emb), "--out", str(gallery)], capsys)
    _one_line_error(code, err, "already exists", "--add")
    short = tmp_path / "emb"
    short.mkdir()
    np.save(short / "embeddings.npy", np.load(emb / "embeddings.npy")[:5])
    info = json.loads((emb / "embeddings.json").read_text())
    (short / "embeddings.json").write_text(json.dumps({**info, "rows": 5}))
    code, _, err = run_cli(["index", "--embeddings", short, "--out", tmp_path / "g"], capsys)
    _one_line_error(code, err, "5 embeddings", "12 detections")
    assert not (tmp_path / "g").exists()


def test_index_resumes_over_the_leftovers_of_an_interrupted_first_build(world, capsys, tmp_path):
    _, _, _, _, emb = world
    out = tmp_path / "g"
    out.mkdir()
    (out / "index-000001.faiss").write_bytes(b"half written")
    (out / ".rows-000001.npz.x1y2.tmp").write_bytes(b"")
    code, _, err = run_cli(["index", "--embeddings", str(emb), "--out", str(out)], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        HEADER_NAME, "index-000001.faiss", "rows-000001.npz"]
    assert len(Gallery.load(out)) == 12
