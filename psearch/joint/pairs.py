"""Pair sampling of I-Net / DC-I-Net: each training step sees images two by two, every pair
sharing at least one labeled person (their unlabeled people come along).

>>> sampler = PairBatchSampler([r.pids for r in records], pairs_per_batch=1, seed=0)
>>> loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from psearch.core.errors import PsearchError
from psearch.data.annotations import UNLABELED_PID


def partners(pids: Sequence[np.ndarray]) -> list[np.ndarray]:
    """For each image, the other images that share a labeled pid with it (sorted indices)."""
    by_pid: dict[int, list[int]] = {}
    for i, ids in enumerate(pids):
        for pid in np.unique(ids[ids != UNLABELED_PID]):
            by_pid.setdefault(int(pid), []).append(i)
    out: list[set[int]] = [set() for _ in pids]
    for images in by_pid.values():
        for i in images:
            out[i].update(images)
    return [np.array(sorted(s - {i}), np.int64) for i, s in enumerate(out)]


class PairBatchSampler(Sampler[list[int]]):
    """Batches of ``pairs_per_batch`` image pairs (2 x that many indices, pair by pair).

    The images that have a partner (``partners``) are visited in a random order; each visited
    image not yet used in this round is paired with a random partner (preferring partners not
    used yet); rounds follow each other until the epoch holds ``images_per_epoch`` images
    (default: as many as there are such images), so that an epoch of pairs costs what an epoch
    of shuffled images does. Images without any partner never appear. ``epoch`` seeds the
    order (set it to resume exactly).
    """

    def __init__(self, pids: Sequence[np.ndarray], pairs_per_batch: int = 1,
                 seed: int = 0, images_per_epoch: int | None = None) -> None:
        self.partners = partners(pids)
        self.pairable = np.array([i for i, p in enumerate(self.partners) if len(p)], np.int64)
        if not len(self.pairable):
            raise PsearchError("pair sampling needs two train images that share a labeled "
                               "person; no identity is seen in two images")
        self.pairs_per_batch, self.seed, self.epoch = max(1, pairs_per_batch), seed, 0
        self.images_per_epoch = images_per_epoch or len(self.pairable)

    def __len__(self) -> int:
        return max(1, self.images_per_epoch // (2 * self.pairs_per_batch))

    def pairs(self, rng: np.random.Generator) -> list[tuple[int, int]]:
        """The epoch's pairs, in order."""
        used = np.zeros(len(self.partners), bool)
        out = []
        for i in rng.permutation(self.pairable):
            if used[i]:
                continue
            options = self.partners[i]
            fresh = options[~used[options]]
            j = int(rng.choice(fresh if len(fresh) else options))
            used[[i, j]] = True
            out.append((int(i), j))
        return out

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        pairs = self.pairs(rng)
        while len(pairs) < len(self) * self.pairs_per_batch:  # the next round
            pairs += self.pairs(rng)
        for b in range(len(self)):
            chunk = pairs[b * self.pairs_per_batch:(b + 1) * self.pairs_per_batch]
            yield [i for pair in chunk for i in pair]
