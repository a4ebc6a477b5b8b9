"""Click commands of the joint track, registered on the ``psearch`` group by psearch.cli.main."""

from __future__ import annotations

from pathlib import Path

import click

from psearch.core.errors import PsearchError
from psearch.core.options import (
    config_option,
    device_option,
    download_option,
    format_option,
    out_option,
    quiet_option,
    resume_option,
    set_option,
)


@click.command("train-joint")
@click.option("--model", "model_name", default="oim", show_default=True,
              type=click.Choice(["oim", "inet", "dcinet", "alignps", "qeeps"]),
              help="Joint model: oim (Xiao et al. 2017), inet (I-Net: image pairs, OLP + HEP "
                   "on the proposals), dcinet (DC-I-Net: OLP + C2HEP on refined boxes with "
                   "their own re-ID head), alignps (Yan et al. 2021: anchor-free FCOS on an "
                   "aligned fused map, triplet-aided OIM), qeeps (Munjal et al. 2019: "
                   "query-guided, fine-tunes an OIM checkpoint given with --init).")
@click.option("--data", "data_root", required=True, type=click.Path(file_okay=False),
              help="Dataset root folder.")
@format_option()
@out_option("Run folder: last.pt, metrics.json.", name="out_dir")
@config_option(None, "Preset name (joint_MODEL_cpu, joint_MODEL_cuhk, joint_MODEL_prw) or a "
                     "YAML file; default: joint_MODEL_cpu.")
@set_option()
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Number of epochs (overrides train.epochs; with --resume, the new total).")
@click.option("--init", "init", default=None, type=click.Path(dir_okay=False),
              help="qeeps: the OIM checkpoint (ResNet C4, e.g. joint_oim_c4_cpu) it extends.")
@device_option()
@resume_option()
@click.option("--no-eval", is_flag=True, help="Skip the evaluation on the test split.")
@download_option()
@quiet_option()
def train_joint_command(model_name: str, data_root: str, fmt: str, out_dir: Path,
                        config_name: str | None, overrides: tuple[str, ...], epochs: int | None,
                        init: str | None, device: str, resume: bool,
                        no_eval: bool, download: bool, quiet: bool) -> None:
    """Train a joint person-search model: one network that detects and embeds people.

    OIM: a Faster R-CNN whose RoI head also outputs a 256-d identity feature trained with the
    OIM loss. I-Net and DC-I-Net train on pairs of images that share a person, with the OLP
    loss (a dictionary of past features) and HEP (I-Net) or C2HEP (DC-I-Net, re-ID on the
    refined boxes). AlignPS is anchor-free: FCOS on one map fused from the backbone's levels by
    deformable convs, whose feature at each detected person's location is its embedding
    (triplet-aided OIM). Writes DIR/last.pt each epoch and, at the end, search mAP/top-1 on its own
    detections and on ground-truth boxes, and detection AP/recall (DIR/metrics.json). The
    checkpoint works with detect (--embed), embed, index and query. QEEPS fine-tunes an OIM
    C4 model on (query box, gallery image) pairs (no evaluation at the end: it searches pair by
    pair, see psearch query --weights / --rerank and benchmarks/qeeps_rerank.py).

    \b
    Example (CPU preset):
      psearch train-joint --model oim --data world/ --format cuhk --out runs/joint
      psearch train-joint --model dcinet --data world/ --format cuhk --out runs/dcinet
      psearch train-joint --model alignps --data world/ --format cuhk --out runs/alignps
    Paper grade (ResNet-50 C4, 900 px, ImageNet weights from the torch hub cache, GPU;
    --download fetches them first if missing):
      psearch train-joint --model oim --data CUHK-SYSU/ --config joint_oim_cuhk \\
          --out runs/joint --device cuda --download
    QEEPS (query-guided; pairs of a query box and a gallery image) on an OIM C4 model:
      psearch train-joint --model oim --config joint_oim_c4_cpu --data world/ --out runs/oim
      psearch train-joint --model qeeps --init runs/oim/last.pt --data world/ --out runs/qeeps
    """
    from psearch.core.weights import allow_downloads
    from psearch.data import load_dataset
    from psearch.joint.config import joint_config
    from psearch.joint.train import train_joint

    if model_name == "qeeps":
        with allow_downloads(download):
            _train_qeeps(data_root, fmt, out_dir, config_name, overrides, epochs, init, device,
                         resume, not quiet)
        return
    if init is not None:
        raise PsearchError("--init applies to --model qeeps")
    # --resume continues with the checkpoint's config (psearch.training.trainer's rule)
    config = None
    if not resume:
        config = joint_config(config_name or f"joint_{model_name}_cpu", overrides)
        if config["reid"]["model"] != model_name:
            raise PsearchError(f"--model {model_name}: the config is for reid.model "
                               f"{config['reid']['model']!r}")
    dataset = load_dataset(data_root, fmt)
    with allow_downloads(download):
        result = train_joint(dataset, config, out_dir, device=device, resume=resume,
                             epochs=epochs, evaluate=not no_eval, progress=not quiet,
                             log=click.echo, overrides=overrides if resume else ())
    metrics = result.metrics
    for boxes in ("detected", "ground_truth"):
        for name, m in metrics.get(boxes, {}).get("search", {}).items():
            click.echo(f"search on {boxes.replace('_', '-')} boxes, {name}: "
                       f"mAP {100 * m['mAP']:.1f}%  top-1 {100 * m['top1']:.1f}%")
    for group, m in metrics.get("detected", {}).get("detection", {}).items():
        click.echo(f"detection ({group} people): AP {100 * m['ap']:.1f}%  "
                   f"recall {100 * m['recall']:.1f}%")
    click.echo(result.closing_line())


def _train_qeeps(data_root: str, fmt: str, out_dir: Path, config_name: str | None,
                 overrides: tuple[str, ...], epochs: int | None, init: str | None,
                 device: str, resume: bool, progress: bool) -> None:
    from psearch.core.config import apply_overrides, load_config
    from psearch.data import load_dataset
    from psearch.joint.qeeps_train import train_qeeps

    if init is None and not resume:
        raise PsearchError("--model qeeps needs --init OIM.pt: an OIM checkpoint with a ResNet "
                           "C4 backbone (e.g. train-joint --model oim --config joint_oim_c4_cpu)")
    config = None if resume else apply_overrides(load_config(config_name or "joint_qeeps_cpu"),
                                                 overrides)
    dataset = load_dataset(data_root, fmt)
    result = train_qeeps(dataset, config, out_dir, init=init, device=device, resume=resume,
                         epochs=epochs, progress=progress, log=click.echo,
                         overrides=overrides if resume else ())
    click.echo(f"{result.metrics['pairs_per_epoch']} pairs per epoch; search with it: psearch "
               f"query --weights {out_dir}/last.pt ... or --rerank {out_dir}/last.pt")
    click.echo(result.closing_line())


COMMANDS: list[click.Command] = [train_joint_command]
