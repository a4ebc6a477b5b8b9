"""Reading what the gallery is built from: a detect directory and an embeddings directory.

The embeddings directory (written by ``psearch embed`` or ``detect --embed``) is read by
``psearch.formats.embeddings.read_embeddings``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psearch.core.errors import PsearchError
from psearch.formats.embeddings import EMBEDDINGS_NAME, META_NAME, read_embeddings
from psearch.formats.manifest import Manifest, read_manifest
from psearch.gallery.rows import Rows


@dataclass
class GalleryInput:
    """Vectors float32 [N, D] with their rows, the embedder description and provenance."""

    vectors: np.ndarray
    rows: Rows
    reid: dict
    provenance: dict
    manifest: Manifest


def load_gallery_input(embeddings_dir: str | os.PathLike,
                       manifest_dir: str | os.PathLike | None = None) -> GalleryInput:
    """Join an embeddings directory with its detect directory (default: the one it names)."""
    vectors, info = read_embeddings(embeddings_dir)
    if manifest_dir is None:
        if not info.get("manifest"):
            raise PsearchError(f"{Path(embeddings_dir) / META_NAME}: names no manifest; "
                               "pass --manifest")
        manifest_dir = info["manifest"]
    manifest = read_manifest(manifest_dir)
    if len(manifest) != len(vectors):
        raise PsearchError(f"{Path(embeddings_dir) / EMBEDDINGS_NAME}: {len(vectors)} embeddings "
                           f"but {manifest.root} has {len(manifest)} detections; re-run "
                           "`psearch embed` on this manifest")
    reid = {key: info.get(key) for key in ("checkpoint", "checkpoint_sha256", "model")}
    provenance = {"manifest": str(manifest.root.resolve()),
                  "embeddings": str(Path(embeddings_dir).resolve()), "rows": len(vectors),
                  "rows_digest": manifest.digest()}
    return GalleryInput(vectors, Rows.from_manifest(manifest), reid, provenance, manifest)


def new_rows(data: GalleryInput, inputs: list[dict]) -> GalleryInput:
    """``data`` without the rows a gallery already took from the same embeddings directory.

    A gallery's ``inputs`` record each embeddings directory it indexed, with its row count and
    the digest of those rows; when they are still the first rows of ``data`` (the embeddings
    grew: ``psearch embed`` appended), only the rows after them are new. ``PsearchError`` when
    those rows changed since.
    """
    earlier = [i for i in inputs if i.get("embeddings") == data.provenance["embeddings"]]
    if not earlier:
        return data
    taken = max(int(i.get("rows", 0)) for i in earlier)
    digest = next(i.get("rows_digest") for i in earlier if int(i.get("rows", 0)) == taken)
    if taken > len(data.vectors) or digest != data.manifest.digest(taken):
        raise PsearchError(f"{data.provenance['embeddings']}: its first {taken} rows are in the "
                           "gallery already but have changed since; build a new gallery")
    return GalleryInput(data.vectors[taken:], data.rows.take(slice(taken, None)), data.reid,
                        data.provenance, data.manifest)


