"""Ground-truth-box runs of any ``roles.Embedder`` on a dataset's test split.

``ground_truth_results``: every test image's ground-truth boxes as detections of score 1.0 with
the embedder's features (the upper bound a perfect detector allows); ``embed_query_boxes``: the
query boxes' features. A "crops" embedder (re-ID) embeds the boxes' crops, batched over
``CROP_IMAGES_PER_CHUNK`` images; a "frames" embedder (joint models) pools them on their frames
(``embed_images_boxes``), ``FRAME_IMAGES_PER_CHUNK`` images at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from psearch.core.boxes import crop_boxes
from psearch.core.media import read_image
from psearch.core.progress import progress_bar
from psearch.data.annotations import PersonSearchDataset
from psearch.evaluation.results import SearchResults
from psearch.roles import Embedder

CROP_IMAGES_PER_CHUNK = 32
"""Images decoded per step for a "crops" embedder: their crops are embedded in one call."""
FRAME_IMAGES_PER_CHUNK = 16
"""Images decoded per step for a "frames" embedder."""


def decoded_chunks(paths: list, size: int, threads: int, progress: bool, desc: str
            ) -> Iterator[tuple[int, list[np.ndarray]]]:
    """(start, decoded images) of consecutive chunks of ``size`` paths, decoded by threads."""
    bar = progress_bar(total=len(paths), desc=desc, unit="img", enabled=progress)
    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(paths), size):
            images = list(pool.map(read_image, paths[start:start + size]))
            yield start, images
            bar.update(len(images))
    bar.close()


def embed_image_boxes(embedder: Embedder, paths: list, boxes: list[np.ndarray],
                      progress: bool = False, desc: str = "embedding") -> list[np.ndarray]:
    """Features [n_i, D] of ``boxes[i]`` float [n_i, 4] in image ``paths[i]``, for every i."""
    out: list[np.ndarray] = []
    if embedder.source == "frames":
        for start, images in decoded_chunks(paths, FRAME_IMAGES_PER_CHUNK, 2, progress, desc):
            out.extend(embedder.embed_images_boxes(images, boxes[start:start + len(images)]))
        return out
    for start, images in decoded_chunks(paths, CROP_IMAGES_PER_CHUNK, 4, progress, desc):
        chunk = boxes[start:start + len(images)]
        crops = [c for image, b in zip(images, chunk, strict=True) for c in crop_boxes(image, b)]
        feats = embedder.embed_crops(crops)
        out.extend(np.split(feats, np.cumsum([len(b) for b in chunk])[:-1]))
    return out


def embed_query_boxes(embedder: Embedder, dataset: PersonSearchDataset,
                      progress: bool = False) -> np.ndarray:
    """Features float32 [Q, D] of the dataset's query boxes (row q = ``dataset.queries[q]``)."""
    queries = dataset.queries
    feats = embed_image_boxes(embedder, [dataset.image(q.image).path for q in queries],
                              [q.box[None] for q in queries], progress, "eval queries")
    return np.concatenate(feats) if feats else np.zeros((0, int(embedder.dim)), np.float32)


def ground_truth_results(embedder: Embedder, dataset: PersonSearchDataset,
                         progress: bool = False) -> SearchResults:
    """Every ground-truth box of the test images as a detection of score 1.0, with features."""
    gallery = dataset.gallery
    feats = embed_image_boxes(embedder, [r.path for r in gallery], [r.boxes for r in gallery],
                              progress, "eval gallery")
    detections = {r.name: (r.boxes, np.ones(len(r.boxes), np.float32), f)
                  for r, f in zip(gallery, feats, strict=True)}
    return SearchResults.from_per_image(detections, embed_query_boxes(embedder, dataset, progress))
