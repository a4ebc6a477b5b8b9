"""Identity-loss ablation of the joint models on a generated world (the pattern of DC-I-Net's
Table 5): OIM vs OLP vs HEP vs OLP+HEP vs OLP+C2HEP, every variant under the same budget.

Every variant starts from the same detector (``detector_cpu`` trained ``--detector-epochs`` on
the world's train split once, then reused), as the papers start from a trained person-search
network, and fine-tunes the whole joint network for ``--epochs`` epochs with the same settings:
the ``joint_oim_cpu`` network (MobileNetV3-FPN Faster R-CNN at 288 px), batch 4, SGD lr
``--lr`` with 50 warm-up iterations, x0.1 at 75% of the run. Only the identity loss and the
batch sampling differ:

  oim        the OIM joint model (psearch train-joint --model oim): shuffled batches of 4 images
  olp, hep, olp+hep, olp+c2hep
             the I-Net architecture (re-ID on the sampled proposals, RoI features shared with
             detection) with that loss, on batches of 2 image pairs sharing a person
  dcinet     DC-I-Net (OLP + C2HEP on refined boxes re-pooled into their own head), optional

Each variant trains with torch threads = --threads (1 by default: the machine is shared) and is
scored by the evaluator on the test split, on its own detections and on ground-truth boxes.
Finished stages (``metrics.json`` under --work) are reused; an interrupted one resumes.
Writes ``results/joint_ablation.json`` (merged with the variants already there) and prints a
markdown table.

    python benchmarks/joint_ablation.py                       # world: ci preset, seed 0
    python benchmarks/joint_ablation.py --variants dcinet     # one more row
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

from psearch.pipeline.stages import Stage, StageRunner, train

RESULTS = Path(__file__).parent / "results"
VARIANTS = {  # name: (reid.model, reid.loss, other reid settings)
    "oim": ("oim", "oim", {}),
    "olp": ("inet", "olp", {}),
    "hep": ("inet", "hep", {}),
    "olp+hep": ("inet", "olp+hep", {}),
    "olp+c2hep": ("inet", "olp+c2hep", {}),
    "dcinet": ("dcinet", "olp+c2hep", {}),
    # OLP's cosines in [-1, 1] make a flat softmax (the paper has no temperature): scale 10
    "olp(x10)+c2hep": ("inet", "olp+c2hep", {"olp_scale": 10.0}),
    "dcinet olp(x10)": ("dcinet", "olp+c2hep", {"olp_scale": 10.0}),
}
DEFAULT_VARIANTS = ["oim", "olp", "hep", "olp+hep", "olp+c2hep"]


def variant_config(name: str, epochs: int, lr: float, detector: Path) -> dict[str, Any]:
    """``joint_oim_cpu``'s model and train sections with the variant's ``reid`` section (the
    pair models take their defaults from ``joint_inet_cpu`` / ``joint_dcinet_cpu``), started
    from the ``detector`` checkpoint."""
    from psearch.core.config import load_config

    model, loss, extra = VARIANTS[name]
    base = load_config("joint_oim_cpu")
    reid = dict(load_config(f"joint_{model}_cpu")["reid"], loss=loss, **extra)
    train = dict(base["train"], epochs=epochs, lr=lr, warmup_iters=50,
                 lr_steps=[max(1, round(0.75 * epochs))])
    return {"model": dict(base["model"], weights=str(detector.resolve())), "reid": reid,
            "train": train}


def train_start_detector(world: Path, work: Path, epochs: int, log) -> dict[str, Any]:
    """``detector_cpu`` for ``epochs`` epochs on the world (reused once finished)."""
    from psearch.core.config import load_config
    from psearch.data import load_dataset
    from psearch.detector.train import train_detector

    out = work / "detector"
    config = load_config("detector_cpu")
    config["train"].update(epochs=epochs, lr_steps=[max(1, round(0.8 * epochs))])
    StageRunner(log=log, prefix="== ").run(Stage(
        f"detector ({epochs} epochs)", train(train_detector, load_dataset(world, "cuhk"), config,
                                             out, device="cpu", epochs=epochs, progress=False,
                                             log=log),
        [out / "metrics.json"], checkpoint=out / "last.pt"))
    metrics = json.loads((out / "metrics.json").read_text())
    log(f"== detector: {metrics}")
    return metrics


def run_variant(name: str, world: Path, work: Path, epochs: int, lr: float, log
                ) -> dict[str, Any]:
    """Train and evaluate one variant (or read its finished metrics)."""
    from psearch.data import load_dataset
    from psearch.joint.train import train_joint

    out = work / name.replace("+", "_").replace(" ", "_").replace("(", "").replace(")", "")
    metrics_file = out / "metrics.json"
    config = variant_config(name, epochs, lr, work / "detector" / "last.pt")
    StageRunner(log=log, prefix="== ").run(Stage(
        f"{name} ({epochs} epochs)", train(train_joint, load_dataset(world, "cuhk"), config, out,
                                           device="cpu", epochs=epochs, progress=False, log=log),
        [metrics_file], checkpoint=out / "last.pt"))
    metrics = json.loads(metrics_file.read_text())
    from psearch.core.checkpoint import load_checkpoint

    payload = load_checkpoint(out / "last.pt")
    history = payload.get("history", [])
    metrics["iterations"] = int(payload["scheduler"]["last_epoch"])
    metrics["images_per_iteration"] = int(payload["config"]["train"]["batch_size"])
    metrics["loss_history"] = [{"epoch": r["epoch"], **r["losses"]} for r in history]
    metrics["config"] = {"reid": payload["config"]["reid"], "train": payload["config"]["train"]}
    return metrics


def row(name: str, m: dict[str, Any], protocol: str) -> str:
    det = m["detected"]["search"][protocol]
    gt = m["ground_truth"]["search"][protocol]
    ap = m["detected"]["detection"]["all"]
    return (f"| {name} | {100 * det['mAP']:.1f} | {100 * det['top1']:.1f} | "
            f"{100 * gt['mAP']:.1f} | {100 * gt['top1']:.1f} | {100 * ap['ap']:.1f} | "
            f"{m['iterations']} | {m['train_seconds'] / 60:.1f} |")


def table(results: dict[str, Any], protocol: str) -> str:
    lines = [f"search {protocol}, mAP / top-1 (%), on detected and on ground-truth boxes",
             "",
             "| identity loss | det mAP | det top-1 | gt mAP | gt top-1 | det AP | iters | "
             "train min |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [row(name, m, protocol) for name, m in results.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/joint_ablation"))
    parser.add_argument("--preset", default="ci", help="psearch synth preset of the world")
    parser.add_argument("--seed", type=int, default=0, help="world seed")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of every variant")
    parser.add_argument("--lr", type=float, default=0.01, help="learning rate of every variant")
    parser.add_argument("--detector-epochs", type=int, default=8,
                        help="epochs of the shared starting detector (detector_cpu)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS,
                        choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=RESULTS / "joint_ablation.json")
    args = parser.parse_args()

    import torch

    from psearch.core.io import write_json_atomic
    from psearch.data.synth import generate_world

    torch.set_num_threads(args.threads)
    world = args.work / "world"
    if not (world / "synth_summary.json").is_file():
        generate_world(world, "cuhk", seed=args.seed, preset=args.preset)
    detector = train_start_detector(world, args.work, args.detector_epochs, print)
    results: dict[str, Any] = {}
    commands: list[str] = []
    command = "python benchmarks/joint_ablation.py " + " ".join(
        ["--epochs", str(args.epochs), "--lr", str(args.lr), "--detector-epochs",
         str(args.detector_epochs), "--threads", str(args.threads), "--variants",
         *(f"'{v}'" if " " in v or "(" in v else v for v in args.variants)])
    if args.out.is_file():  # keep the variants of an earlier run that this one does not redo
        earlier = json.loads(args.out.read_text())
        results = earlier.get("variants", {})
        commands = earlier.get("commands", [earlier["command"]] if "command" in earlier else [])
    commands = [c for c in commands if c != command] + [command]
    for name in args.variants:
        results[name] = run_variant(name, world, args.work, args.epochs, args.lr, print)
        payload = {
            "world": {"format": "cuhk", "preset": args.preset, "seed": args.seed,
                      "summary": json.loads((world / "synth_summary.json").read_text())},
            "budget": {"epochs": args.epochs, "lr": args.lr, "torch_threads": args.threads,
                       "start": f"detector_cpu, {args.detector_epochs} epochs",
                       "note": "every variant: the same starting detector, epochs and batch "
                               "size (4 images); CPU, a 2-core machine shared with other jobs"},
            "start_detector": {"epochs": args.detector_epochs, "metrics": detector},
            "machine": {"platform": platform.platform(), "torch": torch.__version__},
            "commands": commands,
            "variants": results}
        write_json_atomic(args.out, payload)
    protocols = list(next(iter(results.values()))["detected"]["search"])
    for protocol in protocols:
        print()
        print(table(results, protocol))


if __name__ == "__main__":
    main()
