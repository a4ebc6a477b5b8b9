"""Cross-dataset re-ID: trained on Market-1501-layout crops of one world, serving another world.

The cascade's re-ID stage learns from crop datasets, so it can be trained on one dataset and
search the scenes of another. This benchmark generates two different worlds (other seeds: other
identities, cameras, light) and trains the ``reid_cpu`` recipe (same config, same epochs) on:

  (a) the Market-1501-layout crop set cut from world A (``psearch synth --format market``):
      cross-dataset for world B;
  (b) the train split of the CUHK-SYSU-format world B itself: in-domain;

then scores both, and two untrained references (colour histograms; the same backbone untrained,
same seed), on world B's test split with ground-truth boxes (CUHK-SYSU protocol, galleries of
50 and 100 images: the re-ID upper bound of the cascade) and on world A's crops (Market-1501
protocol). Writes results/reid_cross_dataset.json and prints a markdown table.

CPU budget: about 10 minutes with the defaults on a shared 2-core machine (--threads 1). The
worlds and trained models under --work are reused on a re-run (an interrupted training resumes).

    python benchmarks/reid_cross_dataset.py
    python benchmarks/reid_cross_dataset.py --smoke        # tiny worlds, 2 epochs: the plumbing
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

from psearch.pipeline.stages import Stage, StageRunner
from psearch.pipeline.stages import train as stage_train

RESULTS = Path(__file__).parent / "results" / "reid_cross_dataset.json"
SEED_MARKET, SEED_CUHK = 11, 12
"""World A (Market crops) and world B (CUHK-SYSU scenes): different seeds, different worlds."""
WORLD = {"preset": "ci", "n_images": 800, "n_identities": 300}
SMOKE_WORLD = {"preset": "tiny"}
CONFIG = "reid_cpu"


def world(root: Path, fmt: str, seed: int, spec: dict[str, Any], log) -> Path:
    """Generate the world unless a finished one of the same spec is there."""
    from psearch.data.synth import generate_world

    summary_path = root / "synth_summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        same = all(summary["config"].get(k) == v for k, v in spec.items() if k != "preset")
        if (summary.get("complete") and summary.get("seed") == seed
                and summary.get("preset") == spec["preset"] and same):
            log(f"  {fmt} world (seed {seed}): reused {root}")
            return root
    started = time.perf_counter()
    generate_world(root, fmt, seed=seed, workers=1, **spec)
    log(f"  {fmt} world (seed {seed}): generated in {time.perf_counter() - started:.0f} s")
    return root


def train(dataset: Any, cfg: dict[str, Any], out: Path, log) -> dict[str, Any]:
    """Train (or reuse / resume) a re-ID model; its history and training seconds."""
    from psearch.reid.train import HISTORY_NAME, train_reid
    from psearch.training.loop import LAST_NAME

    epochs = int(cfg["train"]["epochs"])
    history_path = out / HISTORY_NAME

    def done() -> bool:
        return (history_path.is_file() and (out / LAST_NAME).is_file()
                and len(json.loads(history_path.read_text())) >= epochs)

    StageRunner(log=log, prefix="  ").run(Stage(
        f"{out.name} ({epochs} epochs)",
        stage_train(train_reid, dataset, cfg, out, device="cpu", progress=False,
                    evaluate=False,
                    log=lambda line: log(f"    {out.name}: {line}")),
        done=done, checkpoint=out / LAST_NAME))
    history = json.loads(history_path.read_text())
    return {"history": history, "train_seconds": round(sum(h["seconds"] for h in history), 1)}


def scores(embedder: Any, cuhk: Any, market: Any) -> dict[str, Any]:
    """CUHK-SYSU gallery-50/100 (ground-truth boxes) on world B; Market protocol on world A."""
    from psearch.evaluation import evaluate_search, search_protocols
    from psearch.reid.evaluate import evaluate_gt_boxes, ground_truth_results

    results = ground_truth_results(embedder, cuhk)
    out = {name: evaluate_search(cuhk, results, **kwargs)
           for name, kwargs in search_protocols(cuhk).items()}
    out["market"] = evaluate_gt_boxes(embedder, market)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/bench_reid_cross"))
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"training epochs of both models (default: {CONFIG}'s)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--smoke", action="store_true", help="tiny worlds and 2 epochs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from psearch.baselines.color import ColorHistogramEmbedder
    from psearch.core.io import write_json_atomic
    from psearch.data import load_dataset
    from psearch.reid.config import reid_config
    from psearch.reid.model import ReidModel, build_reid_net

    started = time.perf_counter()
    work = args.work / ("smoke" if args.smoke else "full")
    spec = SMOKE_WORLD if args.smoke else WORLD
    epochs = 2 if args.smoke else args.epochs
    # no evaluation while training: every row is scored below, the same way
    cfg = reid_config(CONFIG, ("train.eval_every=0", *([f"train.epochs={epochs}"] if epochs
                                                       else [])))
    print(f"work: {work}", flush=True)
    log = lambda line: print(line, flush=True)  # noqa: E731
    notes: list[str] = []
    market = load_dataset(world(work / "market_A", "market", SEED_MARKET, spec, log), "market",
                          notes)
    cuhk = load_dataset(world(work / "cuhk_B", "cuhk", SEED_CUHK, spec, log), "cuhk", notes)
    for note in notes:
        log(f"  note: {note}")

    trained = {"market": train(market, cfg, work / "reid_market_A", log),
               "cuhk": train(cuhk, cfg, work / "reid_cuhk_B", log)}
    torch.manual_seed(int(cfg["train"]["seed"]))
    untrained = ReidModel(build_reid_net(cfg["model"]), cfg, "cpu")
    rows = [
        {"row": "(a)", "method": "re-ID trained on Market crops of world A (cross-dataset)",
         "trained_on": "market_A", **trained["market"],
         "scores": scores(ReidModel.from_checkpoint(work / "reid_market_A" / "last.pt", "cpu"),
                          cuhk, market)},
        {"row": "(b)", "method": "re-ID trained on world B's train split (in-domain)",
         "trained_on": "cuhk_B", **trained["cuhk"],
         "scores": scores(ReidModel.from_checkpoint(work / "reid_cuhk_B" / "last.pt", "cpu"),
                          cuhk, market)},
        {"row": "(c)", "method": "colour histogram (no training)", "trained_on": None,
         "scores": scores(ColorHistogramEmbedder(), cuhk, market)},
        {"row": "(d)", "method": f"{cfg['model']['backbone']} untrained", "trained_on": None,
         "scores": scores(untrained, cuhk, market)},
    ]
    for row in rows:
        row.pop("history", None)

    counts = {
        "market_A": {"train_crops": len(market.train),
                     "train_identities": len({int(r.pids[0]) for r in market.train}),
                     "gallery_crops": len(market.gallery), "queries": len(market.queries)},
        "cuhk_B": {"train_images": len(cuhk.train),
                   "train_identities": len({p for r in cuhk.train for p in r.pids.tolist()
                                            if p >= 0}),
                   "test_images": len(cuhk.gallery), "queries": len(cuhk.queries)},
    }
    model = cfg["model"]
    title = (f"world A: Market-layout crops (seed {SEED_MARKET}: "
             f"{counts['market_A']['train_crops']} train crops of "
             f"{counts['market_A']['train_identities']} identities); world B: "
             f"CUHK-SYSU layout (seed {SEED_CUHK}: {counts['cuhk_B']['train_images']} train "
             f"images, {counts['cuhk_B']['train_identities']} identities; "
             f"{counts['cuhk_B']['queries']} queries); {CONFIG}, {model['backbone']} at "
             f"{model['input_size'][0]}x{model['input_size'][1]}, {cfg['train']['epochs']} "
             f"epochs, {args.threads} CPU thread(s)")
    table = markdown(rows)
    print(f"\n{title}\n\n{table}")
    command = "python benchmarks/reid_cross_dataset.py" + (" " + " ".join(sys.argv[1:])
                                                         if sys.argv[1:] else "")
    write_json_atomic(args.out, {
        "title": title, "command": command, "world_spec": spec,
        "seeds": {"market_A": SEED_MARKET, "cuhk_B": SEED_CUHK}, "counts": counts,
        "config": cfg, "rows": rows, "table": table,
        "machine": {"platform": platform.platform(), "torch": torch.__version__,
                    "threads": args.threads},
        "seconds": round(time.perf_counter() - started, 1)})
    print(f"\nwrote {args.out} ({time.perf_counter() - started:.0f} s)")


def markdown(rows: list[dict[str, Any]]) -> str:
    """mAP / top-1 / top-5 / top-10 (%) per protocol, one line per row."""
    protocols = [(name, f"world B, {name.replace('-', ' ')}" if name != "market"
                  else "world A crops, Market protocol") for name in rows[0]["scores"]]
    lines = ["| row | re-ID | " + " | ".join(label for _, label in protocols) + " | train s |",
             "|---|---|" + "---:|" * (len(protocols) + 1)]
    for row in rows:
        cells = []
        for name, _ in protocols:
            m = row["scores"][name]
            cells.append(" / ".join(f"{100 * m[k]:.1f}" for k in ("mAP", "top1", "top5", "top10")))
        seconds = f"{row['train_seconds']:.0f}" if "train_seconds" in row else ""
        lines.append(f"| {row['row']} | {row['method']} | {' | '.join(cells)} | {seconds} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
