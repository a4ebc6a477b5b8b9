"""The Python API (``PersonSearch``) and the result sheet it draws."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from support import IMAGE_H, IMAGE_W, clustered, fake_rows, person_images

from psearch.api import PersonSearch, check_box
from psearch.baselines import ColorHistogramEmbedder
from psearch.core.errors import PsearchError
from psearch.core.media import read_image
from psearch.gallery import sheet
from psearch.gallery.rows import Rows
from psearch.gallery.store import Gallery


@pytest.fixture()
def world(tmp_path):
    """A gallery of every person in 3 scene images, embedded with colour histograms."""
    images = person_images(tmp_path, n_images=3)
    embedder = ColorHistogramEmbedder()
    vectors = np.concatenate([embedder.embed_boxes(read_image(p), b) for p, b in images])
    sources = [str(p) for p, b in images for _ in b]
    boxes = np.concatenate([b for _, b in images])
    rows = Rows.from_columns(sources, np.full(len(boxes), -1), boxes, np.full(len(boxes), 0.9),
                             [""] * len(boxes))
    gallery = Gallery.build(vectors, rows, index="flat")
    gallery.save(tmp_path / "gallery")
    return tmp_path, images, PersonSearch(tmp_path / "gallery", embedder=embedder)


def test_query_finds_the_same_person_first(world):
    _, images, ps = world
    path, boxes = images[1]
    matches = ps.query(path, box=boxes[2], top_k=4)
    assert len(matches) == 4 and matches[0].rank == 1
    assert matches[0].source == str(path) and matches[0].row == 5
    assert matches[0].score == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(matches[0].box, boxes[2])


def test_query_accepts_arrays_crops_and_several_boxes(world):
    _, images, ps = world
    path, boxes = images[2]
    rgb = read_image(path)
    by_array = ps.query(rgb, box=tuple(boxes[0]), top_k=3)
    x1, y1, x2, y2 = boxes[0].astype(int)
    by_crop = ps.query(rgb[y1:y2, x1:x2], top_k=3)
    assert [m.row for m in by_array] == [m.row for m in by_crop] and by_crop[0].row == 6
    per_box = ps.query_boxes(path, boxes, top_k=1)
    assert [ms[0].row for ms in per_box] == [6, 7, 8]


class BoxesOnly:
    """A custom embedder with only what ``PersonSearch`` documents: ``dim`` + ``embed_boxes``."""

    def __init__(self) -> None:
        self.inner = ColorHistogramEmbedder()
        self.dim = self.inner.dim
        self.seen: list[np.ndarray] = []

    def embed_boxes(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        self.seen.append(np.asarray(boxes))
        return self.inner.embed_boxes(image, boxes)


def test_an_embedder_with_only_embed_boxes_can_query_a_crop(world):
    tmp_path, images, _ = world
    path, boxes = images[2]
    rgb = read_image(path)
    x1, y1, x2, y2 = boxes[0].astype(int)
    embedder = BoxesOnly()
    ps = PersonSearch(tmp_path / "gallery", embedder=embedder)
    matches = ps.query(rgb[y1:y2, x1:x2], top_k=3)
    assert matches[0].row == 6
    np.testing.assert_array_equal(embedder.seen[-1], [[0, 0, x2 - x1, y2 - y1]])


def test_the_embedder_must_match_the_gallery_size(world):
    tmp_path, _, _ = world
    with pytest.raises(PsearchError, match="768"):
        PersonSearch(tmp_path / "gallery", embedder=ColorHistogramEmbedder(stripes=2))


def test_without_a_recorded_checkpoint_an_embedder_is_required(world):
    tmp_path, _, _ = world
    with pytest.raises(PsearchError, match="records no re-ID checkpoint"):
        PersonSearch(tmp_path / "gallery")


@pytest.mark.parametrize("box, message", [
    ((50, 50, 50, 90), "zero area"),
    ((60, 20, 40, 80), "zero area"),
    ((500, 10, 600, 90), "outside"),
    ((0, 0, np.nan, 5), "finite"),
])
def test_bad_query_boxes_are_refused(box, message):
    with pytest.raises(PsearchError, match=message):
        check_box(box, IMAGE_W, IMAGE_H)


def test_a_box_overlapping_the_border_is_clipped():
    np.testing.assert_array_equal(check_box((-5, 10, 30, 500), IMAGE_W, IMAGE_H),
                                  [0, 10, 30, IMAGE_H])


def test_sheet_has_the_expected_size_and_shows_the_query_crop(world):
    tmp_path, images, ps = world
    path, boxes = images[0]
    matches = ps.query(path, box=boxes[1], top_k=7)
    out = ps.draw(path, boxes[1], matches, tmp_path / "sheet.png")
    drawn = read_image(out)
    assert drawn.shape[:2] == sheet.sheet_size(7)[::-1]
    assert (drawn.shape[1], drawn.shape[0]) == (6 * (sheet.TILE_W + sheet.MARGIN) + sheet.MARGIN,
                                                2 * (sheet.TILE_H + sheet.CAPTION_H + sheet.MARGIN)
                                                + sheet.MARGIN)
    x1, y1, x2, y2 = boxes[1].astype(int)
    want, *_ = sheet.fit(read_image(path)[y1:y2, x1:x2])
    x, y = sheet.tile_origin(0)
    got = drawn[y:y + sheet.TILE_H, x:x + sheet.TILE_W]
    inner = (slice(4, -4), slice(4, -4))  # inside the query frame line
    assert np.abs(got[inner].astype(int) - want[inner]).mean() < 2  # PNG is lossless


def test_sheet_draws_the_match_box_on_its_frame(world):
    tmp_path, images, ps = world
    path, boxes = images[0]
    [top] = ps.query(path, box=boxes[0], top_k=1)
    drawn = sheet.render_sheet(np.zeros((10, 5, 3), np.uint8), [top])
    tile, scale, dx, dy = sheet.fit(read_image(path))
    x, y = sheet.tile_origin(1)
    bx1, by1 = (boxes[0][:2] * scale + [dx, dy]).round().astype(int)
    assert tuple(drawn[y + by1 + 5, x + bx1]) == sheet.BOX_COLOUR


def test_html_sheet_inlines_every_tile(world):
    tmp_path, images, ps = world
    path, boxes = images[0]
    matches = ps.query(path, box=boxes[0], top_k=3)
    out = ps.draw(path, boxes[0], matches, tmp_path / "sheet.html")
    page = out.read_text()
    assert page.count("<figure>") == 4 and page.count("data:image/jpeg;base64,") == 4
    assert f"#1 score {matches[0].score:.3f}" in page and str(path) in page


def test_missing_gallery_pictures_become_grey_tiles(tmp_path):
    gallery = Gallery.build(clustered(6), fake_rows(6), index="flat")  # sources do not exist
    matches = gallery.matches(clustered(1, seed=2), k=2)[0]
    drawn = sheet.render_sheet(np.full((40, 20, 3), 255, np.uint8), matches)
    x, y = sheet.tile_origin(1)
    assert (drawn[y:y + sheet.TILE_H, x:x + sheet.TILE_W] == sheet.TILE_BACKGROUND).all()


def test_sheet_suffix_is_checked(tmp_path):
    with pytest.raises(PsearchError, match="must end in"):
        sheet.write_sheet(np.zeros((4, 4, 3), np.uint8), [], tmp_path / "sheet.gif")
    assert cv2.imread(str(tmp_path / "sheet.gif")) is None
