"""The joint models' config: defaults in one place, resolved strictly.

Sections: ``model`` (the detector's, ``psearch.detector.model.DEFAULT_MODEL_CONFIG``: backbone,
anchors, RPN and box settings), ``reid`` (embedding and identity loss), ``alignps`` (the
anchor-free AlignPS model's own parts, ``psearch.joint.alignps``) and ``train``.
``reid.num_ids`` is filled from the training data when a run starts.
"""

from __future__ import annotations

import os
from typing import Any

from psearch.core.config import resolve_config, stage_config
from psearch.core.errors import PsearchError
from psearch.detector.model import DEFAULT_MODEL_CONFIG, resolve_model_config
from psearch.nn.inet_losses import PAIR_LOSSES
from psearch.training.loop import SGD_TRAIN_DEFAULTS

CHECKPOINT_KIND = "joint"
MODELS = ("oim", "inet", "dcinet", "alignps")
PAIR_MODELS = ("inet", "dcinet")  # trained on image pairs only (psearch.joint.inet)
TRAIN_MODELS = (*MODELS, "qeeps")
"""What ``psearch train-joint --model`` trains (QEEPS fine-tunes an OIM checkpoint)."""
DEFAULT_LOSS = {"oim": "oim", "inet": "olp+hep", "dcinet": "olp+c2hep", "alignps": "toim"}
OIM_LOSSES = ("oim", "softmax", "toim")
ALIGNPS_LOSSES = ("toim", "oim")
SECTIONS = ("model", "reid", "alignps", "train")

DEFAULT_REID_CONFIG: dict[str, Any] = {
    "model": "oim",  # the joint model: oim (Xiao et al. 2017), inet, dcinet (psearch.joint.inet),
    #                  alignps (psearch.joint.alignps)
    "dim": 256,  # embedding size (L2-normalised); alignps: the width of its fused feature map
    "loss": None,  # oim: oim|softmax|toim (psearch.nn.losses); inet/dcinet: olp+hep|olp+c2hep|
    #                olp|hep|c2hep (psearch.nn.inet_losses); alignps: toim|oim;
    #                None: oim, olp+hep (inet), olp+c2hep (dcinet), toim (alignps)
    "num_ids": None,  # labeled training identities (from the data)
    "queue_size": 5000,  # OIM: circular queue of unlabeled people
    "scale": 30.0,  # OIM: cosine logits x scale (1 / temperature)
    "momentum": 0.5,  # OIM: lookup-table momentum; C2HEP: class-centre momentum phi
    "focal_gamma": 0.0,  # OIM/TOIM: weight (1 - p_t) ** gamma on each term (0: plain OIM)
    "triplet_margin": 0.3,  # TOIM: margin of the batch-hard triplet term
    "triplet_weight": 1.0,  # TOIM: weight of loss_triplet
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

DEFAULT_ALIGNPS_CONFIG: dict[str, Any] = {
    "lateral_channels": 256,  # AFA: width of each level's lateral conv (concatenated: L x this)
    "deformable": True,  # AFA: 3x3 deformable lateral and fusion convs (False: plain 3x3)
    "subtract_mean": True,  # the fused map minus its per-image spatial mean (re-ID and head)
    "head_channels": None,  # FCOS towers' width; None: reid.dim (else a 1x1 conv projects)
    "head_convs": 4,  # convs (3x3 + GroupNorm(32) + ReLU) in each FCOS tower
    "center_sampling_radius": 1.5,  # FCOS: positives within this x stride of a box centre
    "topk_candidates": 1000,  # FCOS: best locations kept before NMS
}

DEFAULT_TRAIN_CONFIG: dict[str, Any] = {
    **SGD_TRAIN_DEFAULTS,
    "batch_size": 2,
    "lr": 0.01,
    "weight_decay": 5e-4,
    "warmup_iters": 100,
    "eval_every": 0,  # epochs between evaluations on the test split (0: at the end only)
    "sampler": None,  # shuffle: images in random order; pairs: images two by two sharing a
    #                   labeled person (psearch.joint.pairs); None: pairs for inet/dcinet
}
SAMPLERS = ("shuffle", "pairs")
DEFAULTS: dict[str, Any] = {"model": DEFAULT_MODEL_CONFIG, "reid": DEFAULT_REID_CONFIG,
                            "alignps": DEFAULT_ALIGNPS_CONFIG, "train": DEFAULT_TRAIN_CONFIG}
"""Every key of a joint config and its default (presets: ``psearch/configs/joint_*``)."""


def joint_config(preset: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()
                 ) -> dict[str, Any]:
    """The defaults, a preset (name or YAML file), then ``--set`` overrides, checked."""
    return resolve_joint_config(stage_config(DEFAULTS, preset, overrides))


def resolve_joint_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """A full joint config ``{"model", "reid", "train"}`` with defaults filled in; unknown keys
    and an unknown model or loss are a ``PsearchError`` naming them."""
    out = resolve_config(DEFAULTS, cfg)
    out["model"] = resolve_model_config(out["model"])  # checks the backbone
    reid = out["reid"]
    if reid["model"] not in MODELS:
        raise PsearchError(f"reid.model {reid['model']!r}: expected one of {', '.join(MODELS)}")
    reid["loss"] = reid["loss"] or DEFAULT_LOSS[reid["model"]]
    losses = {"oim": OIM_LOSSES, "alignps": ALIGNPS_LOSSES}.get(reid["model"], PAIR_LOSSES)
    if reid["loss"] not in losses:
        raise PsearchError(f"reid.loss {reid['loss']!r}: reid.model {reid['model']} takes "
                           f"{', '.join(losses)}")
    if reid["model"] == "alignps":
        check_alignps_config(out)
    train = out["train"]
    train["sampler"] = train["sampler"] or ("pairs" if reid["model"] in PAIR_MODELS
                                            else "shuffle")
    if train["sampler"] not in SAMPLERS:
        raise PsearchError(f"train.sampler {train['sampler']!r}: expected one of "
                           f"{', '.join(SAMPLERS)}")
    if reid["model"] in PAIR_MODELS and train["sampler"] != "pairs":
        raise PsearchError(f"train.sampler {train['sampler']}: reid.model {reid['model']} "
                           f"trains on image pairs (train.sampler pairs)")
    if train["sampler"] == "pairs" and (train["batch_size"] < 2 or train["batch_size"] % 2):
        raise PsearchError(f"train.batch_size {train['batch_size']}: train.sampler pairs "
                           f"batches images two by two, it must be even")
    roi = reid["roi_size"]
    if (not isinstance(roi, (list, tuple)) or len(roi) != 2
            or not all(isinstance(v, int) and v > 0 for v in roi)):
        raise PsearchError(f"reid.roi_size {roi!r}: expected [height, width], two positive "
                           f"integers")
    return out


def check_alignps_config(config: dict[str, Any]) -> None:
    """``PsearchError`` for an AlignPS config its parts cannot be built from: a C4 backbone
    (AFA fuses the levels of an FPN body), detector weights, or tower widths that GroupNorm(32)
    cannot divide."""
    if config["model"]["backbone"].endswith("_c4"):
        raise PsearchError(f"model.backbone {config['model']['backbone']}: reid.model alignps "
                           f"fuses the levels of a multi-level body; use an *_fpn backbone")
    if config["model"]["weights"] not in (None, "imagenet"):
        raise PsearchError(f"model.weights {config['model']['weights']!r}: reid.model alignps "
                           f"starts from null or imagenet (there is no torchvision detector "
                           f"with its parts to load)")
    width = config["alignps"]["head_channels"] or config["reid"]["dim"]
    if not isinstance(width, int) or width <= 0 or width % 32:
        raise PsearchError(f"alignps.head_channels {width}: the FCOS towers' GroupNorm(32) needs "
                           f"a positive multiple of 32 (set alignps.head_channels)")
