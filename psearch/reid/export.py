"""Export a trained re-ID network to ONNX, with its preprocessing contract as metadata.

>>> report = export_reid_onnx("runs/reid/last.pt", "reid.onnx")
>>> report["max_abs_diff"]          # onnxruntime vs PyTorch on the same crops
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psearch.core.errors import PsearchError
from psearch.core.io import atomic_path, file_sha256
from psearch.reid.model import ReidModel
from psearch.reid.onnx import META_PREFIX, OnnxEmbedder

OPSET = 17


def export_reid_onnx(checkpoint: str | os.PathLike, out: str | os.PathLike,
                     check_batch: int = 4, seed: int = 0) -> dict[str, Any]:
    """Write the network of re-ID ``checkpoint`` to ``out`` (temp file + rename), then run the
    ONNX file and the PyTorch model on the same ``check_batch`` random crops; returns what was
    written and the largest absolute difference of their embeddings."""
    import onnx

    model = ReidModel.from_checkpoint(checkpoint, device="cpu")
    height, width = model.input_size
    dummy = torch.zeros(2, 3, height, width, dtype=torch.uint8)
    meta = {"kind": "reid", "input_size": [height, width], "dim": model.dim,
            "backbone": model.backbone_name, "layout": "NCHW RGB uint8",
            "mean": [round(float(v) / 255, 6) for v in model.net.mean.flatten()],
            "std": [round(float(v) / 255, 6) for v in model.net.std.flatten()],
            "resize": "cv2 INTER_AREA when shrinking, else INTER_LINEAR",
            "normalisation": "mean/std inside the graph; output L2-normalised",
            "checkpoint": str(Path(checkpoint).resolve()),
            "checkpoint_sha256": file_sha256(checkpoint)}
    out = Path(out)
    with atomic_path(out) as tmp:
        try:
            torch.onnx.export(model.net, (dummy,), str(tmp), input_names=["crops"],
                              output_names=["embeddings"], opset_version=OPSET, dynamo=False,
                              dynamic_axes={"crops": {0: "batch"}, "embeddings": {0: "batch"}})
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise PsearchError(f"{checkpoint}: the network does not export to ONNX "
                               f"({first[:160]})") from None
        proto = onnx.load(str(tmp))
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = META_PREFIX + key, json.dumps(value)
        onnx.save(proto, str(tmp))
    rng = np.random.default_rng(seed)
    crops = [rng.integers(0, 256, (int(rng.integers(40, 200)), int(rng.integers(20, 100)), 3),
                          dtype=np.uint8) for _ in range(check_batch)]
    ref = model.embed_crops(crops)
    got = OnnxEmbedder.from_file(out).embed_crops(crops)
    return {"out": str(out), "bytes": out.stat().st_size, "opset": OPSET, "metadata": meta,
            "check_crops": check_batch, "max_abs_diff": float(np.abs(ref - got).max())}
