"""Training crops for re-ID: ground-truth (and optionally detected) person boxes of the train split,
an in-memory crop cache, augmentation, and an identity-balanced (P x K) batch sampler.

Labels: every labeled train identity gets a class ``0 .. L-1`` (sorted by pid); unlabeled people
get ``UNLABELED_PID`` (-1). Detections from a detect manifest are matched to the ground truth of
their image: a detection whose best IoU with a ground-truth box is >= ``iou`` takes that box's
label (which may be unlabeled); any other detection is dropped (it is background or a poor box,
and would only pollute the OIM queue).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from torchvision.ops import box_iou
from torchvision.transforms import v2

from psearch.core.errors import PsearchError
from psearch.core.media import read_image
from psearch.data.annotations import UNLABELED_PID, ImageRecord
from psearch.formats.manifest import Manifest
from psearch.reid.model import resize_crop

CONTEXT = 0.15
"""Margin kept around each cached box, as a fraction of its width/height, for box jitter."""

MAX_CACHE_SCALE = 2.0
"""Cached regions are shrunk so that a box is at most this many times the input height."""

ERASE_VALUE = (124, 116, 104)
"""Random-erasing fill: the ImageNet mean colour, in uint8."""


@dataclass
class CropSamples:
    """The training crops: sample ``i`` is ``boxes[i]`` float32 [4] in image
    ``images[image_index[i]]`` with class ``labels[i]`` (-1 unlabeled). ``pid_values`` [L]:
    the dataset pid of each class."""

    images: list[Path]
    image_index: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    pid_values: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_ids(self) -> int:
        return len(self.pid_values)


def match_detections(gt_boxes: np.ndarray, gt_pids: np.ndarray, det_boxes: np.ndarray,
                     iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Detections float [M, 4] matched to ground truth [G, 4] with pids [G].

    Returns (keep bool [M], pids int64 [M]): a detection is kept with the pid of its best-IoU
    ground-truth box when that IoU is >= ``iou``.
    """
    if len(gt_boxes) == 0 or len(det_boxes) == 0:
        return np.zeros(len(det_boxes), bool), np.full(len(det_boxes), UNLABELED_PID, np.int64)
    ious = box_iou(torch.from_numpy(det_boxes), torch.from_numpy(gt_boxes)).numpy()
    best = ious.argmax(axis=1)
    return ious.max(axis=1) >= iou, gt_pids[best]


def build_samples(records: list[ImageRecord], detections: Manifest | None = None,
                  iou: float = 0.5, use_unlabeled: bool = True) -> CropSamples:
    """Training crops of ``records``: all their ground-truth boxes, plus the manifest's
    detections on those images matched by IoU (see the module docstring)."""
    per_image_dets: dict[str, np.ndarray] = {}
    if detections is not None and len(detections):
        stills = detections.frames < 0
        for source in np.unique(detections.sources[stills]):
            rows = stills & (detections.sources == source)
            per_image_dets[os.path.realpath(source)] = detections.boxes[rows]
    image_index, boxes, pids = [], [], []
    for i, record in enumerate(records):
        image_boxes, image_pids = [record.boxes], [record.pids]
        dets = per_image_dets.get(os.path.realpath(record.path))
        if dets is not None:
            keep, det_pids = match_detections(record.boxes, record.pids, dets, iou)
            image_boxes.append(dets[keep])
            image_pids.append(det_pids[keep])
        n = sum(len(b) for b in image_boxes)
        image_index.append(np.full(n, i, np.int64))
        boxes.extend(image_boxes)
        pids.extend(image_pids)
    image_index = np.concatenate(image_index) if image_index else np.zeros(0, np.int64)
    boxes = np.concatenate(boxes).astype(np.float32) if boxes else np.zeros((0, 4), np.float32)
    pids = np.concatenate(pids) if pids else np.zeros(0, np.int64)
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if not use_unlabeled:
        valid &= pids != UNLABELED_PID
    image_index, boxes, pids = image_index[valid], boxes[valid], pids[valid]
    pid_values = np.unique(pids[pids != UNLABELED_PID])
    labels = np.where(pids == UNLABELED_PID, UNLABELED_PID,
                      np.searchsorted(pid_values, pids)).astype(np.int64)
    return CropSamples([r.path for r in records], image_index, boxes, labels, pid_values)


def context_regions(boxes: np.ndarray, sizes: np.ndarray, context: float = CONTEXT) -> np.ndarray:
    """Boxes float [N, 4] grown by ``context`` of their size on each side, rounded outwards and
    clipped to their image sizes int [N, 2] (height, width) -> int64 [N, 4]."""
    wh = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1)
    grown = boxes + context * wh * np.array([-1, -1, 1, 1], np.float32)
    regions = np.concatenate([np.floor(grown[:, :2]), np.ceil(grown[:, 2:])], axis=1)
    limits = np.stack([sizes[:, 1], sizes[:, 0]] * 2, axis=1)
    regions = np.clip(regions, 0, limits).astype(np.int64)
    regions[:, 2:] = np.maximum(regions[:, 2:], regions[:, :2] + 1)
    return regions


class CropStore:
    """Person regions (box plus context) of ``samples``, decoded once and kept in memory.

    ``get(i)`` -> (region uint8 [h, w, 3], box float32 [4] in region coordinates). Regions are
    shrunk so that the box is at most ``MAX_CACHE_SCALE`` times the model input height. With
    ``cache=False`` every call decodes the image again (for datasets too large for memory).
    """

    def __init__(self, samples: CropSamples, input_height: int, cache: bool = True,
                 threads: int = 4, progress: bool = True) -> None:
        self.samples = samples
        self.input_height = input_height
        self.cache: list[tuple[np.ndarray, np.ndarray]] | None = None
        if cache:
            self.cache = [None] * len(samples)  # type: ignore[list-item]
            used = np.unique(samples.image_index)
            with ThreadPoolExecutor(threads) as pool:
                decoded = pool.map(self._image_regions, used)
                if progress:
                    from psearch.core.progress import progress_bar

                    decoded = progress_bar(decoded, total=len(used), desc="caching crops",
                                           unit="img")
                for rows, regions in decoded:
                    for row, region in zip(rows, regions, strict=True):
                        self.cache[row] = region

    def __len__(self) -> int:
        return len(self.samples)

    def _image_regions(self, image_i: int) -> tuple[np.ndarray, list]:
        rows = np.flatnonzero(self.samples.image_index == image_i)
        image = read_image(self.samples.images[image_i])
        return rows, [self._region(image, self.samples.boxes[r]) for r in rows]

    def _region(self, image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sizes = np.array([image.shape[:2]])
        x1, y1, x2, y2 = context_regions(box[None], sizes)[0]
        region, local = image[y1:y2, x1:x2], box - np.array([x1, y1, x1, y1], np.float32)
        scale = min(1.0, MAX_CACHE_SCALE * self.input_height / max(box[3] - box[1], 1.0))
        if scale < 1.0:
            size = (max(1, round(region.shape[0] * scale)), max(1, round(region.shape[1] * scale)))
            region, local = resize_crop(region, size), local * scale
        return np.ascontiguousarray(region), local.astype(np.float32)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if self.cache is not None:
            return self.cache[i]
        image = read_image(self.samples.images[self.samples.image_index[i]])
        return self._region(image, self.samples.boxes[i])


def estimate_cache_mb(samples: CropSamples, input_height: int) -> float:
    """Memory the cached regions of ``samples`` would take, in MiB (an upper bound)."""
    wh = samples.boxes[:, 2:] - samples.boxes[:, :2]
    scale = np.minimum(1.0, MAX_CACHE_SCALE * input_height / np.maximum(wh[:, 1], 1.0))
    area = (wh * (1 + 2 * CONTEXT) * scale[:, None] + 1).prod(axis=1)
    return float(area.sum() * 3 / 2**20)


class CropDataset(Dataset):
    """Items: (uint8 tensor [3, H, W] of a crop at the model input size, label int).

    ``augment``: box jitter (shift and scale by up to ``jitter`` of the box size, within the
    cached context), horizontal flip, colour jitter and random erasing; else the exact box.
    """

    def __init__(self, store: CropStore, input_size: tuple[int, int], augment: bool = False,
                 jitter: float = 0.1, color_jitter: float = 0.2, erasing: float = 0.5) -> None:
        self.store = store
        self.input_size = input_size
        self.augment = augment
        self.jitter = jitter
        steps = [v2.RandomHorizontalFlip()]
        if color_jitter > 0:
            steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
        if erasing > 0:
            steps.append(v2.RandomErasing(p=erasing, value=list(ERASE_VALUE)))
        self.transform = v2.Compose(steps)

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        region, box = self.store.get(i)
        if self.augment and self.jitter > 0:
            box = jitter_box(box, self.jitter, region.shape[:2])
        x1, y1 = int(box[0]), int(box[1])
        x2, y2 = max(x1 + 1, int(np.ceil(box[2]))), max(y1 + 1, int(np.ceil(box[3])))
        crop = resize_crop(region[y1:y2, x1:x2], self.input_size)
        image = torch.from_numpy(crop).permute(2, 0, 1).contiguous()
        if self.augment:
            image = self.transform(image)
        return image, int(self.store.samples.labels[i])


def jitter_box(box: np.ndarray, jitter: float, size: tuple[int, int]) -> np.ndarray:
    """Shift the box by up to ``jitter`` of its size and scale it by 1 +- ``jitter``; clip to
    ``size`` (height, width). Uses torch's RNG (seeded per DataLoader worker)."""
    w, h = box[2] - box[0], box[3] - box[1]
    shift_x, shift_y, scale = (torch.rand(3).numpy() * 2 - 1) * jitter
    cx, cy = (box[0] + box[2]) / 2 + shift_x * w, (box[1] + box[3]) / 2 + shift_y * h
    w, h = w * (1 + scale), h * (1 + scale)
    out = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32)
    return np.clip(out, 0, [size[1] - 1, size[0] - 1, size[1], size[0]]).astype(np.float32)


class IdentityBalancedSampler(Sampler[list[int]]):
    """Batches of ``p`` identities x ``k`` crops each, plus ``unlabeled`` random unlabeled crops.

    Each epoch every identity's crops are shuffled and cut into groups of ``k`` (the last group
    filled up by drawing again from that identity, as is an identity with fewer than ``k``
    crops); a batch takes one group from each of ``p`` distinct identities, drawn at random
    among those with groups left (weighted by how many they have left), until fewer than ``p``
    identities have groups left. ``len()`` is the most batches an epoch can have.
    """

    def __init__(self, labels: np.ndarray, p: int, k: int, unlabeled: int = 0,
                 seed: int = 0) -> None:
        labels = np.asarray(labels)
        self.by_id = [np.flatnonzero(labels == c) for c in np.unique(labels[labels >= 0])]
        if not self.by_id:
            raise PsearchError("identity-balanced sampling needs labeled training identities")
        self.unlabeled_rows = np.flatnonzero(labels < 0)
        self.p, self.k = min(p, len(self.by_id)), k
        self.unlabeled = unlabeled if len(self.unlabeled_rows) else 0
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        groups = np.array([-(-len(rows) // self.k) for rows in self.by_id])
        return max(1, int(groups.sum()) // self.p)

    def __iter__(self):
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        groups = []
        for rows in self.by_id:
            order = rng.permutation(rows)
            short = -len(order) % self.k
            order = np.concatenate([order, rng.choice(rows, short)])
            groups.append(list(order.reshape(-1, self.k)))
        for _ in range(len(self)):
            left = np.flatnonzero([len(g) > 0 for g in groups])
            if len(left) < self.p:
                return
            sizes = np.array([len(groups[c]) for c in left], float)
            chosen = rng.choice(left, self.p, replace=False, p=sizes / sizes.sum())
            batch = np.concatenate([groups[c].pop() for c in chosen])
            if self.unlabeled:
                batch = np.concatenate([batch, rng.choice(self.unlabeled_rows, self.unlabeled)])
            yield batch.tolist()
