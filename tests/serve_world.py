"""A small served gallery for the ``psearch serve`` tests: four scene images (three 'people'
each) and a 2 s WebM video (10 fps) in which one textured person walks in from frame 8.

``build_world(root)`` -> ServeWorld; the gallery holds the real embeddings of a tiny untrained
re-ID checkpoint, so a query of a gallery box finds that very box first (score 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from support import person_images, tiny_checkpoint

from psearch.core.io import file_sha256
from psearch.core.media import read_video_frame
from psearch.gallery.rows import Rows
from psearch.gallery.store import Gallery

FPS, N_FRAMES, FIRST, SIZE = 10.0, 20, 8, (160, 120)


class ServeWorld(NamedTuple):
    gallery: Path
    checkpoint: Path
    images: list
    video: Path
    video_boxes: dict  # frame -> box of the walking person


def walker_box(frame: int) -> np.ndarray:
    x = 20 + 3 * (frame - FIRST)
    return np.array([x, 20, x + 30, 100], np.float32)


def write_walk_video(path: Path) -> dict:
    texture = np.zeros((80, 30, 3), np.uint8)  # smooth red/blue bands: unlike the noise people
    texture[..., 0] = 200
    texture[::16, :, 2] = 255
    texture[:40, :, 1] = 120
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), FPS, SIZE)
    boxes = {}
    for f in range(N_FRAMES):
        frame = np.full((SIZE[1], SIZE[0], 3), 60, np.uint8)
        if f >= FIRST:
            x1, y1, x2, y2 = walker_box(f).astype(int)
            frame[y1:y2, x1:x2] = texture
            boxes[f] = walker_box(f)
        writer.write(frame)
    writer.release()
    return boxes


def build_world(root: Path) -> ServeWorld:
    from psearch.reid import ReidModel

    root.mkdir(parents=True, exist_ok=True)
    images = person_images(root / "images", n_images=4)
    checkpoint = tiny_checkpoint(root / "reid.pt")
    video = root / "walk.webm"
    video_boxes = write_walk_video(video)
    model = ReidModel.from_checkpoint(checkpoint, "cpu")
    from psearch.core.media import read_image

    vectors = [model.embed_boxes(read_image(p), b) for p, b in images]
    vectors += [model.embed_boxes(read_video_frame(video, f), b[None])
                for f, b in video_boxes.items()]
    n_img = sum(len(b) for _, b in images)
    sources = [str(p.resolve()) for p, b in images for _ in b] + [str(video.resolve())] * len(
        video_boxes)
    frames = [-1] * n_img + list(video_boxes)
    boxes = np.concatenate([b for _, b in images] + [np.stack(list(video_boxes.values()))])
    times = [np.nan] * n_img + [f / FPS for f in video_boxes]
    rows = Rows.from_columns(sources, frames, boxes, np.full(len(frames), 0.9),
                             [""] * len(frames), times, {str(video.resolve()): (FPS, 1.0)})
    reid = {"checkpoint": str(checkpoint.resolve()), "checkpoint_sha256": file_sha256(checkpoint),
            "model": "test_resnet"}
    Gallery.build(np.concatenate(vectors), rows, "flat", reid=reid).save(root / "gallery")
    return ServeWorld(root / "gallery", checkpoint, images, video, video_boxes)
