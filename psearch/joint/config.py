"""The joint models' config: defaults in one place, resolved strictly.

Sections: ``model`` (the detector's, ``psearch.detector.model.DEFAULT_MODEL_CONFIG``: backbone,
anchors, RPN and box settings), ``reid`` (embedding and identity loss) and ``train``.
``reid.num_ids`` is filled from the training data when a run starts.
"""

from __future__ import annotations

from typing import Any

from psearch.config import resolve_config
from psearch.detector.model import resolve_model_config
from psearch.errors import PsearchError

CHECKPOINT_KIND = "joint"
MODELS = ("oim",)

DEFAULT_REID_CONFIG: dict[str, Any] = {
    "model": "oim",  # the joint model: oim (Xiao et al. 2017)
    "dim": 256,  # embedding size (L2-normalised)
    "loss": "oim",  # oim or softmax (psearch.losses)
    "num_ids": None,  # labeled training identities (from the data)
    "queue_size": 5000,  # OIM: circular queue of unlabeled people
    "scale": 30.0,  # OIM: cosine logits x scale (1 / temperature)
    "momentum": 0.5,  # OIM: lookup-table momentum
    "weight": 1.0,  # weight of loss_reid in the sum of losses
}

DEFAULT_TRAIN_CONFIG: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 2,
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "warmup_iters": 100,
    "warmup_factor": 0.001,  # the first iteration's lr is lr * warmup_factor
    "lr_steps": [8],  # epochs after which lr is multiplied by gamma
    "gamma": 0.1,
    "clip_grad_norm": 10.0,
    "hflip": 0.5,
    "workers": 0,
    "seed": 0,
    "eval_every": 0,  # epochs between evaluations on the test split (0: at the end only)
    "checkpoint_every": 1,  # epochs between checkpoints (the last epoch always writes one)
    "keep_epochs": False,  # also keep DIR/epoch_N.pt of every checkpoint
}


def resolve_joint_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """A full joint config ``{"model", "reid", "train"}`` with defaults filled in; unknown keys
    and an unknown model or loss are a ``PsearchError`` naming them."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - {"model", "reid", "train"})
    if unknown:
        raise PsearchError(f"{unknown[0]}: unknown config section (known: model, reid, train)")
    out = {"model": resolve_model_config(cfg.get("model")),
           "reid": resolve_config(DEFAULT_REID_CONFIG, cfg.get("reid"), "reid"),
           "train": resolve_config(DEFAULT_TRAIN_CONFIG, cfg.get("train"), "train")}
    if out["reid"]["model"] not in MODELS:
        raise PsearchError(f"reid.model {out['reid']['model']!r}: expected one of "
                           f"{', '.join(MODELS)}")
    return out
