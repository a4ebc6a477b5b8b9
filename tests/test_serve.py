"""``psearch serve``'s API on a small generated gallery (FastAPI's TestClient, in process)."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="psearch serve needs fastapi (pip install psearch[serve])")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from serve_world import FIRST, build_world  # noqa: E402

from psearch.serve.app import create_app  # noqa: E402

TOKEN = "s3cret"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def client(world):
    with TestClient(create_app(world.gallery, token=TOKEN)) as c:
        yield c


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def box_text(b) -> str:
    return ",".join(f"{v:g}" for v in b)


def test_health_stats_and_schema(client):
    assert client.get("/health").json()["status"] == "ok"
    stats = client.get("/stats").json()
    assert stats["rows"] == 12 + 12 and stats["generation"] == 1 and stats["has_video"]
    assert stats["model"] == "test_resnet" and stats["uptime_s"] >= 0
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/query", "/frames", "/video", "/health", "/stats", "/add"} <= set(paths)
    assert "multipart/form-data" in paths["/query"]["post"]["requestBody"]["content"]


def test_upload_query_finds_the_box_first(client, world):
    path, boxes = world.images[2]
    data = path.read_bytes()
    r = client.post("/query", files={"image": ("q.png", data, "image/png")},
                    data={"box": box_text(boxes[1]), "top_k": "5", "mode": "frames"})
    assert r.status_code == 200, r.text
    body = r.json()
    top = body["results"][0]
    assert body["mode"] == "frames" and len(body["results"]) == 5
    assert top["source"] == str(path.resolve()) and top["box"] == [float(v) for v in boxes[1]]
    assert top["score"] == pytest.approx(1, abs=1e-4)


def test_gallery_frame_query_gives_one_sighting_with_times(client, world):
    source = str(world.video.resolve())
    r = client.post("/query", data={"source": source, "frame": "12",
                                    "box": box_text(world.video_boxes[12]), "top_k": "3"})
    assert r.status_code == 200, r.text
    body = r.json()
    top = body["results"][0]
    assert body["mode"] == "sightings" and top["source"] == source and top["video"]
    assert top["start_frame"] == FIRST and top["start_s"] == pytest.approx(FIRST / 10)
    assert top["frames"] >= 8
    track = {t["frame"]: t["box"] for t in top["track"]}  # the video overlay's boxes
    assert sorted(track) == list(range(FIRST, 20))
    assert track[FIRST] == [float(v) for v in world.video_boxes[FIRST]]
    # time filter: nothing of the walker before it appears
    early = client.post("/query", data={"source": source, "frame": "12", "t_max": "0.5",
                                        "box": box_text(world.video_boxes[12])}).json()
    assert all(s["source"] != source for s in early["results"])


def test_query_expansion_uses_marked_rows(client, world):
    path, boxes = world.images[0]
    base = {"source": str(path.resolve()), "frame": "-1", "box": box_text(boxes[0]),
            "mode": "frames", "top_k": "24"}
    plain = client.post("/query", data=base).json()["results"]
    other = plain[-1]["row"]  # the least similar row, marked as the same person
    expanded = client.post("/query", data={**base, "expand": str(other)}).json()["results"]
    before = {m["row"]: m["score"] for m in plain}
    after = {m["row"]: m["score"] for m in expanded}
    # the mean of the query and the marked row: closer to that row, farther from the query box
    assert after[other] > before[other] and after[plain[0]["row"]] < before[plain[0]["row"]]


def test_frames_crops_and_video_ranges(client, world):
    source = str(world.video.resolve())
    r = client.get("/frames", params={"source": source, "frame": 10, "box": "1,1,50,50"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (160, 120)
    assert client.get("/crops/0").headers["content-type"] == "image/jpeg"
    size = world.video.stat().st_size
    part = client.get("/video", params={"source": source}, headers={"Range": "bytes=10-109"})
    assert part.status_code == 206 and len(part.content) == 100
    assert part.content == world.video.read_bytes()[10:110]
    assert part.headers["content-range"] == f"bytes 10-109/{size}"
    assert client.get("/detections", params={"source": source, "frame": 9}).json()["boxes"] == [
        [float(v) for v in world.video_boxes[9]]]


def bomb() -> bytes:
    """A small PNG whose header declares 50000x50000 pixels (a decompression bomb's header)."""
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", 50000, 50000) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


@pytest.mark.parametrize("name, content", [
    ("bomb.png", "bomb"),
    ("notes.png", b"this is not an image at all"),
    ("x.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'),
    ("empty.png", b""),
])
def test_bad_uploads_get_a_one_line_4xx(client, name, content):
    data = bomb() if content == "bomb" else content
    r = client.post("/query", files={"image": (name, data, "image/png")})
    assert 400 <= r.status_code < 500
    detail = r.json()["detail"]
    assert "\n" not in detail and "Traceback" not in detail and detail


def test_oversized_upload_is_refused(client):
    big = b"\0" * (17 * 1024 * 1024)
    r = client.post("/query", files={"image": ("big.png", big, "image/png")})
    assert r.status_code == 413 and "larger" in r.json()["detail"]


@pytest.mark.parametrize("method, url, kwargs", [
    ("get", "/frames", {"params": {"source": "../../etc/passwd"}}),
    ("get", "/frames", {"params": {"source": "/etc/passwd", "frame": -1}}),
    ("get", "/video", {"params": {"source": "../../etc/passwd"}}),
    ("get", "/detections", {"params": {"source": "../../etc/passwd"}}),
    ("get", "/frames/../../etc/passwd", {}),
    ("get", "/crops/99999", {}),
    ("get", "/crops/..%2F..%2Fetc%2Fpasswd", {}),
    ("post", "/query", {"data": {"source": "../../etc/passwd", "box": "1,1,5,5"}}),
    ("post", "/query", {"data": {"source": "/etc/passwd"}}),
    ("post", "/query", {"data": {}}),
    ("post", "/query", {"data": {"box": "../../etc/passwd"}}),
    ("post", "/query", {"data": {"top_k": "0"}}),
    ("post", "/query", {"data": {"mode": "../../etc/passwd"}}),
])
def test_bad_parameters_get_a_4xx_and_no_file(client, method, url, kwargs):
    r = getattr(client, method)(url, **kwargs)
    assert 400 <= r.status_code < 500, r.text
    assert "root:" not in r.text and "Traceback" not in r.text
    assert "\n" not in r.json()["detail"]


def test_images_gallery_source_is_not_served_as_video(client, world):
    r = client.get("/video", params={"source": str(world.images[0][0].resolve())})
    assert r.status_code == 404


def test_bad_box_and_expand_get_400(client, world):
    source = str(world.images[0][0].resolve())
    for extra in ({"box": "1,2,3"}, {"box": "500,500,600,600"}, {"expand": "a,b"},
                  {"expand": "123456"}):
        r = client.post("/query", data={"source": source, **extra})
        assert r.status_code == 400, (extra, r.text)


def test_add_needs_the_token(world, tmp_path):
    path, boxes = world.images[3]
    files = {"image": ("p.png", path.read_bytes(), "image/png")}
    data = {"boxes": ";".join(box_text(b) for b in boxes[:2])}
    with TestClient(create_app(world.gallery)) as ro:
        assert ro.post("/add", files=files, data=data).status_code == 403
    with TestClient(create_app(world.gallery, token=TOKEN)) as rw:
        assert rw.post("/add", files=files, data=data).status_code == 401
        assert rw.post("/add", files=files, data=data,
                       headers={"Authorization": "Bearer nope"}).status_code == 401


def test_queries_racing_a_growing_gallery_see_whole_generations(tmp_path):
    """A writer publishes generations (as `psearch index --add` does) while readers query:
    no error, and every answer is consistent with the generation it reports."""
    from psearch.gallery.store import Gallery

    world = build_world(tmp_path / "w")
    app = create_app(world.gallery, token=TOKEN)
    base = Gallery.load(world.gallery)
    n0, vectors = len(base), base.vectors()
    path, boxes = world.images[1]
    errors, answers, done = [], [], threading.Event()

    def writer():
        try:
            for _ in range(6):
                g = Gallery.load(world.gallery)
                g.add(vectors[:4], g.rows.take(np.arange(4)), reid=g.header["reid"])
                g.save(world.gallery)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))
        finally:
            done.set()

    def reader(client):
        while not done.is_set():
            r = client.post("/query", data={"source": str(path.resolve()), "frame": "-1",
                                            "box": box_text(boxes[0]), "mode": "frames",
                                            "top_k": "200"})
            if r.status_code != 200:
                errors.append(r.text)
                continue
            body = r.json()
            answers.append((body["generation"], body["rows"], len(body["results"])))

    with TestClient(app) as client:
        threads = [threading.Thread(target=reader, args=(client,)) for _ in range(3)]
        for t in threads:
            t.start()
        writer()
        for t in threads:
            t.join()
        final = client.get("/stats").json()
    assert not errors, errors[:3]
    assert answers and final["generation"] == 7 and final["rows"] == n0 + 24
    for generation, rows, hits in answers:  # generation g has n0 + 4 (g - 1) rows, all searched
        assert rows == n0 + 4 * (generation - 1) and hits == min(200, rows)
    # POST /add with the token publishes one more generation, served at once
    with TestClient(app) as client:
        r = client.post("/add", files={"image": ("p.png", path.read_bytes(), "image/png")},
                        data={"boxes": box_text(boxes[2])},
                        headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, r.text
        assert r.json() == {"added": 1, "rows": n0 + 25, "generation": 8}
        assert client.get("/stats").json()["rows"] == n0 + 25
        top = client.post("/query", data={"source": r_source(client, world), "frame": "-1",
                                          "box": box_text(boxes[2]), "mode": "frames"}).json()
        assert top["results"][0]["score"] == pytest.approx(1, abs=1e-4)



def r_source(client, world) -> str:
    """The uploaded picture's path as the gallery records it (under GALLERY/uploads/)."""
    sources = [s["source"] for s in client.get("/sources").json()["sources"]]
    [upload] = [s for s in sources if "/uploads/" in s]
    return upload


def test_serve_command_refuses_a_missing_gallery_in_one_line(tmp_path, capsys):
    from support import run_cli

    code, _, err = run_cli(["serve", "--gallery", tmp_path / "nope"], capsys)
    assert code == 1 and err.startswith("error:") and "not a psearch gallery" in err
    assert len(err.strip().splitlines()) == 1
