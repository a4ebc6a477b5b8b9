"""Search results: what a gallery run produced for a dataset's test images and queries.

On disk a results file is a NumPy ``.npz`` archive (no pickled objects) with these arrays:

==================  ===============  =========================================================
array               shape, dtype     meaning
==================  ===============  =========================================================
``image_names``     [M] str          every test image that was processed, with or without
                                     detections (a test image not listed counts as processed
                                     with no detection, and ``psearch evaluate`` warns)
``det_image``       [N] int64        row of ``image_names`` each detection belongs to
``boxes``           [N, 4] float32   detection boxes (x1, y1, x2, y2) in pixels
``scores``          [N] float32      detection confidences; the protocols drop those < 0.5
``features``        [N, D] float32   L2-normalized re-ID feature of each detection
``query_features``  [Q, D] float32   L2-normalized feature of query box q, where row q is
                                     ``dataset.queries[q]`` (the loader's query order)
``version``         [] int64         format version, currently 1
==================  ===============  =========================================================

``features`` and ``query_features`` are both present or both absent: without them a file holds
detections only and supports the detection protocol alone. Detections of one image may appear
in any rows; their relative order is kept (it decides ties, as in the reference code).

>>> save_results("R.npz", SearchResults.from_per_image({"s1.jpg": (boxes, scores, feats)}, q))
>>> results = load_results("R.npz"); results.check_dataset(dataset, "R.npz")
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from psearch.core.errors import PsearchError
from psearch.core.io import atomic_path
from psearch.data.annotations import PersonSearchDataset

RESULTS_VERSION = 1
REQUIRED_ARRAYS = ("image_names", "det_image", "boxes", "scores")
FEATURE_ARRAYS = ("features", "query_features")
NORM_TOLERANCE = 1e-3
"""How far from 1 the norm of a feature may be before it is rejected as not L2-normalized."""


@dataclass
class SearchResults:
    """Detections (and optionally re-ID features) of test images, plus query features.

    image_names: str [M]; det_image: int64 [N] rows of ``image_names``; boxes: float32 [N, 4]
    (x1, y1, x2, y2); scores: float32 [N]; features: float [N, D] or None;
    query_features: float [Q, D] or None (row q is ``dataset.queries[q]``).
    """

    image_names: np.ndarray
    det_image: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    features: np.ndarray | None = None
    query_features: np.ndarray | None = None

    @classmethod
    def from_per_image(
        cls,
        detections: Mapping[str, tuple[np.ndarray, ...]],
        query_features: np.ndarray | None = None,
    ) -> SearchResults:
        """Build from ``{image name: (boxes [n, 4], scores [n][, features [n, D]])}``.

        Give features for every image (and ``query_features`` [Q, D]) or for none.
        """
        names = list(detections)
        per_image = [_image_arrays(name, detections[name]) for name in names]
        if len({feats is None for _, _, feats in per_image}) > 1:
            raise PsearchError("detections: some images have features and others do not")
        features = None
        if per_image and per_image[0][2] is not None:
            with_dets = [feats for _, scores, feats in per_image if len(scores)]
            dim = _feature_dim(with_dets, query_features)
            features = np.concatenate(with_dets or [np.zeros((0, dim), np.float32)])
        results = cls(
            image_names=np.asarray(names, dtype=str),
            det_image=np.repeat(np.arange(len(names)), [len(s) for _, s, _ in per_image]),
            boxes=np.concatenate([b for b, _, _ in per_image] or [np.zeros((0, 4), np.float32)]),
            scores=np.concatenate([s for _, s, _ in per_image] or [np.zeros(0, np.float32)]),
            features=features,
            query_features=query_features,
        )
        results.validate("detections")
        return results

    @property
    def has_features(self) -> bool:
        return self.features is not None

    def validate(self, source: str) -> None:
        """Check shapes, dtypes and values; raise ``PsearchError`` naming ``source`` if wrong.

        Normalizes dtypes in place: names to str, indices to int64, boxes/scores to float32,
        features to a floating dtype (float32 unless given as float64).
        """
        self.image_names = np.asarray(self.image_names)
        if self.image_names.ndim != 1 or self.image_names.dtype.kind not in "US":
            raise PsearchError(f"{source}: image_names must be a 1-D array of strings")
        self.image_names = self.image_names.astype(str)
        if len(set(self.image_names.tolist())) != len(self.image_names):
            raise PsearchError(f"{source}: image_names lists an image more than once")
        n = _check_rows(source, "boxes", self.boxes, (4,))
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(n, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        self.det_image = np.asarray(self.det_image)
        for name, arr in (("scores", self.scores), ("det_image", self.det_image)):
            if arr.shape != (n,):
                raise PsearchError(f"{source}: {name} has shape {arr.shape}, expected ({n},)")
        if self.det_image.dtype.kind not in "iu":
            raise PsearchError(f"{source}: det_image must hold integers")
        self.det_image = self.det_image.astype(np.int64)
        if n and (self.det_image.min() < 0 or self.det_image.max() >= len(self.image_names)):
            raise PsearchError(f"{source}: det_image points outside image_names")
        for name, arr in (("boxes", self.boxes), ("scores", self.scores)):
            if not np.isfinite(arr).all():
                raise PsearchError(f"{source}: {name} has non-finite values")
        if (self.features is None) != (self.query_features is None):
            raise PsearchError(f"{source}: features and query_features must come together")
        if self.features is not None:
            self._validate_features(source, n)

    def _validate_features(self, source: str, n: int) -> None:
        if _check_rows(source, "features", self.features, None) != n:
            raise PsearchError(f"{source}: {n} detections but {len(self.features)} feature rows")
        _check_rows(source, "query_features", self.query_features, None)
        feats, queries = np.asarray(self.features), np.asarray(self.query_features)
        if queries.shape[1] != feats.shape[1]:
            raise PsearchError(
                f"{source}: query_features have dimension {queries.shape[1]} but detection "
                f"features have {feats.shape[1]}"
            )
        dtype = np.float64 if np.float64 in (feats.dtype, queries.dtype) else np.float32
        self.features, self.query_features = feats.astype(dtype), queries.astype(dtype)
        for name, arr in (("features", self.features), ("query_features", self.query_features)):
            if not np.isfinite(arr).all():
                raise PsearchError(f"{source}: {name} has non-finite values")
            norms = np.linalg.norm(arr, axis=1)
            bad = np.flatnonzero(np.abs(norms - 1) > NORM_TOLERANCE)
            if bad.size:
                raise PsearchError(
                    f"{source}: {name} row {bad[0]} has norm {norms[bad[0]]:.4g}; "
                    "features must be L2-normalized"
                )

    def check_dataset(self, dataset: PersonSearchDataset, source: str) -> list[str]:
        """Check these results fit ``dataset``; return the test images they do not list.

        Raises ``PsearchError`` for image names that are not test images of the dataset and for a
        query count that differs from ``len(dataset.queries)``.
        """
        test_names = {r.name for r in dataset.gallery}
        unknown = [name for name in self.image_names.tolist() if name not in test_names]
        if unknown:
            raise PsearchError(
                f"{source}: {len(unknown)} image name(s) are not test images of {dataset.root}, "
                f"e.g. {unknown[0]!r}"
            )
        if self.query_features is not None and len(self.query_features) != len(dataset.queries):
            raise PsearchError(
                f"{source}: {len(self.query_features)} query features but the dataset has "
                f"{len(dataset.queries)} queries"
            )
        listed = set(self.image_names.tolist())
        return [r.name for r in dataset.gallery if r.name not in listed]


def as_results(
    detections: SearchResults | Mapping[str, tuple[np.ndarray, ...]],
    query_features: np.ndarray | None = None,
) -> SearchResults:
    """``detections`` as ``SearchResults``: passed through, or built from a per-image mapping."""
    if isinstance(detections, SearchResults):
        if query_features is not None:
            raise PsearchError(
                "give query features inside SearchResults or with a mapping, not both"
            )
        return detections
    return SearchResults.from_per_image(detections, query_features)


def save_results(path: str | os.PathLike, results: SearchResults) -> None:
    """Validate ``results`` and write them to ``path`` (.npz, atomically)."""
    results.validate(str(path))
    arrays = {
        "image_names": results.image_names,
        "det_image": results.det_image,
        "boxes": results.boxes,
        "scores": results.scores,
        "version": np.int64(RESULTS_VERSION),
    }
    if results.features is not None:
        arrays["features"] = results.features
        arrays["query_features"] = results.query_features
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def load_results(path: str | os.PathLike) -> SearchResults:
    """Read and validate a results file written by ``save_results``."""
    source = str(path)
    if not os.path.isfile(path):
        raise PsearchError(f"{source}: no such results file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise PsearchError(f"{source}: not a readable .npz results file ({exc})") from None
    missing = [name for name in REQUIRED_ARRAYS if name not in arrays]
    if missing:
        raise PsearchError(
            f"{source}: missing array {missing[0]!r} (a results file holds "
            f"{', '.join(REQUIRED_ARRAYS)} and optionally {', '.join(FEATURE_ARRAYS)})"
        )
    version = int(arrays.get("version", RESULTS_VERSION))
    if version != RESULTS_VERSION:
        raise PsearchError(
            f"{source}: results format version {version}; expected {RESULTS_VERSION}"
        )
    results = SearchResults(
        **{name: arrays[name] for name in REQUIRED_ARRAYS},
        **{name: arrays.get(name) for name in FEATURE_ARRAYS},
    )
    results.validate(source)
    return results


def _check_rows(source: str, name: str, arr: np.ndarray, trailing: tuple[int, ...] | None) -> int:
    """Check ``arr`` is numeric with the ``trailing`` dimensions; return its number of rows."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiu":
        raise PsearchError(f"{source}: {name} must be numeric, not {arr.dtype}")
    if arr.ndim != 2 or (trailing is not None and arr.shape[1:] != trailing):
        expected = f"(N, {', '.join(map(str, trailing))})" if trailing else "(N, D)"
        raise PsearchError(f"{source}: {name} has shape {arr.shape}, expected {expected}")
    return arr.shape[0]


def _image_arrays(
    name: str, value: tuple[np.ndarray, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One image's (boxes [n, 4], scores [n], features [n, D] or None) from a mapping value."""
    value = tuple(value)
    where = f"detections[{name!r}]"
    if len(value) not in (2, 3):
        raise PsearchError(f"{where}: expected (boxes, scores[, features]), got {len(value)} items")
    scores = np.asarray(value[1], dtype=np.float32).reshape(-1)
    boxes = np.asarray(value[0], dtype=np.float32)
    if boxes.size != 4 * len(scores):
        raise PsearchError(f"{where}: boxes of shape {boxes.shape} for {len(scores)} scores")
    if len(value) == 2:
        return boxes.reshape(-1, 4), scores, None
    feats = np.asarray(value[2])
    if len(scores) and (feats.ndim != 2 or len(feats) != len(scores)):
        raise PsearchError(f"{where}: features of shape {feats.shape} for {len(scores)} scores")
    return boxes.reshape(-1, 4), scores, feats


def _feature_dim(features: list[np.ndarray], query_features: np.ndarray | None) -> int:
    """The one dimension D of per-image ``features`` [n_i, D] (or of the queries if none)."""
    dims = {f.shape[1] for f in features}
    if query_features is not None:
        dims.add(np.asarray(query_features).shape[-1])
    if len(dims) > 1:
        raise PsearchError(f"detections: features of different dimensions {sorted(dims)}")
    return dims.pop() if dims else 0


@dataclass
class GalleryDetections:
    """The kept detections of a dataset's test images, grouped by image.

    Rows of image ``m`` (``dataset.gallery[m]``) are ``start[m] : start[m] + count[m]``, in their
    order in the results. boxes: float32 [K, 4]; scores: float32 [K]; features: [K, D] or None;
    start, count: int64 [M].
    """

    boxes: np.ndarray
    scores: np.ndarray
    features: np.ndarray | None
    start: np.ndarray
    count: np.ndarray

    def rows(self, m: int) -> slice:
        return slice(int(self.start[m]), int(self.start[m] + self.count[m]))


def group_by_gallery(
    results: SearchResults, dataset: PersonSearchDataset, det_thresh: float
) -> GalleryDetections:
    """Keep the detections with score >= ``det_thresh`` and group them by ``dataset.gallery`` image.

    Raises ``PsearchError`` if a results image is not a test image of ``dataset``.
    """
    gallery_index = {r.name: m for m, r in enumerate(dataset.gallery)}
    image_to_gallery = np.array(
        [gallery_index.get(name, -1) for name in results.image_names.tolist()], dtype=np.int64
    )
    if (image_to_gallery < 0).any():
        results.check_dataset(dataset, "results")
    det_gallery = image_to_gallery[results.det_image]
    kept = np.flatnonzero(results.scores >= det_thresh)
    order = kept[np.argsort(det_gallery[kept], kind="stable")]
    count = np.bincount(det_gallery[order], minlength=len(dataset.gallery)).astype(np.int64)
    return GalleryDetections(
        boxes=results.boxes[order],
        scores=results.scores[order],
        features=None if results.features is None else results.features[order],
        start=np.cumsum(count) - count,
        count=count,
    )
