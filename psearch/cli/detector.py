"""Click commands of this stage, registered on the ``psearch`` group by ``psearch.cli.main``."""

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
    score_thresh_option,
    set_option,
    weights_option,
)


@click.command("train-detector")
@click.option("--data", "data_root", required=True, type=click.Path(file_okay=False),
              help="Dataset root folder.")
@format_option()
@out_option("Run folder: last.pt (each epoch), metrics.json.", name="out_dir")
@config_option("detector_cpu",
               "Preset name (detector_cpu, detector_cuhk, detector_prw) or a YAML file.")
@set_option()
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Number of epochs (overrides train.epochs; with --resume, the new total).")
@device_option()
@resume_option()
@click.option("--no-eval", is_flag=True, help="Skip the detection AP/recall on the test split.")
@download_option()
@quiet_option()
def train_detector_command(data_root: str, fmt: str, out_dir: Path, config_name: str,
                           overrides: tuple[str, ...], epochs: int | None, device: str,
                           resume: bool, no_eval: bool, download: bool, quiet: bool) -> None:
    """Train the Faster R-CNN person detector on a person-search dataset.

    Trains on every box of the train split, writes a checkpoint per epoch and, at the end, the
    detection AP and recall on the test split (all people and labeled people).

    \b
    Example (CPU preset, MobileNetV3-FPN from scratch):
      psearch train-detector --data world/ --format cuhk --out runs/det
    Paper grade (ResNet-50-FPN, 900 px, COCO weights from the torch hub cache, GPU; --download
    fetches them first if missing):
      psearch train-detector --data CUHK-SYSU/ --config detector_cuhk --out runs/det --device cuda
    """
    from psearch.core.weights import allow_downloads
    from psearch.data import load_dataset
    from psearch.detector.train import detector_config, train_detector

    # --resume continues with the checkpoint's config (psearch.training.trainer's rule)
    config = None if resume else detector_config(config_name, overrides)
    dataset = load_dataset(data_root, fmt)
    with allow_downloads(download):
        result = train_detector(dataset, config, out_dir, device=device, resume=resume,
                                epochs=epochs, evaluate=not no_eval, progress=not quiet,
                                log=click.echo, overrides=overrides if resume else ())
    for group, m in result.metrics.get("detection", {}).items():
        click.echo(f"detection ({group} people): AP {100 * m['ap']:.1f}%  "
                   f"recall {100 * m['recall']:.1f}%  ({m['gt']} ground truths)")
    click.echo(result.closing_line())


@click.command("detect")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@weights_option("A checkpoint that can detect (train-detector, train-joint), 'hog' for "
                "OpenCV's HOG baseline, or 'coco', 'coco-v1', 'coco-mobilenet' for torchvision's "
                "COCO Faster R-CNN (its person class) from the torch hub cache.")
@out_option("Output folder: manifest.csv, sources.csv, crops/, detect.json.", name="out_dir")
@click.option("--recursive", "-r", is_flag=True, help="Search folders recursively.")
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Videos: process every N-th frame.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Videos: process this many frames per second (instead of --every).")
@click.option("--sequence-fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Each folder is one camera's image sequence (frames sorted by name) at this "
                   "frame rate: its hits get times and group into sightings.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Pictures per forward pass.")
@score_thresh_option(0.5)
@click.option("--min-size", type=click.FloatRange(min=0), default=0, show_default=True,
              help="Minimum box height in pixels.")
@click.option("--max-detections", type=click.IntRange(min=1), default=100, show_default=True,
              help="Maximum detections per picture.")
@click.option("--hog-upscale", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="HOG only: enlarge pictures first (its window is 64x128 pixels).")
@click.option("--hog-contain", type=click.FloatRange(0, 1), default=None,
              help="HOG only: drop a box when more than this fraction of it (or of a "
                   "higher-scoring box) lies inside a higher-scoring box; 1 turns it off.  "
                   "[default: 0.8]")
@click.option("--embed", is_flag=True,
              help="Joint models: also write OUT/embeddings.npy + embeddings.json from the same "
                   "forward pass (OUT is then the --embeddings of psearch index).")
@device_option()
@download_option()
@quiet_option()
def detect_command(inputs: tuple[str, ...], weights: str, out_dir: Path, recursive: bool,
                   every: int, fps: float | None, sequence_fps: float | None,
                   batch_size: int, score_thresh: float,
                   min_size: float, max_detections: int, hog_upscale: float,
                   hog_contain: float | None, embed: bool, device: str,
                   download: bool, quiet: bool) -> None:
    """Detect people in images, folders and videos; write crops and a manifest.

    Rerunning with the same --out skips the inputs already finished, so an interrupted run
    resumes. Unreadable inputs among others are skipped and reported at the end.

    \b
    Examples:
      psearch detect --weights runs/det/last.pt gallery/ --out dets/
      psearch detect --weights runs/det/last.pt cam1.mp4 --fps 2 --out dets/
      psearch detect --weights runs/det/last.pt cam2-frames/ --sequence-fps 25 --out dets/
      psearch detect --weights hog --hog-upscale 2 photo.jpg --out dets-hog/
      psearch detect --weights coco cam1.mp4 --fps 2 --out dets-coco/ --download
      psearch detect --weights runs/joint/last.pt gallery/ --embed --out dets/  # + embeddings
    """
    from psearch.core.weights import allow_downloads
    from psearch.detector.detect import DetectSettings, run_detect
    from psearch.detector.inputs import collect_sources
    from psearch.registry import load_detector

    if fps is not None and every != 1:
        raise PsearchError("--every and --fps are alternatives; give one of them")
    sources = collect_sources(list(inputs), recursive=recursive, exclude=out_dir,
                              sequence_fps=sequence_fps)
    with allow_downloads(download):
        detector = load_detector(weights, device=device, batch_size=batch_size,
                                 upscale=hog_upscale, contain=hog_contain)
    settings = DetectSettings(score_thresh=score_thresh, min_size=min_size,
                              max_detections=max_detections, batch_size=batch_size,
                              every=every, fps=fps, embed=embed)
    summary = run_detect(detector, sources, out_dir, settings, progress=not quiet)
    if summary.failed and summary.finished == 0 and summary.skipped == 0:
        if len(summary.failed) == 1:
            raise PsearchError(summary.failed[0][1])
        raise PsearchError(f"none of the {len(summary.failed)} inputs could be read "
                           f"(first: {summary.failed[0][1]})")
    click.echo(f"{summary.finished} inputs done, {summary.skipped} already done before; "
               f"{summary.pictures} pictures, {summary.detections} detections "
               f"-> {out_dir}/manifest.csv ({summary.seconds:.1f} s)")
    if summary.failed:
        click.echo(f"warning: skipped {len(summary.failed)} unreadable inputs:", err=True)
        for _, reason in summary.failed:
            click.echo(f"  {reason}", err=True)


COMMANDS: list[click.Command] = [train_detector_command, detect_command]
