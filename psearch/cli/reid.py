"""Click commands of the re-ID stage: ``psearch train-reid`` and ``psearch embed``.

Heavy imports (torch, timm) happen inside the commands, so ``psearch --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from psearch.core.options import (
    config_option,
    device_option,
    download_option,
    format_option,
    out_option,
    quiet_option,
    resume_option,
    set_option,
    weights_option,
)
from psearch.reid.config import DEFAULT_PRESET, reid_config


@click.command("train-reid")
@click.option("--data", "data_root", required=True, type=click.Path(path_type=Path),
              help="Dataset root directory.")
@format_option()
@out_option("Run folder: last.pt, best.pt, history.json.")
@config_option(DEFAULT_PRESET, "Preset name (reid_cpu, reid_cuhk, reid_prw) or YAML file.",
               name="preset")
@set_option()
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override train.epochs.")
@click.option("--loss", type=click.Choice(["oim", "softmax"]), default=None,
              help="Override loss.name.")
@click.option("--pretrained", is_flag=True,
              help="Start from timm's pretrained backbone weights (from its local cache; "
                   "--download fetches them).")
@download_option()
@click.option("--detections", type=click.Path(path_type=Path), default=None,
              help="A detect manifest on the train images: detections with IoU >= "
                   "data.detections_iou (0.5) to a ground-truth box are added as extra crops "
                   "with that box's identity; the others are dropped.")
@device_option()
@resume_option()
@quiet_option()
def train_reid_command(data_root: Path, fmt: str, out: Path, preset: str,
                       overrides: tuple[str, ...], epochs: int | None, loss: str | None,
                       pretrained: bool, download: bool, detections: Path | None, device: str,
                       resume: bool, quiet: bool) -> None:
    """Train the re-ID embedding (timm backbone + OIM loss) on a dataset's train split.

    Evaluates on the test split with ground-truth boxes (the re-ID upper bound; Market-1501
    crops: its mAP / CMC protocol) every train.eval_every epochs, and writes OUT/last.pt after
    every epoch (OUT/best.pt: best mAP).

    \b
    Example:
      psearch train-reid --data world/ --format cuhk --out runs/reid
      psearch train-reid --data CUHK/ --config reid_cuhk --pretrained --download --out runs/r50
      psearch train-reid --data Market-1501/ --format market --out runs/reid-market
    """
    from psearch.core.weights import allow_downloads
    from psearch.data import load_dataset
    from psearch.formats.manifest import read_manifest
    from psearch.reid.train import train_reid

    extra = [f"train.epochs={epochs}"] if epochs else []
    extra += [f"loss.name={loss}"] if loss else []
    extra += ["model.pretrained=true"] if pretrained else []
    # --resume continues with the checkpoint's config (psearch.training.trainer's rule)
    cfg = None if resume else reid_config(preset, (*overrides, *extra))
    dataset = load_dataset(data_root, fmt)
    manifest = read_manifest(detections) if detections is not None else None
    with allow_downloads(download):
        result = train_reid(dataset, cfg, out, device=device, resume=resume,
                            detections=manifest, progress=not quiet, log=click.echo,
                            overrides=(*overrides, *extra) if resume else ())
    click.echo(result.closing_line())


@click.command("embed")
@weights_option("A checkpoint that can embed boxes: re-ID (last.pt or best.pt from psearch "
                "train-reid) or joint (train-joint; boxes pooled on their full frames).")
@click.option("--manifest", "manifest_path", required=True, type=click.Path(path_type=Path),
              help="Detect output directory or its manifest.csv.")
@out_option("Output directory for embeddings.npy and embeddings.json.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=4, show_default=True,
              help="Threads reading and resizing crops ahead of the model.")
@device_option()
@click.option("--restart", is_flag=True,
              help="Discard a partial run / replace embeddings made by another checkpoint.")
@quiet_option()
def embed_command(weights: str, manifest_path: Path, out: Path, batch_size: int, workers: int,
                  device: str, restart: bool, quiet: bool) -> None:
    """Embed every detection of a detect manifest with a re-ID model (its crops) or a joint
    model (RoI pooling on the full frames).

    Writes OUT/embeddings.npy (float32 [N, D], row i = manifest row i, unit norm) and
    OUT/embeddings.json; an interrupted run resumes where it stopped.

    \b
    Example:
      psearch embed --weights runs/reid/last.pt --manifest dets/ --out emb/
    """
    from psearch.formats.embeddings import EMBEDDINGS_NAME
    from psearch.registry import load_embedder
    from psearch.reid.embed import embed_manifest

    model = load_embedder(weights, device=device, batch_size=batch_size)
    meta = embed_manifest(model, manifest_path, out, batch_size=batch_size, workers=workers,
                          restart=restart, progress=not quiet, log=click.echo)
    click.echo(f"wrote {out / EMBEDDINGS_NAME}: {meta['rows']} x {meta['dim']}")


COMMANDS: list[click.Command] = [train_reid_command, embed_command]
