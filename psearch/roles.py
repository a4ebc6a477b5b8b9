"""The roles a model plays in psearch, as small protocols every stage uses.

A ``Detector`` finds people in images; an ``Embedder`` turns the people at given boxes of an
image into unit-norm vectors (``source``: "crops" for the cascade's re-ID network, which sees
only the box's crop, "frames" for joint models, which need the whole image); a
``DetectorEmbedder`` does both in one pass; a ``PairScorer`` (QEEPS) searches a query in
gallery images pair by pair. Stages take role objects and never ask which model they hold;
``psearch.registry`` turns a checkpoint into the object for a role.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

Detections = list[tuple[np.ndarray, np.ndarray]]
"""Per image: boxes float32 [K, 4] (x1, y1, x2, y2) and scores float32 [K], best first."""

EmbedderSource = Literal["crops", "frames"]

@runtime_checkable
class Detector(Protocol):
    """Finds people: RGB uint8 images [H, W, 3] -> per image (boxes [K, 4], scores [K])."""

    def detect(self, images: list[np.ndarray], score_thresh: float = 0.5,
               max_detections: int | None = None) -> Detections: ...

    def describe(self) -> dict[str, Any]: ...


@runtime_checkable
class Embedder(Protocol):
    """Embeds people: the boxes [N, 4] of an RGB uint8 image -> float32 [N, dim], unit norm.

    ``source`` says what the model looks at: "crops" (the cascade's re-ID network; it also
    offers ``embed_crops(crops)``, a list of RGB crops -> [N, dim]) or "frames" (joint models,
    which need the whole image; they also offer ``embed_images_boxes(images, boxes)``, per
    image [K_i, dim], batched over the images).
    """

    dim: int
    source: EmbedderSource

    def embed_boxes(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


@runtime_checkable
class PairScorer(Protocol):
    """Searches one query in gallery images pair by pair (query-guided models such as QEEPS):
    per gallery image boxes [K, 4], detector scores [K] and match scores [K], best first."""

    def search_pairs(self, query: np.ndarray, box: Any, galleries: list[np.ndarray]
                     ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]: ...

    def describe(self) -> dict[str, Any]: ...


@runtime_checkable
class DetectorEmbedder(Detector, Embedder, Protocol):
    """Detects and embeds in one pass (joint models): per image (boxes, scores, embeddings)."""

    def detect_and_embed(self, images: list[np.ndarray], score_thresh: float = 0.5,
                         max_detections: int | None = None
                         ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]: ...
