"""One call from an embeddings directory to a saved gallery: what ``psearch index`` does."""

from __future__ import annotations

import os
from pathlib import Path

from psearch.core.errors import PsearchError
from psearch.gallery.index import DEFAULT_TARGET_RECALL
from psearch.gallery.inputs import load_gallery_input, new_rows
from psearch.gallery.store import Gallery, is_gallery


def index_embeddings(embeddings_dir: str | os.PathLike, out: str | os.PathLike,
                     manifest_dir: str | os.PathLike | None = None, index: str = "auto",
                     add: bool = False, overwrite: bool = False, nlist: int | None = None,
                     pq_m: int | None = None,
                     target_recall: float = DEFAULT_TARGET_RECALL) -> Gallery:
    """Build the gallery ``out`` from ``embeddings_dir`` (+ its detect directory), or append to
    it (``add``: only rows the gallery does not hold yet, see ``inputs.new_rows``; an IVF index
    may retrain, see ``index.retrain_reason``); an existing gallery is replaced only with
    ``overwrite``. Returns the gallery.

    >>> index_embeddings("emb/", "gallery/")                    # manifest named by emb/
    >>> index_embeddings("emb2/", "gallery/", add=True)
    """
    out = Path(out)
    if add and overwrite:
        raise PsearchError("--add and --overwrite are exclusive")
    if add and not is_gallery(out):
        raise PsearchError(f"{out}: no gallery to --add to (build it first without --add)")
    if not add and is_gallery(out) and not overwrite:
        raise PsearchError(f"{out}: a gallery already exists; pass --add to append to it or "
                           "--overwrite to replace it")
    if not add and out.exists() and not is_gallery(out) and not _only_leftovers(out):
        raise PsearchError(f"{out}: exists and is not a psearch gallery; choose another --out")
    data = load_gallery_input(embeddings_dir, manifest_dir)
    if add:
        gallery = Gallery.load(out)
        data = new_rows(data, gallery.header["inputs"])
        if len(data.vectors) == 0:
            return gallery  # nothing new: the gallery is left as it is
        gallery.add(data.vectors, data.rows, reid=data.reid, inputs=[data.provenance])
    else:
        gallery = Gallery.build(data.vectors, data.rows, index=index, reid=data.reid,
                                nlist=nlist, pq_m=pq_m, target_recall=target_recall,
                                inputs=[data.provenance])
    gallery.save(out)
    return gallery


def _only_leftovers(directory: Path) -> bool:
    """True for an empty directory or one holding only files of an interrupted first build."""
    if not directory.is_dir():
        return False
    return all(p.match("index-*.faiss") or p.match("rows-*.npz") or p.match(".*.tmp")
               for p in directory.iterdir())
