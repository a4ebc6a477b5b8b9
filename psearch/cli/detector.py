"""Click commands of this stage, registered on the ``psearch`` group by ``psearch.cli.main``."""

from __future__ import annotations

import click

from psearch.core.errors import PsearchError

DEVICE_HELP = "cpu, cuda or cuda:N; default: cuda when available"


@click.command("train-detector")
@click.option("--data", "data_root", required=True, type=click.Path(file_okay=False),
              help="Dataset root folder.")
@click.option("--format", "fmt", default="auto", show_default=True,
              type=click.Choice(["auto", "cuhk", "prw", "folder"]), help="Dataset format.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: last.pt (each epoch), metrics.json.")
@click.option("--config", "config_name", default="detector_cpu", show_default=True,
              help="Preset name (detector_cpu, detector_cuhk, detector_prw) or a YAML file.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set train.lr=0.01 (repeatable).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Number of epochs (overrides train.epochs; with --resume, the new total).")
@click.option("--device", default=None, help=DEVICE_HELP)
@click.option("--resume", is_flag=True,
              help="Continue DIR/last.pt (same data required; its config is used).")
@click.option("--no-eval", is_flag=True, help="Skip the detection AP/recall on the test split.")
@click.option("--download", is_flag=True,
              help="Let torchvision/timm download missing pretrained weights (needs network; "
                   "never without this flag).")
def train_detector_command(data_root: str, fmt: str, out_dir: str, config_name: str,
                           overrides: tuple[str, ...], epochs: int | None, device: str | None,
                           resume: bool, no_eval: bool, download: bool) -> None:
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
    from psearch.core.config import apply_overrides, load_config
    from psearch.core.weights import allow_downloads
    from psearch.data import load_dataset
    from psearch.detector.train import resolve_config, train_detector

    if resume and overrides:
        raise PsearchError("--resume uses the checkpoint's config; --set is not allowed with it")
    config = resolve_config(apply_overrides(load_config(config_name), overrides))
    dataset = load_dataset(data_root, fmt)
    with allow_downloads(download):
        metrics = train_detector(dataset, config, out_dir, device=device, resume=resume,
                                 epochs=epochs, evaluate=not no_eval)
    click.echo(f"checkpoint: {out_dir}/last.pt")
    for group, m in metrics.get("detection", {}).items():
        click.echo(f"detection ({group} people): AP {100 * m['ap']:.1f}%  "
                   f"recall {100 * m['recall']:.1f}%  ({m['gt']} ground truths)")


@click.command("detect")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--weights", required=True,
              help="A checkpoint that can detect (train-detector, train-joint), 'hog' for "
                   "OpenCV's HOG baseline, or 'coco', 'coco-v1', 'coco-mobilenet' for "
                   "torchvision's COCO Faster R-CNN (its person class) from the torch hub cache.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: manifest.csv, sources.csv, crops/, detect.json.")
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
@click.option("--score-thresh", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Minimum detection score.")
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
@click.option("--device", default=None, help=DEVICE_HELP)
@click.option("--download", is_flag=True,
              help="--weights coco*: let torchvision download the missing COCO weights into "
                   "the torch hub cache (needs network).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def detect_command(inputs: tuple[str, ...], weights: str, out_dir: str, recursive: bool,
                   every: int, fps: float | None, sequence_fps: float | None,
                   batch_size: int, score_thresh: float,
                   min_size: float, max_detections: int, hog_upscale: float,
                   hog_contain: float | None, embed: bool, device: str | None,
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
                                 upscale=hog_upscale)
    if hog_contain is not None and hasattr(detector, "contain"):  # the HOG baseline
        detector.contain = None if hog_contain >= 1 else hog_contain
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
