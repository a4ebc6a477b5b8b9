"""The main job, end to end on a generated world: ``psearch demo``.

world -> train detector -> detect the gallery images -> train re-ID -> embed -> FAISS gallery
-> query -> ranked table + result sheet -> the standard evaluation of the whole gallery.

Every stage writes the same files the individual commands write, under ``OUT``; a stage whose
output is already complete is skipped, an interrupted training resumes, so running the demo
again continues from where the run before stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from psearch.core.config import load_config
from psearch.core.errors import PsearchError
from psearch.core.io import write_json_atomic
from psearch.core.options import device_option, quiet_option, seed_option
from psearch.pipeline.stages import Stage, StageRunner, train

WORLD_FORMAT = "cuhk"
DEMO_REID_EPOCHS = 80
"""The ci world's train split is small (about 200 labeled crops): epochs are cheap (~1.5 s), and
20 (reid_cpu's count for larger worlds) leave the model under-trained there."""


def run_demo(out: str | Path, preset: str = "ci", seed: int = 0, device: str = "auto",
             detector_epochs: int | None = None, reid_epochs: int | None = DEMO_REID_EPOCHS,
             top_k: int = 5, query_index: int | None = None,
             log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    """Run the whole cascade under ``out`` and return a summary (also ``out/summary.json``).

    ``progress``: progress bars of the trainings, detection and embedding.
    ``query_index``: which of the world's queries to search for; None picks the tallest one.
    The query's own image is left out of the shown matches, as the protocols do.
    """
    from psearch.data import load_dataset
    from psearch.data.synth import generate_world
    from psearch.detector.detect import run_detect
    from psearch.detector.inputs import collect_sources
    from psearch.detector.train import LAST_NAME, METRICS_NAME, train_detector
    from psearch.evaluation import evaluate, format_report, write_report_json
    from psearch.formats.manifest import read_manifest
    from psearch.gallery import index_embeddings
    from psearch.registry import load_detector
    from psearch.reid import ReidModel
    from psearch.reid.config import reid_config
    from psearch.reid.embed import embed_manifest
    from psearch.reid.train import HISTORY_NAME, train_reid
    from psearch.search.evaluate import gallery_results
    from psearch.search.person_search import PersonSearch

    out = Path(out)
    paths = {name: out / name for name in
             ("world", "detector", "detections", "reid", "embeddings", "gallery")}
    runner = StageRunner(log=lambda line: log(click.style(line, bold=True)), prefix="== ")
    world, det_dir, reid_dir = paths["world"], paths["detector"], paths["reid"]

    runner.run(Stage("generate world", lambda _: generate_world(
        world, WORLD_FORMAT, seed=seed, preset=preset), [world / "synth_summary.json"]))
    dataset = load_dataset(world, WORLD_FORMAT)
    log(f"world: {len(dataset.train)} train images, {len(dataset.gallery)} gallery images, "
        f"{len(dataset.queries)} queries ({world})")

    runner.run(Stage("train detector", train(
        train_detector, dataset, load_config("detector_cpu"), det_dir, device=device,
        epochs=detector_epochs, progress=progress), [det_dir / METRICS_NAME],
        checkpoint=det_dir / LAST_NAME))
    detector_metrics = json.loads((det_dir / METRICS_NAME).read_text())

    reid_cfg = reid_config(overrides=[f"train.epochs={reid_epochs}"] if reid_epochs else [])
    history_path = reid_dir / HISTORY_NAME
    runner.run(Stage("train re-ID", train(train_reid, dataset, reid_cfg, reid_dir, device=device,
                                          progress=progress, log=log),
                     done=lambda: (history_path.is_file() and len(json.loads(
                         history_path.read_text())) >= int(reid_cfg["train"]["epochs"])),
                     checkpoint=reid_dir / LAST_NAME))

    detector = load_detector(det_dir / LAST_NAME, device=device)
    sources = collect_sources([r.path for r in dataset.gallery])
    runner.run(Stage("detect gallery images",  # run_detect skips the images it has done
                     lambda _: run_detect(detector, sources, paths["detections"],
                                                progress=progress)))
    if len(read_manifest(paths["detections"])) == 0:
        raise PsearchError(f"the detector ({det_dir / LAST_NAME}) found nobody in the gallery "
                           "images at score 0.5: it needs more training (--detector-epochs; "
                           f"it trained {detector_metrics['epochs']} epochs)")
    reid_model = ReidModel.from_checkpoint(reid_dir / LAST_NAME, device=device)
    runner.run(Stage("embed detections", lambda _: embed_manifest(
        reid_model, paths["detections"], paths["embeddings"], restart=True, progress=progress,
        log=log)))
    gallery = runner.run(Stage("index gallery", lambda _: index_embeddings(
        paths["embeddings"], paths["gallery"], overwrite=True)))

    search = PersonSearch(gallery, device=device)
    if query_index is None:
        query_index = max(range(len(dataset.queries)),
                          key=lambda q: float(np.ptp(dataset.queries[q].box[1::2])))
    query = dataset.queries[query_index % len(dataset.queries)]
    query_path = dataset.image(query.image).path
    # Ask for enough matches that dropping every detection of the query's own image leaves top_k.
    rows = gallery.rows
    source_names = np.array([Path(s).name for s in rows.sources.tolist()])
    own_rows = int((source_names[rows.source_ids] == query.image).sum())
    [ranked] = search.query_boxes(query_path, [query.box], top_k=top_k + own_rows)
    matches = [m for m in ranked if Path(m.source).name != query.image][:top_k]
    for rank, match in enumerate(matches, start=1):
        match.rank = rank
    sheet = search.draw(query_path, query.box, matches, out / "result.png")
    box_text = ",".join(f"{v:.0f}" for v in query.box)
    log(click.style("== query", bold=True))
    log(f"psearch query --gallery {paths['gallery']} --image {query_path} --box {box_text}")
    log(f"(query {query_index}: person {query.pid}; matches in other images than the query's)")
    for match in matches:
        verdict = "same person" if is_person(dataset, match, query.pid) else ""
        log(f"  {match.rank:>2}  {match.score:.3f}  {Path(match.source).name:<12} "
            f"box {','.join(f'{v:.0f}' for v in match.box):<18} {verdict}")
    log(f"result sheet: {sheet}")

    results, _ = gallery_results(gallery, dataset, search.embedder)
    report = evaluate(dataset, results)
    log(click.style("== evaluation (cascade: detected boxes)", bold=True))
    log(format_report(report))
    write_report_json(out / "metrics.json", report)

    summary = {"out": str(out), "preset": preset, "seed": seed, "seconds": runner.seconds,
               "detector": detector_metrics.get("detection"), "sheet": str(sheet),
               "query": {"image": str(query_path), "box": query.box.tolist(), "pid": query.pid},
               "matches": [m.to_dict() for m in matches], "metrics": str(out / "metrics.json")}
    write_json_atomic(out / "summary.json", summary)
    return summary


def is_person(dataset: Any, match: Any, pid: int) -> bool:
    """Whether a match's box is the ground-truth box of person ``pid`` (IoU >= 0.5)."""
    from psearch.evaluation import box_iou

    record = dataset.image(Path(match.source).name)
    gt = record.boxes[record.pids == pid]
    return bool(len(gt)) and float(box_iou(match.box[None], gt).max()) >= 0.5


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/demo"),
              show_default=True, help="Directory for every stage's output.")
@click.option("--preset", type=click.Choice(["tiny", "ci", "bench"]), default="ci",
              show_default=True, help="Size of the generated world.")
@seed_option("World seed.")
@device_option()
@click.option("--detector-epochs", type=int, default=None,
              help="Override the detector_cpu preset's epochs.")
@click.option("--reid-epochs", type=int, default=DEMO_REID_EPOCHS, show_default=True,
              help="Re-ID training epochs (reid_cpu preset otherwise).")
@click.option("--top-k", type=int, default=5, show_default=True, help="Matches to show.")
@click.option("--query", "query_index", type=int, default=None,
              help="Which of the world's queries to search for (default: the tallest person).")
@quiet_option()
def demo_command(out: Path, preset: str, seed: int, device: str, detector_epochs: int | None,
                 reid_epochs: int | None, top_k: int, query_index: int | None,
                 quiet: bool) -> None:
    """Run the whole cascade on a generated world and search for one person.

    Generates a synthetic CUHK-SYSU-format world, trains the CPU-grade detector and re-ID model
    (or reuses those of the run before in OUT), detects and embeds every gallery image, builds
    the FAISS gallery, answers one query (ranked table + OUT/result.png) and scores the gallery
    with the standard protocols (OUT/metrics.json).

    \b
    Example:
      psearch demo --out runs/demo
      psearch demo --out runs/quick --preset tiny --detector-epochs 2 --reid-epochs 2
    """
    run_demo(out, preset=preset, seed=seed, device=device, detector_epochs=detector_epochs,
             reid_epochs=reid_epochs, top_k=top_k, query_index=query_index, log=click.echo,
             progress=not quiet)


COMMANDS = [demo_command]
