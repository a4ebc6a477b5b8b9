"""The synthetic person-search world: plan identities and images, render them, write a dataset.

``generate_world(out, "cuhk" | "prw" | "market", seed, preset, **overrides)`` builds the world
as the annotation model (``PersonSearchDataset``), renders every image (in worker processes if
asked; each image has its own seed, so the result does not depend on the number of workers),
then writes it with ``psearch.data.writers`` (Market-1501: cuts it into person crops, see
``psearch.data.synth.market``) and returns exact counts per split.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from psearch.core.errors import PsearchError
from psearch.core.io import atomic_path, write_json_atomic
from psearch.core.progress import progress_bar
from psearch.data.annotations import UNLABELED_PID, ImageRecord, PersonSearchDataset, QueryRecord
from psearch.data.synth.people import (
    VIEWS,
    Identity,
    near_duplicate,
    random_identity,
    render_person,
)
from psearch.data.synth.scenes import (
    PROP_EXTENT,
    Camera,
    apply_camera,
    camera_background,
    ground_shadow,
    make_cameras,
    random_prop,
)
from psearch.data.writers import make_cuhk_protocols, write_cuhk, write_prw

FORMATS = ("cuhk", "prw", "market")
SUMMARY_FILE = "synth_summary.json"
ALPHA_THRESHOLD = 96
"""Alpha (0-255) above which a pixel counts for a person's box."""


@dataclass
class SynthConfig:
    """Everything that shapes a world. Sizes are pixels; ranges are inclusive (low, high)."""

    n_images: int = 320
    n_identities: int = 120
    image_size: tuple[int, int] = (384, 288)
    """(width, height)."""
    person_height: tuple[float, float] = (36.0, 120.0)
    """Heights of people from the far to the near end of the ground (at least a 3x range)."""
    n_cameras: int = 8
    people_per_image: tuple[int, int] = (1, 8)
    appearances: tuple[int, int] = (2, 4)
    """Images per labeled identity (each identity is seen by at least two cameras)."""
    queries_per_identity: int = 1
    """Queries per test identity, each from a different camera (CUHK-SYSU uses one)."""
    test_image_fraction: float = 0.4
    test_identity_fraction: float = 0.4
    near_duplicate_fraction: float = 0.3
    """Fraction of identities in near-duplicate pairs (same colours, different details)."""
    props_per_image: tuple[int, int] = (3, 9)
    gallery_sizes: tuple[int, ...] = (50, 100)
    """CUHK-SYSU TestG{N} protocols to write."""
    workers: int = 1
    jpeg_quality: int = 90

    def validate(self) -> None:
        """Raise ``PsearchError`` naming the first field with an impossible value."""
        w, h = self.image_size
        checks = [
            (self.n_images >= 4, "n_images must be at least 4"),
            (self.n_identities >= 2, "n_identities must be at least 2"),
            (w >= 64 and h >= 64, "image_size must be at least 64x64"),
            (
                0 < self.person_height[0] and self.person_height[1] >= 3 * self.person_height[0],
                "person_height must span at least a 3x range, e.g. (40, 150)",
            ),
            (self.person_height[1] <= h, "person_height must fit in the image height"),
            (self.n_cameras >= 2, "n_cameras must be at least 2"),
            (
                1 <= self.people_per_image[0] <= self.people_per_image[1],
                "people_per_image must be 1 <= low <= high",
            ),
            (
                2 <= self.appearances[0] <= self.appearances[1],
                "appearances must be 2 <= low <= high",
            ),
            (self.queries_per_identity >= 1, "queries_per_identity must be at least 1"),
            (0 < self.test_image_fraction < 1, "test_image_fraction must be in (0, 1)"),
            (0 < self.test_identity_fraction < 1, "test_identity_fraction must be in (0, 1)"),
            (0 <= self.near_duplicate_fraction <= 1, "near_duplicate_fraction must be in [0, 1]"),
            (self.workers >= 1, "workers must be at least 1"),
            (
                len(self.gallery_sizes) > 0 and all(g >= 1 for g in self.gallery_sizes),
                "gallery_sizes must be one or more positive numbers",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise PsearchError(f"synth config: {message}")


PRESETS: dict[str, dict] = {
    "tiny": dict(
        n_images=56,
        n_identities=16,
        image_size=(256, 192),
        person_height=(28.0, 90.0),
        n_cameras=4,
        gallery_sizes=(10, 20),
        test_image_fraction=0.45,
        props_per_image=(2, 5),
    ),
    "ci": dict(n_images=320, n_identities=120, image_size=(384, 288), person_height=(36.0, 120.0)),
    "bench": dict(
        n_images=2400,
        n_identities=600,
        image_size=(480, 360),
        person_height=(42.0, 150.0),
    ),
}
FORMAT_DEFAULTS: dict[str, dict] = {
    "cuhk": dict(n_cameras=8, queries_per_identity=1),
    "prw": dict(
        n_cameras=6,
        queries_per_identity=3,
        appearances=(4, 12),
        test_image_fraction=0.5,
        test_identity_fraction=0.48,
    ),
}
FORMAT_DEFAULTS["market"] = FORMAT_DEFAULTS["prw"]
"""Per-format shape of the world (PRW and Market-1501: 6 cameras, many appearances, several
queries per identity)."""


TUPLE_FIELDS = {
    "image_size", "person_height", "people_per_image", "appearances", "props_per_image",
    "gallery_sizes",
}  # fmt: skip


def make_config(fmt: str, preset: str = "ci", **overrides) -> SynthConfig:
    """The ``SynthConfig`` of ``preset`` for format ``fmt``, with field ``overrides`` applied."""
    if fmt not in FORMATS:
        raise PsearchError(f"unknown synth format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if preset not in PRESETS:
        raise PsearchError(f"unknown synth preset {preset!r}; expected one of {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(SynthConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise PsearchError(
            f"unknown synth option(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}"
        )
    values = {**FORMAT_DEFAULTS[fmt], **PRESETS[preset]}
    values.update({k: v for k, v in overrides.items() if v is not None})
    for key in TUPLE_FIELDS & set(values):
        try:
            values[key] = tuple(values[key])
        except TypeError:
            raise PsearchError(
                f"synth config: {key} must be a sequence, got {values[key]!r}"
            ) from None
    config = SynthConfig(**values)
    config.validate()
    if fmt == "prw" and config.n_cameras > 9:
        raise PsearchError("synth config: PRW frame names hold one camera digit; n_cameras <= 9")
    return config


# --------------------------------------------------------------------------------------------
# planning: who is in which image (main process, one RNG)


@dataclass
class _ImagePlan:
    index: int
    name: str
    split: str
    camera: Camera
    n_people: int
    labeled: list[Identity] = field(default_factory=list)


def make_identities(
    config: SynthConfig, rng: np.random.Generator
) -> tuple[list[Identity], list[Identity]]:
    """Train and test identities (disjoint), with near-duplicate pairs kept within a split."""
    n = config.n_identities
    pids = iter(rng.permutation(n) + 1)
    n_pairs = int(round(config.near_duplicate_fraction * n / 2))
    if config.near_duplicate_fraction > 0 and n >= 4:
        n_pairs = max(n_pairs, 1)
    units: list[list[Identity]] = []
    for _ in range(n_pairs):
        base = random_identity(rng, int(next(pids)))
        units.append(list(near_duplicate(base, int(next(pids)), rng)))
    units += [[random_identity(rng, int(pid))] for pid in pids]
    order = rng.permutation(len(units))
    n_test = max(1, int(round(config.test_identity_fraction * n)))
    train: list[Identity] = []
    test: list[Identity] = []
    for u in order:
        (test if len(test) < n_test else train).extend(units[u])
    if not train:
        raise PsearchError("synth config: too few identities to have both training and test ones")
    return train, test


def _frame_names(fmt: str, cameras: np.ndarray, rng: np.random.Generator) -> list[str]:
    """CUHK-SYSU: s1.jpg... in random order; PRW: c<cam>s<seq>_<frame>.jpg, frames increasing."""
    if fmt == "cuhk":
        return [f"s{k + 1}.jpg" for k in rng.permutation(len(cameras))]
    names = [""] * len(cameras)
    for camera in np.unique(cameras):
        images = np.flatnonzero(cameras == camera)
        frames = np.cumsum(rng.integers(20, 160, len(images)))
        n_seq = max(1, min(6, len(images) // 40))
        for j, (image, frame) in enumerate(zip(images, frames, strict=True)):
            names[image] = f"c{camera}s{1 + j * n_seq // len(images)}_{frame:06d}.jpg"
    return names


def _assign(
    identities: list[Identity],
    images: np.ndarray,
    cameras: np.ndarray,
    capacity: np.ndarray,
    config: SynthConfig,
    rng: np.random.Generator,
) -> dict[int, list[int]]:
    """Place each identity in 2+ images of ``images`` from 2+ cameras; pid -> image indices."""
    load = np.zeros(len(images), np.int64)
    placed: dict[int, list[int]] = {}
    for ident in identities:
        k = int(rng.integers(config.appearances[0], config.appearances[1] + 1))
        chosen: list[int] = []
        for j in range(k):
            free = (capacity - load).astype(float)
            free[chosen] = 0
            if j == 1:  # the second appearance comes from another camera
                free[cameras[images] == cameras[images[chosen[0]]]] = 0
            if free.sum() == 0:
                if j < 2:
                    raise PsearchError(
                        f"synth config: {len(images)} images with {int(capacity.sum())} person "
                        f"slots cannot hold {len(identities)} identities in two cameras each; "
                        "add images or remove identities"
                    )
                break
            slot = int(rng.choice(len(images), p=free / free.sum()))
            chosen.append(slot)
            load[slot] += 1
        placed[ident.pid] = [int(images[s]) for s in chosen]
    return placed


def count_test_images(fmt: str, config: SynthConfig) -> int:
    """Images in the test split; ``PsearchError`` if the splits or CUHK galleries cannot fit."""
    n = config.n_images
    n_test = int(round(config.test_image_fraction * n))
    largest = max(config.gallery_sizes) if fmt == "cuhk" and config.gallery_sizes else 0
    if fmt == "cuhk" and n_test < largest + 1:
        raise PsearchError(
            f"synth config: gallery size {largest} needs at least {largest + 1} test images but "
            f"{n} images x test_image_fraction {config.test_image_fraction} gives {n_test}; "
            "add images or lower gallery_sizes"
        )
    if n_test < 2 or n - n_test < 2:
        raise PsearchError("synth config: too few images to have two per split")
    return n_test


def plan_world(
    fmt: str, config: SynthConfig, seed: int
) -> tuple[list[_ImagePlan], list[tuple[int, int]], list[Identity]]:
    """Images with their labeled identities, the queries as (image index, pid), all identities."""
    rng = np.random.default_rng([seed, 1])
    cameras_all = make_cameras(config.n_cameras, seed)
    n, n_test = config.n_images, count_test_images(fmt, config)
    # every camera films both splits
    cameras = (
        np.concatenate(
            [np.arange(n - n_test) % config.n_cameras, np.arange(n_test) % config.n_cameras]
        )
        + 1
    )
    cameras = np.concatenate(
        [rng.permutation(cameras[: n - n_test]), rng.permutation(cameras[n - n_test :])]
    )
    splits = np.array(["train"] * (n - n_test) + ["test"] * n_test)
    low, high = config.people_per_image
    counts = rng.integers(low, high + 1, n)
    names = _frame_names(fmt, cameras, rng)

    train_ids, test_ids = make_identities(config, rng)
    identity = {i.pid: i for i in (*train_ids, *test_ids)}
    plans = [
        _ImagePlan(i, names[i], str(splits[i]), cameras_all[cameras[i] - 1], int(counts[i]))
        for i in range(n)
    ]
    queries: list[tuple[int, int]] = []
    for split, ids in (("train", train_ids), ("test", test_ids)):
        images = np.flatnonzero(splits == split)
        placed = _assign(ids, images, cameras, counts[images], config, rng)
        for pid, where in placed.items():
            for i in where:
                plans[i].labeled.append(identity[pid])
            if split == "test":
                queries += _pick_queries(pid, where, cameras, config, rng)
    queries.sort(key=lambda q: q[1])
    return plans, queries, [*train_ids, *test_ids]


def _pick_queries(
    pid: int, where: list[int], cameras: np.ndarray, config: SynthConfig, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """Up to ``queries_per_identity`` appearances of ``pid`` from distinct cameras."""
    by_camera: dict[int, int] = {}
    for i in rng.permutation(where):
        by_camera.setdefault(int(cameras[i]), int(i))
    picks = list(by_camera.values())[: config.queries_per_identity]
    return [(i, pid) for i in picks]


# --------------------------------------------------------------------------------------------
# rendering: one image per task, seeded by (seed, image index)


@dataclass
class _RenderJob:
    plan: _ImagePlan
    path: Path
    seed: int
    config: SynthConfig


def _overlap(box: np.ndarray, others: list[np.ndarray]) -> float:
    """Largest intersection over the smaller area between ``box`` and any of ``others``."""
    if not others:
        return 0.0
    b = np.asarray(others)
    iw = np.clip(np.minimum(box[2], b[:, 2]) - np.maximum(box[0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], b[:, 3]) - np.maximum(box[1], b[:, 1]), 0, None)
    areas = np.minimum(
        (box[2] - box[0]) * (box[3] - box[1]), (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    )
    return float((iw * ih / np.maximum(areas, 1e-6)).max())


def _place(
    camera: Camera,
    config: SynthConfig,
    ident: Identity,
    others: list[np.ndarray],
    rng: np.random.Generator,
) -> tuple[float, float, float]:
    """Feet position (x, y) and height of a person, avoiding near-total overlap with ``others``."""
    w, h = config.image_size
    horizon = camera.horizon * h
    low, high = config.person_height

    def height_at(foot_y: float) -> float:
        tall = camera.person_height(foot_y, h, config.person_height) * ident.height
        return float(np.clip(tall, low, high))

    for _ in range(10):
        if rng.random() < 0.08:  # cut by the bottom border: 5-30% of the body below it
            foot_y = h + rng.uniform(0.05, 0.3) * height_at(h)
        else:  # perspective: more people far away
            foot_y = horizon + (0.03 + 0.97 * rng.random() ** 1.4) * (h - horizon)
        height = height_at(foot_y)
        half = 0.2 * height
        r = rng.random()
        if r < 0.07:  # cut by the left border, up to about 60% of the width outside
            foot_x = rng.uniform(-0.1, 0.6) * half
        elif r < 0.14:
            foot_x = w - rng.uniform(-0.1, 0.6) * half
        else:
            foot_x = rng.uniform(half, w - half)
        box = np.array([foot_x - half, foot_y - height, foot_x + half, foot_y])
        if _overlap(box, others) < 0.55:
            break
    others.append(box)
    return foot_x, foot_y, height


def _paste(image: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, left: int, top: int) -> None:
    """Alpha-blend a patch into ``image`` at (left, top), clipped to the image."""
    H, W = image.shape[:2]
    h, w = alpha.shape
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + w, W), min(top + h, H)
    if x0 >= x1 or y0 >= y1:
        return
    a = alpha[y0 - top : y1 - top, x0 - left : x1 - left, None].astype(np.float32) * (1 / 255)
    region = image[y0:y1, x0:x1]
    src = rgb[y0 - top : y1 - top, x0 - left : x1 - left]
    region[:] = (src * a + region * (1 - a) + 0.5).astype(np.uint8)


MIN_VISIBLE_LABELED = 0.35
"""A labeled person must keep this fraction of its in-image pixels unoccluded (else re-draw)."""
MIN_VISIBLE_UNLABELED = 0.2
"""An unlabeled person less visible than this is left unannotated, as annotators do."""
MAX_ATTEMPTS = 6


def _compose(plan: _ImagePlan, config: SynthConfig, rng: np.random.Generator):
    """Draw the scene; the image, boxes [N, 4], pids [N] and visible fraction [N] of its people."""
    w, h = config.image_size
    camera = plan.camera
    image = camera_background(camera, config.image_size).copy()
    people: list[Identity | None] = [*plan.labeled]
    people += [None] * max(0, plan.n_people - len(plan.labeled))
    people = [people[i] for i in rng.permutation(len(people))]

    layers = []  # (depth = row of the feet or base, kind 0 prop / 1 person, index, payload)
    occupied: list[np.ndarray] = []
    for slot, ident in enumerate(people):
        ident = ident if ident is not None else random_identity(rng, UNLABELED_PID)
        foot_x, foot_y, height = _place(camera, config, ident, occupied, rng)
        rgb, alpha = render_person(ident, VIEWS[rng.integers(4)], height, rng)
        left, top = int(round(foot_x - alpha.shape[1] / 2)), int(round(foot_y - alpha.shape[0]))
        layers.append((foot_y, 1, slot, (ident.pid, rgb, alpha, left, top)))
    low, high = config.props_per_image
    for k in range(int(rng.integers(low, high + 1))):
        base_y = rng.uniform(camera.horizon * h, h * 1.05)
        scale = float(camera.person_height(base_y, h, config.person_height))
        x = rng.uniform(-0.05, 1.05) * w
        prop_rng = np.random.default_rng(rng.integers(2**63))
        layers.append((base_y, 0, k, (random_prop(rng), x, scale, prop_rng)))

    owner = np.full((h, w), -1, np.int16)  # which person each pixel shows, -1 for none
    boxes, pids, areas = [], [], []
    for depth, kind, index, payload in sorted(layers, key=lambda layer: layer[:3]):
        if kind == 0:
            draw, x, scale, prop_rng = payload
            # props draw straight onto the image: find the pixels they covered by difference
            half, up = PROP_EXTENT[0] * scale, PROP_EXTENT[1] * scale
            x0, y0 = max(0, int(x - half)), max(0, int(depth - up))
            x1, y1 = min(w, int(x + half) + 1), min(h, int(depth + 2))
            before = image[y0:y1, x0:x1].copy()
            draw(image, x, depth, scale, prop_rng)
            diff = cv2.absdiff(image[y0:y1, x0:x1], before)
            owner[y0:y1, x0:x1][(diff[..., 0] | diff[..., 1] | diff[..., 2]) > 0] = -1
            continue
        pid, rgb, alpha, left, top = payload
        solid = alpha > ALPHA_THRESHOLD
        ys, xs = np.nonzero(solid)
        feet = (left + alpha.shape[1] / 2, top + alpha.shape[0] - 1)
        ground_shadow(image, *feet, 0.4 * alpha.shape[1], alpha.shape[0])
        _paste(image, rgb, alpha, left, top)
        ys, xs = ys + top, xs + left
        inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
        owner[ys[inside], xs[inside]] = index
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        pids.append(pid)
        areas.append(max(1, int(inside.sum())))
    order = [layer[2] for layer in sorted(layers, key=lambda layer: layer[:3]) if layer[1] == 1]
    counts = np.bincount(owner[owner >= 0].ravel(), minlength=len(people))
    visible = counts[order] / np.asarray(areas, float)
    return (
        image,
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(pids, np.int64),
        visible,
    )


def render_image(job: _RenderJob) -> tuple[np.ndarray, np.ndarray]:
    """Render one image and write it to ``job.path``.

    Returns its annotated people's boxes, unclipped float32 [N, 4] (x1, y1, x2, y2), and pids
    int64 [N]. The scene is re-drawn (new sub-seed) while a labeled person is mostly hidden.
    """
    plan, config = job.plan, job.config
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([job.seed, 2, plan.index, attempt])
        image, boxes, pids, visible = _compose(plan, config, rng)
        labeled = pids != UNLABELED_PID
        keep = labeled | (visible >= MIN_VISIBLE_UNLABELED)
        if keep.any() and (visible[labeled] >= MIN_VISIBLE_LABELED).all():
            break
    boxes, pids = boxes[keep], pids[keep]
    image = apply_camera(image, plan.camera, rng)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
    if not ok:
        raise PsearchError(f"{job.path}: cannot encode image")
    with atomic_path(job.path) as tmp:
        tmp.write_bytes(data.tobytes())
    return boxes, pids


def _worker_init() -> None:
    cv2.setNumThreads(1)


IMAGES_PER_WORKER = 400
"""Fewer images than this per extra worker render in-process (starting workers costs seconds)."""


def _render_all(
    jobs: list[_RenderJob], workers: int, progress: bool
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    bar = dict(total=len(jobs), desc="rendering", unit="img", enabled=progress)
    workers = min(workers, len(jobs) // IMAGES_PER_WORKER)
    if workers <= 1:
        yield from progress_bar(map(render_image, jobs), **bar)
        return
    # forkserver, not fork: safe when the caller has torch/OpenMP threads running
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
        yield from progress_bar(pool.map(render_image, jobs, chunksize=8), **bar)


# --------------------------------------------------------------------------------------------
# the world


BORDER_DRAG = np.array([0.5, 1.0, 1.5, 2.0], np.float32)
"""How far (px) PRW boxes of people cut by the left/top border reach past it."""


def _annotated_boxes(
    boxes: np.ndarray, fmt: str, size: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """The boxes as the dataset files state them: float32 [N, 4] (x1, y1, x2, y2).

    CUHK-SYSU: the person's full extent clipped to the image (whole pixels). PRW: the same,
    half a pixel wider on each side inside the image (float coordinates), and for people cut by
    the left or top border, the box dragged 0.5-2 px past it (negative coordinates, as in the
    real files) keeping its width, so that clipping x and y to 0, as the reference code does,
    gives back the visible box.
    """
    w, h = size
    limits = np.array([w, h], np.float32)
    cut = boxes[:, :2] < 0
    b = np.concatenate([np.maximum(boxes[:, :2], 0), np.minimum(boxes[:, 2:], limits)], axis=1)
    if fmt == "prw":
        b[:, :2] = np.maximum(b[:, :2] - 0.5, 0)
        b[:, 2:] = np.minimum(b[:, 2:] + 0.5, limits)
        drag = rng.choice(BORDER_DRAG, size=cut.shape) * cut
        b -= np.concatenate([drag, drag], axis=1)
    return b


def build_world(
    out: Path, fmt: str, config: SynthConfig, seed: int, progress: bool = False
) -> tuple[PersonSearchDataset, dict[str, str]]:
    """Plan and render the world under ``out``; the dataset and PRW's alternative box variables."""
    plans, query_plan, _ = plan_world(fmt, config, seed)
    folder = out / ("Image/SSM" if fmt == "cuhk" else "frames")
    jobs = [_RenderJob(p, folder / p.name, seed, config) for p in plans]
    train, gallery = [], []
    for plan, (boxes, pids) in zip(plans, _render_all(jobs, config.workers, progress), strict=True):
        rng = np.random.default_rng([seed, 4, plan.index])
        annotated = _annotated_boxes(boxes, fmt, config.image_size, rng)
        record = ImageRecord(
            plan.name, folder / plan.name, annotated, pids, plan.camera.index, plan.split
        )
        (train if plan.split == "train" else gallery).append(record)
    queries = []
    for index, pid in query_plan:
        record = next(r for r in gallery if r.name == plans[index].name)
        queries.append(
            QueryRecord(
                record.name, record.boxes[list(record.pids).index(pid)], pid, camera=record.camera
            )
        )
    dataset = PersonSearchDataset(f"synth-{fmt}", out, train, gallery, queries)
    if fmt == "cuhk":
        dataset.cuhk_protocols = make_cuhk_protocols(gallery, queries, config.gallery_sizes, seed)
    rng = np.random.default_rng([seed, 3])
    alternatives: dict[str, str] = {}
    if fmt == "prw":
        names = [p.name for p in plans]
        few = max(1, len(names) // 25)
        picked = rng.choice(len(names), size=min(2 * few, len(names)), replace=False)
        for k, i in enumerate(picked):
            alternatives[names[i]] = "anno_file" if k < len(picked) / 2 else "anno_previous"
    return dataset, alternatives


def summarize(dataset: PersonSearchDataset) -> dict[str, dict[str, int]]:
    """Exact counts per split: images, boxes, labeled/unlabeled boxes, identities, queries."""
    summary = {}
    for split, records in (("train", dataset.train), ("test", dataset.gallery)):
        pids = np.concatenate([r.pids for r in records]) if records else np.zeros(0, np.int64)
        labeled = pids != UNLABELED_PID
        if dataset.crops:  # Market-1501 distractors (pid 0) are no identity
            labeled &= pids != 0
        summary[split] = {
            "images": len(records),
            "boxes": int(len(pids)),
            "labeled_boxes": int(labeled.sum()),
            "unlabeled_boxes": int((~labeled).sum()),
            "identities": int(len(np.unique(pids[labeled]))),
            "queries": len(dataset.queries) if split == "test" else 0,
        }
    return summary


WORLD_PATHS = (
    "Image", "annotation", "frames", "annotations", "frame_train.mat", "frame_test.mat",
    "ID_train.mat", "ID_test.mat", "query_info.txt", "bounding_box_train", "bounding_box_test",
    "query", "scenes.tmp",
)  # fmt: skip
"""Everything a world writes besides its summary (removed before a world is re-generated)."""


def _remove_world(out: Path) -> None:
    for name in WORLD_PATHS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def generate_world(
    out: str | os.PathLike,
    fmt: str,
    seed: int = 0,
    preset: str = "ci",
    progress: bool = False,
    **overrides,
) -> dict:
    """Generate a synthetic person-search dataset in the ``fmt`` layout ("cuhk" or "prw"), or
    a Market-1501 crop set cut from one ("market").

    ``overrides`` set ``SynthConfig`` fields (``n_images=``, ``n_identities=``,
    ``image_size=(w, h)``, ``gallery_sizes=(50, 100)``, ``workers=``...). ``out`` must be empty,
    missing, or a previous synthetic world (which is replaced). Returns (and writes to
    ``out/synth_summary.json``) ``{"format", "seed", "preset", "config", "complete": True,
    "train": counts, "test": counts}``; counts are images, boxes, labeled_boxes,
    unlabeled_boxes, identities, queries. With ``workers > 1`` worker processes are started
    (forkserver), so a calling script needs the ``if __name__ == "__main__":`` guard.
    """
    config = make_config(fmt, preset, **overrides)
    count_test_images(fmt, config)  # fail before touching OUT
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PsearchError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / SUMMARY_FILE).is_file():
            raise PsearchError(
                f"{out}: folder is not empty and is not a synthetic world; "
                "choose an empty or new folder"
            )
        _remove_world(out)
    out.mkdir(parents=True, exist_ok=True)
    head = {"format": fmt, "seed": seed, "preset": preset, "config": dataclasses.asdict(config)}
    write_json_atomic(out / SUMMARY_FILE, {**head, "complete": False})  # marks OUT as ours
    if fmt == "market":
        from psearch.data.market import load_market
        from psearch.data.synth.market import write_market_world

        write_market_world(out, lambda scenes: build_world(scenes, fmt, config, seed, progress)[0],
                           seed, progress)
        dataset = load_market(out, [])
    else:
        dataset, alternatives = build_world(out, fmt, config, seed, progress)
        if fmt == "cuhk":
            write_cuhk(dataset, out, images="skip")
        else:
            write_prw(dataset, out, images="skip", box_variables=alternatives)
    summary = {**head, "complete": True, **summarize(dataset)}
    write_json_atomic(out / SUMMARY_FILE, summary)
    return summary
