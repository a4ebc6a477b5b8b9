"""A generated Market-1501 crop set: person crops cut from a rendered synthetic world.

The world is planned and rendered as for PRW (6 cameras, every test identity seen by two or more
cameras, frames named ``c<camera>s<sequence>_<frame>``) into a scratch folder, then cut into
crops resized to 64x128 like Market-1501's and named ``PPPP_cCsS_FFFFFF_NN.jpg`` (NN: the box's
index in its frame):

- ``bounding_box_train/``: every labeled person of the train scenes (train identities only);
- ``query/``: the world's queries (up to 3 per test identity, each from another camera), cut at
  the exact ground-truth box (Market-1501's queries are hand-drawn);
- ``bounding_box_test/``: every labeled person of the test scenes, cut at a slightly shifted
  and scaled box (a detector's box), so the query's own appearance is in the gallery too (same
  camera: ignored by the protocol); unlabeled passers-by and one background window per scene
  as distractors (``0000``); for some labeled people a second, poor box (a part of the person)
  as junk (``-1``).

Train and test identities are disjoint, as in the world. Scenes are deleted once cut.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from psearch.core.errors import PsearchError
from psearch.core.io import atomic_path
from psearch.core.media import read_image
from psearch.data.annotations import UNLABELED_PID, ImageRecord, PersonSearchDataset
from psearch.data.market import DISTRACTOR_PID, GALLERY_DIR, JUNK_PID, QUERY_DIR, TRAIN_DIR

SCENE_DIR = "scenes.tmp"
"""Scratch folder (under the output) for the rendered scenes."""
CROP_SIZE = (64, 128)
"""(width, height) of every crop, as in Market-1501."""
DETECTOR_JITTER = 0.06
"""Gallery and train boxes: shift and scale by up to this fraction of the box size."""
JUNK_FRACTION = 0.2
"""Fraction of labeled test people that also get a junk crop."""
MIN_BOX = (4, 8)
"""Smallest (width, height) in pixels of a box worth a crop."""


def crop_name(pid: int, frame_stem: str, index: int) -> str:
    """``0002_c1s1_000451_03.jpg``; junk is ``-1_...``."""
    head = "-1" if pid == JUNK_PID else f"{pid:04d}"
    return f"{head}_{frame_stem}_{index:02d}.jpg"


def jitter_boxes(boxes: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Boxes float [N, 4] shifted and scaled by up to ``amount`` of their size."""
    wh = boxes[:, 2:] - boxes[:, :2]
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 + rng.uniform(-amount, amount, wh.shape) * wh
    half = wh * (1 + rng.uniform(-amount, amount, (len(boxes), 1))) / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def junk_boxes(boxes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poor boxes of the given people: the upper or lower 30-45% of each, or half beside it."""
    x1, y1, x2, y2 = boxes.T
    w, h = x2 - x1, y2 - y1
    part = rng.uniform(0.3, 0.45, len(boxes)) * h
    kind = rng.integers(3, size=len(boxes))
    out = boxes.copy()
    out[kind == 0, 3] = (y1 + part)[kind == 0]
    out[kind == 1, 1] = (y2 - part)[kind == 1]
    side = np.where(rng.random(len(boxes)) < 0.5, -0.55, 0.55) * w
    out[kind == 2, 0] = (x1 + side)[kind == 2]
    out[kind == 2, 2] = (x2 + side)[kind == 2]
    return out


def background_box(people: np.ndarray, size: tuple[int, int], rng: np.random.Generator,
                   tries: int = 20) -> np.ndarray | None:
    """A person-shaped window (1:2) overlapping every person box by less than 20% of its area."""
    w, h = size
    for _ in range(tries):
        bh = rng.uniform(0.25, 0.6) * h
        x1, y1 = rng.uniform(0, w - bh / 2), rng.uniform(0, h - bh)
        box = np.array([x1, y1, x1 + bh / 2, y1 + bh], np.float32)
        iw = np.clip(np.minimum(box[2], people[:, 2]) - np.maximum(box[0], people[:, 0]), 0, None)
        ih = np.clip(np.minimum(box[3], people[:, 3]) - np.maximum(box[1], people[:, 1]), 0, None)
        if len(people) == 0 or (iw * ih).max() < 0.2 * (box[2] - box[0]) * (box[3] - box[1]):
            return box
    return None


def write_crop(image: np.ndarray, box: np.ndarray, path: Path, quality: int) -> bool:
    """Cut ``box`` (clipped to the image), resize it to ``CROP_SIZE`` and write it atomically;
    False (nothing written) if the clipped box is smaller than ``MIN_BOX``."""
    h, w = image.shape[:2]
    x1, y1 = int(np.floor(max(box[0], 0))), int(np.floor(max(box[1], 0)))
    x2, y2 = int(np.ceil(min(box[2], w))), int(np.ceil(min(box[3], h)))
    if x2 - x1 < MIN_BOX[0] or y2 - y1 < MIN_BOX[1]:
        return False
    crop = image[y1:y2, x1:x2]
    shrink = crop.shape[0] > CROP_SIZE[1]
    crop = cv2.resize(crop, CROP_SIZE, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise PsearchError(f"{path}: cannot encode crop")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())
    return True


def cut_scene(record: ImageRecord, out: Path, query_boxes: list[tuple[int, int]], seed: int,
              index: int, quality: int) -> None:
    """Write the crops of one scene (see the module docstring); ``query_boxes``: (box row, pid)
    of the queries in this scene."""
    image = read_image(record.path)
    stem = Path(record.name).stem
    rng = np.random.default_rng([seed, 5, index])
    boxes, pids = record.boxes, record.pids
    labeled = pids != UNLABELED_PID
    detected = jitter_boxes(boxes, DETECTOR_JITTER, rng)
    if record.split == "train":
        for k in np.flatnonzero(labeled):
            write_crop(image, detected[k], out / TRAIN_DIR / crop_name(int(pids[k]), stem, k),
                       quality)
        return
    for row, pid in query_boxes:
        write_crop(image, boxes[row], out / QUERY_DIR / crop_name(pid, stem, row), quality)
    gallery = out / GALLERY_DIR
    for k in range(len(boxes)):
        pid = int(pids[k]) if labeled[k] else DISTRACTOR_PID
        write_crop(image, detected[k], gallery / crop_name(pid, stem, k), quality)
    extra = len(boxes)
    junk = np.flatnonzero(labeled & (rng.random(len(boxes)) < JUNK_FRACTION))
    for box in junk_boxes(boxes[junk], rng):
        extra += write_crop(image, box, gallery / crop_name(JUNK_PID, stem, extra), quality)
    window = background_box(boxes, (image.shape[1], image.shape[0]), rng)
    if window is not None:
        write_crop(image, window, gallery / crop_name(DISTRACTOR_PID, stem, extra), quality)


def cut_world(world: PersonSearchDataset, out: Path, seed: int, quality: int = 95,
              progress: bool = False) -> None:
    """Cut every scene of ``world`` into the Market-1501 folders of ``out``."""
    from tqdm import tqdm

    queries: dict[str, list[tuple[int, int]]] = {}
    for query in world.queries:
        row = list(world.image(query.image).pids).index(query.pid)
        queries.setdefault(query.image, []).append((row, query.pid))
    records = [*world.train, *world.gallery]
    for part in (TRAIN_DIR, GALLERY_DIR, QUERY_DIR):
        (out / part).mkdir(parents=True, exist_ok=True)
    for index, record in enumerate(tqdm(records, desc="cutting crops", unit="img",
                                        disable=not progress)):
        cut_scene(record, out, queries.get(record.name, []), seed, index, quality)


def write_market_world(out: Path, world_builder, seed: int, progress: bool = False) -> None:
    """Render the world with ``world_builder(scene_root)`` (returns the scene dataset) under a
    scratch folder of ``out``, cut it into crops, delete the scenes."""
    scenes = out / SCENE_DIR
    try:
        world = world_builder(scenes)
        cut_world(world, out, seed, progress=progress)
    finally:
        shutil.rmtree(scenes, ignore_errors=True)
