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
from psearch.inet_losses import PAIR_LOSSES
from psearch.training import SGD_TRAIN_DEFAULTS

CHECKPOINT_KIND = "joint"
MODELS = ("oim", "inet", "dcinet")
DEFAULT_LOSS = {"oim": "oim", "inet": "olp+hep", "dcinet": "olp+c2hep"}
OIM_LOSSES = ("oim", "softmax")

DEFAULT_REID_CONFIG: dict[str, Any] = {
    "model": "oim",  # the joint model: oim (Xiao et al. 2017), inet, dcinet (psearch.joint.inet)
    "dim": 256,  # embedding size (L2-normalised)
    "loss": None,  # oim: oim|softmax (psearch.losses); inet/dcinet: olp+hep|olp+c2hep|olp|hep|
    #                c2hep (psearch.inet_losses); None: oim, olp+hep (inet), olp+c2hep (dcinet)
    "num_ids": None,  # labeled training identities (from the data)
    "queue_size": 5000,  # OIM: circular queue of unlabeled people
    "scale": 30.0,  # OIM: cosine logits x scale (1 / temperature)
    "momentum": 0.5,  # OIM: lookup-table momentum; C2HEP: class-centre momentum phi
    "weight": 1.0,  # weight of loss_reid (OIM) or of loss_hep / loss_c2hep (beta)
    "olp_weight": 1.0,  # I-Net/DC-I-Net: weight of loss_olp (alpha)
    "olp_scale": 1.0,  # OLP: cosine x scale (the paper: none, i.e. 1)
    "dictionary_factor": 40,  # OLP dictionary: this x model.box.batch_size_per_image slots
    "dictionary_size": None,  # or an explicit number of slots
    "hard_negatives": 20,  # HEP pool: classes of the top-r hardest negatives of each subgroup
    "pool_size": 100,  # HEP / C2HEP pool: filled with random classes up to T
    "c2hep_scale": 10.0,  # C2HEP: lambda
    "roi_size": [14, 7],  # DC-I-Net: RoI Align of the refined boxes, [height, width]
}

DEFAULT_TRAIN_CONFIG: dict[str, Any] = {
    **SGD_TRAIN_DEFAULTS,
    "batch_size": 2,
    "lr": 0.01,
    "weight_decay": 5e-4,
    "warmup_iters": 100,
    "eval_every": 0,  # epochs between evaluations on the test split (0: at the end only)
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
    reid = out["reid"]
    if reid["model"] not in MODELS:
        raise PsearchError(f"reid.model {reid['model']!r}: expected one of {', '.join(MODELS)}")
    reid["loss"] = reid["loss"] or DEFAULT_LOSS[reid["model"]]
    losses = OIM_LOSSES if reid["model"] == "oim" else PAIR_LOSSES
    if reid["loss"] not in losses:
        raise PsearchError(f"reid.loss {reid['loss']!r}: reid.model {reid['model']} takes "
                           f"{', '.join(losses)}")
    if reid["model"] != "oim" and (out["train"]["batch_size"] < 2
                                   or out["train"]["batch_size"] % 2):
        raise PsearchError(f"train.batch_size {out['train']['batch_size']}: reid.model "
                           f"{reid['model']} trains on image pairs, it must be even")
    roi = reid["roi_size"]
    if (not isinstance(roi, (list, tuple)) or len(roi) != 2
            or not all(isinstance(v, int) and v > 0 for v in roi)):
        raise PsearchError(f"reid.roi_size {roi!r}: expected [height, width], two positive "
                           f"integers")
    return out
