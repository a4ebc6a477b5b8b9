"""A re-ID network exported to ONNX (``psearch export onnx``), run by onnxruntime without torch.

The file carries its preprocessing contract as ONNX metadata (``psearch.*`` keys): crops are
resized to ``input_size`` (height, width) as ``ReidModel`` does, fed as RGB uint8 [N, 3, H, W];
the backbone's ``mean``/``std`` (recorded for reference) are applied inside the graph, and the
output is [N, dim], L2-normalised.

>>> emb = OnnxEmbedder.from_file("reid.onnx")        # or registry.load_embedder("reid.onnx")
>>> feats = emb.embed_boxes(image, boxes)             # float32 [N, emb.dim], unit norm
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from psearch.core.errors import PsearchError
from psearch.reid.crops import CropEmbedder
from psearch.roles import EmbedderSource

META_PREFIX = "psearch."
"""Prefix of the metadata keys ``psearch export onnx`` writes (values are JSON)."""


class OnnxEmbedder(CropEmbedder):
    """``roles.Embedder`` (``source = "crops"``) over an exported re-ID ``.onnx`` file."""

    source: EmbedderSource = "crops"

    def __init__(self, session: Any, meta: dict[str, Any], path: Path,
                 batch_size: int = 128) -> None:
        self.session = session
        self.meta = meta
        self.path = path
        self.batch_size = batch_size
        self.input_size = tuple(int(v) for v in meta["input_size"])
        self.dim = int(meta["dim"])
        self.input_name = session.get_inputs()[0].name
        self.checkpoint_path = path  # what `psearch embed` records (and hashes)
        self.backbone_name = str(meta.get("backbone"))

    @classmethod
    def from_file(cls, path: str | os.PathLike, device: Any = None, batch_size: int = 128,
                  payload: Any = None, threads: int | None = None, **_options: Any
                  ) -> OnnxEmbedder:
        """Open ``path`` on onnxruntime's CPU provider (``device`` is accepted and ignored, as
        the registry passes it). ``threads``: intra-op threads (None: onnxruntime's default)."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise PsearchError(f"{path}: running .onnx models needs onnxruntime "
                               "(pip install 'psearch[onnx]')") from None
        path = Path(path)
        if not path.is_file():
            raise PsearchError(f"{path}: ONNX file not found")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise PsearchError(f"{path}: onnxruntime cannot load it ({first[:160]})") from None
        raw = session.get_modelmeta().custom_metadata_map
        meta = {k[len(META_PREFIX):]: json.loads(v) for k, v in raw.items()
                if k.startswith(META_PREFIX)}
        if meta.get("kind") != "reid" or "input_size" not in meta or "dim" not in meta:
            raise PsearchError(f"{path}: not a re-ID model exported by `psearch export onnx` "
                               "(no psearch.kind/input_size/dim metadata)")
        return cls(session, meta, path, batch_size)

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """uint8 [N, height, width, 3] crops already at ``input_size`` -> float32 [N, D]."""
        images = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        [feats] = self.session.run(None, {self.input_name: images})
        feats = np.asarray(feats, dtype=np.float32)
        return feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)

    def describe(self) -> dict[str, Any]:
        """What ``psearch embed`` records: the exported model's own description + the file."""
        return {"kind": "reid", "backend": "onnxruntime", "backbone": self.meta.get("backbone"),
                "input_size": list(self.input_size), "dim": self.dim,
                "checkpoint": self.meta.get("checkpoint"), "onnx": str(self.path),
                "checkpoint_sha256": self.meta.get("checkpoint_sha256")}
