"""Score a gallery directory with a dataset's standard protocols (``psearch evaluate-gallery``).

The gallery must have been built from the dataset's test images. Its rows are mapped to dataset
images by the file name of their source; each row's vector comes out of the FAISS index (exact
for flat, IVF-flat and HNSW; PQ-decoded for IVF-PQ); every query box is embedded with the
gallery's re-ID model as ``psearch evaluate`` embeds it (``psearch.evaluation.runners``);
``psearch.evaluation.evaluate`` then runs the same protocols as ``psearch evaluate``. The
cascade's mAP thus comes from the very files a user searches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from psearch.core.errors import PsearchError
from psearch.data.annotations import PersonSearchDataset
from psearch.evaluation import SearchResults
from psearch.evaluation.runners import embed_query_boxes
from psearch.gallery.store import Gallery
from psearch.roles import Embedder


def gallery_results(gallery: Gallery, dataset: PersonSearchDataset, embedder: Embedder,
                    progress: bool = False) -> tuple[SearchResults, int]:
    """The gallery's detections of the dataset's test images plus embedded queries.

    Returns (results over every test image, number of gallery rows that are not test images).
    """
    rows = gallery.rows
    table_names = np.array([Path(s).name for s in rows.sources.tolist()], dtype=str)
    row_names = table_names[rows.source_ids]
    test_names = np.array([r.name for r in dataset.gallery], dtype=str)
    position = {name: i for i, name in enumerate(test_names.tolist())}
    row_image = np.array([position.get(n, -1) for n in row_names.tolist()], dtype=np.int64)
    keep = (row_image >= 0) & (rows.frames < 0)
    if not keep.any():
        raise PsearchError(f"the gallery has no detections of the test images of {dataset.root} "
                           "(rows are matched by source file name); index the test images")
    features = gallery.vectors()[keep]
    results = SearchResults(image_names=test_names, det_image=row_image[keep],
                            boxes=rows.boxes[keep], scores=rows.scores[keep],
                            features=features, query_features=embed_query_boxes(embedder, dataset,
                                                                                progress))
    results.validate(f"gallery of {len(rows)} rows")
    return results, int((~keep).sum())
