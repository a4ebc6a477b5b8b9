"""OIM vs plain softmax cross-entropy for re-ID, same data, same backbone, same budget.

Trains the ``reid_cpu`` recipe twice on a generated world's train split, once with the OIM loss
and once with a softmax classifier over the identities, and evaluates both on the test split
with ground-truth boxes (the re-ID upper bound of the search protocol). Reference rows: the same
backbone untrained (random initialisation, same seed) and the colour-histogram baseline.

CPU budget: about 10 minutes on 2 cores with the defaults (a generated CUHK-format world of 1200
images and 360 identities; reid_cpu, 20 epochs of ~27 steps for each loss; ~4 minutes each).

    python benchmarks/reid_oim_vs_softmax.py
    python benchmarks/reid_oim_vs_softmax.py --world path/to/world --epochs 40 --set data.p=8
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "reid_oim_vs_softmax.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", type=Path, default=None,
                        help="an existing dataset (default: generate one in a temp folder)")
    parser.add_argument("--format", default="cuhk", choices=["cuhk", "prw"])
    parser.add_argument("--preset", default="ci", help="synth preset of the generated world")
    parser.add_argument("--images", type=int, default=1200, help="images of the generated world")
    parser.add_argument("--identities", type=int, default=360,
                        help="identities of the generated world")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--config", default="reid_cpu")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is fastest on a busy 2-core machine)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="config override for both runs")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    from psearch.baselines.color import ColorHistogramEmbedder
    from psearch.core.io import write_json_atomic
    from psearch.data import load_dataset
    from psearch.data.synth import generate_world
    from psearch.reid.config import reid_config
    from psearch.reid.evaluate import evaluate_gt_boxes
    from psearch.reid.model import ReidModel, build_reid_net
    from psearch.reid.train import train_reid

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        world = args.world
        if world is None:
            world = tmp / "world"
            generate_world(world, args.format, seed=args.seed, preset=args.preset,
                           n_images=args.images, n_identities=args.identities)
        dataset = load_dataset(world, args.format)
        base = reid_config(args.config, (*args.overrides, f"train.epochs={args.epochs}",
                                         f"train.eval_every={args.epochs}",
                                         f"train.seed={args.seed}"))
        rows = []
        torch.manual_seed(args.seed)
        untrained = ReidModel(build_reid_net(base["model"]), base, args.device)
        rows.append({"method": f"{base['model']['backbone']} untrained", "train_seconds": 0.0,
                     **evaluate_gt_boxes(untrained, dataset)})
        rows.append({"method": "colour histogram (baseline)", "train_seconds": 0.0,
                     **evaluate_gt_boxes(ColorHistogramEmbedder(), dataset)})
        for loss in ("oim", "softmax"):
            cfg = {**base, "loss": {**base["loss"], "name": loss}}
            started = time.perf_counter()
            history = train_reid(dataset, cfg, tmp / loss, device=args.device,
                                 progress=False).history
            rows.append({"method": f"{base['model']['backbone']} + {loss}",
                         "train_seconds": round(time.perf_counter() - started, 1),
                         "final_loss": history[-1]["loss"], **history[-1]["eval"]})

    model = base["model"]
    world_name = (str(args.world) if args.world else
                  f"{args.format} world ({args.preset}, {args.images} images, {args.identities} "
                  f"identities, seed {args.seed})")
    title = (f"{world_name}: {len(dataset.train)} train images, {len(dataset.queries)} queries; "
             f"{model['backbone']} at "
             f"{model['input_size'][0]}x{model['input_size'][1]}, {args.epochs} epochs, "
             f"{args.device}; protocol {rows[0]['protocol']}, ground-truth boxes")
    print(f"\n{title}\n")
    print("| method | mAP | top-1 | top-5 | train time (s) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['mAP']:.1%} | {r['top1']:.1%} | {r['top5']:.1%} | "
              f"{r['train_seconds']:.0f} |")
    write_json_atomic(args.out, {"title": title, "config": base, "rows": rows})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
