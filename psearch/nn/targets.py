"""Detection targets of the train split, shared by the detector and the joint models.

Each image gives ``(uint8 tensor [3, H, W], target)`` with target ``{"boxes": float [N, 4],
"labels": int64 [N] (all 1: person), "pids": int64 [N]}``. ``pids`` is the person identity of
each box, ``UNLABELED_PID`` (-1) for an unlabeled person; it has its own key because
torchvision's ``RoIHeads`` reads a label of -1 as "ignore this box".
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from psearch.core.media import read_image
from psearch.data.annotations import UNLABELED_PID, ImageRecord


def identity_table(records: list[ImageRecord]) -> np.ndarray:
    """The sorted labeled pids of ``records``: int64 [L]; pid ``pid_values[k]`` is class k."""
    pids = np.concatenate([r.pids for r in records]) if records else np.zeros(0, np.int64)
    return np.unique(pids[pids != UNLABELED_PID])


def pid_classes(pids: np.ndarray, pid_values: np.ndarray) -> np.ndarray:
    """Class index of each pid in ``pid_values`` (int64), -1 for unlabeled or unknown pids."""
    index = np.clip(np.searchsorted(pid_values, pids), 0, max(0, len(pid_values) - 1))
    known = (len(pid_values) > 0) & (pids != UNLABELED_PID)
    known = known & (pid_values[index] == pids) if len(pid_values) else known
    return np.where(known, index, UNLABELED_PID).astype(np.int64)


class DetectionTrainSet(Dataset):
    """Train images as (uint8 tensor [3, H, W], target); see the module docstring.

    Boxes are clipped to the image; boxes under one pixel wide or high are dropped. With
    probability ``hflip`` the image and its boxes are mirrored. With ``pid_values`` (see
    ``identity_table``) ``pids`` are class indices 0..L-1 instead of the dataset's pids.
    """

    def __init__(self, records: list[ImageRecord], hflip: float = 0.5,
                 pid_values: np.ndarray | None = None) -> None:
        self.records, self.hflip, self.pid_values = records, hflip, pid_values

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        record = self.records[i]
        image = torch.from_numpy(read_image(record.path)).permute(2, 0, 1)
        h, w = image.shape[1:]
        boxes = torch.from_numpy(record.boxes.copy())
        pids = record.pids if self.pid_values is None else pid_classes(record.pids,
                                                                       self.pid_values)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        keep = ((boxes[:, 2:] - boxes[:, :2]) >= 1).all(1)
        boxes, pids = boxes[keep], torch.from_numpy(np.asarray(pids, np.int64))[keep]
        if torch.rand(()) < self.hflip:
            image = image.flip(-1)
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        return image, {"boxes": boxes, "labels": torch.ones(len(boxes), dtype=torch.int64),
                       "pids": pids}


def collate(batch: list) -> tuple[list, list]:
    """A batch as (list of images, list of targets): images differ in size."""
    return [b[0] for b in batch], [b[1] for b in batch]
