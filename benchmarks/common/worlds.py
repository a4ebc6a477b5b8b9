"""The stages of a generated world, as ``benchmarks/cascade.py`` runs them (the commands a user
runs, each reused once finished): the world, the detector, re-ID and the galleries."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.results import json_file
from psearch.pipeline.stages import Stage, StageFailed, StageRunner, log_name, psearch_command

WORLD_SEED = 0
DETECTOR_EPOCHS = 3
"""detector_cpu on a bench world: 3 epochs of 1440 (CUHK) / 1200 (PRW) images, batch 4, with
the learning-rate step before the last epoch: 1080 / 900 iterations (PRW: 11 min on 2 idle
cores)."""
REID_CONFIG = "reid_bench"
HOG_UPSCALE = 2.0
"""HOG's window is 64x128 px: enlarging the pictures lets it see the smaller people."""
JOINT_CONFIG = "joint_oim_cpu"
SMOKE = {"preset": "tiny", "detector_epochs": 1, "reid_epochs": 2, "score_thresh": 0.01}
"""--smoke: a barely trained detector scores below the usual 0.5; a low threshold keeps the
galleries non-empty so that every later stage runs."""


class Stages(StageRunner):
    """The stages of one world under ``root``: ``psearch`` commands, each logged to
    ``root/logs/NAME.log``, timed into ``root/stages.json`` (kept for reused stages)."""

    def __init__(self, root: Path, env: dict[str, str], log: Callable[[str], None]) -> None:
        super().__init__(log=log, record=root / "stages.json", prefix="  ")
        self.root, self.env = root, env

    def command(self, name: str, args: list[Any], done: Callable[[], bool],
                checkpoint: Path | None = None) -> Any:
        """``psearch ARGS`` unless ``done()``; ``--resume`` is added when ``checkpoint`` exists
        (an interrupted training)."""
        log_path = self.root / "logs" / log_name(name)
        shown = " ".join(map(str, args[:12])) + (" ..." if len(args) > 12 else "")
        stage = Stage(name, psearch_command(args, log_path, self.env, resume_flag=True),
                      done=done, checkpoint=checkpoint,
                      describe=f"psearch {shown} (log: {log_path})")
        try:
            return self.run(stage)
        except StageFailed as error:
            raise StageFailed(f"{self.root.name}: {name}: {error}") from None


def detect_finished(out: Path) -> bool:
    state = json_file(out / "detect.json")
    return bool(state) and state.get("status") == "finished" and not state["summary"]["failed"]


def reid_finished(out: Path, epochs: int) -> bool:
    history = json_file(out / "history.json")
    return bool(history) and len(history) >= epochs


def build_world(fmt: str, args: argparse.Namespace, env: dict[str, str],
                log: Callable[[str], None], with_hog: bool = True) -> dict[str, Any]:
    """Every stage of one world (the HOG gallery unless not ``with_hog``); returns the trained
    models' paths, the world and timings."""
    from psearch.core.config import load_config
    from psearch.data import load_dataset

    root = args.work / fmt
    root.mkdir(parents=True, exist_ok=True)
    stages = Stages(root, env, log)
    world, det, reid = root / "world", root / "detector", root / "reid"
    preset = SMOKE["preset"] if args.smoke else "bench"
    det_epochs = SMOKE["detector_epochs"] if args.smoke else DETECTOR_EPOCHS
    reid_epochs = (SMOKE["reid_epochs"] if args.smoke
                   else int(load_config(REID_CONFIG)["train"]["epochs"]))

    stages.command("generate world", ["synth", world, "--format", fmt, "--preset", preset,
                                      "--seed", args.seed],
                   lambda: (world / "synth_summary.json").is_file())
    stages.command("train detector",
                   ["train-detector", "--data", world, "--format", fmt, "--out", det,
                    "--config", "detector_cpu", "--epochs", det_epochs,
                    "--set", f"train.lr_steps=[{max(det_epochs - 1, 1)}]"],
                   lambda: (det / "metrics.json").is_file(), checkpoint=det / "last.pt")
    stages.command("train re-ID",
                   ["train-reid", "--data", world, "--format", fmt, "--out", reid, "--config",
                    REID_CONFIG, "--epochs", reid_epochs, "--quiet"],
                   lambda: reid_finished(reid, reid_epochs), checkpoint=reid / "last.pt")

    dataset = load_dataset(world, fmt)
    test_images = [r.path for r in dataset.gallery]
    galleries = {}
    detectors = [("cascade", det / "last.pt")] + [("hog", "hog")] * with_hog
    for name, weights in detectors:
        dets, emb, gallery = (root / f"{name}_{part}" for part in
                              ("detections", "embeddings", "gallery"))
        extra = ["--hog-upscale", HOG_UPSCALE] if weights == "hog" else []
        if args.smoke:
            extra += ["--score-thresh", SMOKE["score_thresh"]]
        stages.command(f"detect ({name})", ["detect", "--weights", weights, "--out", dets,
                                            "--quiet", *extra, *test_images],
                       lambda dets=dets: detect_finished(dets))
        stages.command(f"embed ({name})", ["embed", "--weights", reid / "last.pt", "--manifest",
                                           dets, "--out", emb, "--quiet", "--restart"],
                       lambda emb=emb: (emb / "embeddings.json").is_file())
        stages.command(f"index ({name})", ["index", "--embeddings", emb, "--out", gallery,
                                           "--overwrite"],
                       lambda gallery=gallery: (gallery / "gallery.json").is_file())
        galleries[name] = {"gallery": gallery, "detections": dets}
    return {"dataset": dataset, "detector": det, "reid": reid, "galleries": galleries,
            "stages": stages}


def build_joint_world(fmt: str, args: argparse.Namespace, env: dict[str, str], log,
                model: str = "oim", config: str = JOINT_CONFIG) -> dict[str, Any]:
    """Every stage of one world for ``train-joint --model MODEL --config CONFIG``; the trained
    run, the gallery and the timings."""
    from psearch.data import load_dataset

    root, world = args.work / fmt, args.worlds / fmt / "world"
    root.mkdir(parents=True, exist_ok=True)
    stages = Stages(root, env, log)
    preset = "tiny" if args.smoke else "bench"
    stages.command("generate world", ["synth", world, "--format", fmt, "--preset", preset,
                                       "--seed", WORLD_SEED],
                    lambda: (world / "synth_summary.json").is_file())
    run = root / "joint"
    train = ["train-joint", "--model", model, "--data", world, "--format", fmt, "--out", run,
             "--config", config, *(["--epochs", 1] if args.smoke else [])]
    stages.command("train joint", train, lambda: (run / "metrics.json").is_file(),
                   checkpoint=run / "last.pt")  # an interrupted training resumes
    dataset = load_dataset(world, fmt)
    images = [str(r.path) for r in dataset.gallery]
    dets, gallery = root / "dets", root / "gallery"
    # --smoke: a barely trained model scores below the usual 0.5; keep the gallery non-empty.
    thresh = ["--score-thresh", 0.01] if args.smoke else []
    stages.command("detect --embed (gallery)", ["detect", "--weights", run / "last.pt", *images,
                                                 "--out", dets, "--embed", "-q", *thresh],
                    lambda: detect_finished(dets) and (dets / "embeddings.json").is_file())
    stages.command("index", ["index", "--manifest", dets, "--embeddings", dets, "--out", gallery],
                    lambda: (gallery / "gallery.json").is_file())
    stages.command("evaluate gallery", ["evaluate-gallery", "--gallery", gallery, "--data", world,
                                         "--format", fmt, "--out", root / "gallery_eval.json"],
                    lambda: (root / "gallery_eval.json").is_file())
    return {"root": root, "run": run, "dataset": dataset, "stages": stages, "dets": dets,
            "gallery": gallery}
