"""Probe a joint OIM checkpoint: why does (or doesn't) its identity loss fall?

For a few training batches (train mode, the checkpoint's OIM table and queue, no update kept):
- gradient norms of the detection terms and of ``loss_reid`` over the shared parameters;
- for the labeled foreground RoIs: mean cosine with their own lookup-table row, mean of the
  best cosine over the whole table (rows and queue), and how often that best row is a queue
  slot; the mean pairwise cosine of the batch's RoI features.

A loss that cannot fall shows as own-row cosine near 0 while the best row (a recent queue
entry) is near 1: the features change faster than the table's rows are revisited.

Batches are drawn as the checkpoint's ``train.sampler`` draws them (pairs or shuffled images).

    python benchmarks/joint_oim_probe.py runs/bench_joint/cuhk/joint/last.pt \
        runs/bench_cascade/cuhk/world --format cuhk --batches 4
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch
import torch.nn.functional as F

from psearch.core.checkpoint import load_checkpoint
from psearch.core.errors import PsearchError
from psearch.data import load_dataset
from psearch.joint.config import resolve_joint_config
from psearch.joint.model import JointSearchModel
from psearch.joint.train import train_loader
from psearch.nn.targets import identity_table


def grad_norm(loss: torch.Tensor, params: list[torch.Tensor]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g ** 2).sum() for g in grads if g is not None)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("world")
    parser.add_argument("--format", default="auto")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)

    payload = load_checkpoint(args.checkpoint, kind="joint")
    config = resolve_joint_config(payload["config"])
    if config["reid"]["model"] != "oim" or config["reid"]["loss"] != "oim":
        raise PsearchError(f"{args.checkpoint}: a joint OIM checkpoint is needed (this one is "
                           f"{config['reid']['model']} with loss {config['reid']['loss']})")
    config["reid"]["num_ids"] = payload["config"]["reid"]["num_ids"]
    model = JointSearchModel.from_config(config, load_weights=False)
    model.load_state_dict(payload["model"])
    model.train()
    criterion = model.roi_heads.criterion
    records = [r for r in load_dataset(args.world, args.format).train if len(r.boxes)]
    # The batches the checkpoint trained on (its train.sampler), without flips.
    loader = train_loader(records, identity_table(records),
                          {**config["train"], "hflip": 0.0, "batch_size": args.batch_size})
    params = [p for p in model.parameters() if p.requires_grad]
    seen: dict[str, float] = {}

    def probe(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        feats = F.normalize(features.detach(), dim=1)
        labeled = labels >= 0
        table = torch.cat([criterion.lut, criterion.queue])
        cos = feats[labeled] @ table.t()
        best = cos.max(1)
        seen.update(own=float(cos.gather(1, labels[labeled, None]).mean()),
                    best=float(best.values.mean()),
                    best_in_queue=float((best.indices >= len(criterion.lut)).float().mean()),
                    batch=float((feats @ feats.t()).mean()))
        return original(features, labels)

    original = criterion.forward
    criterion.forward = probe
    buffers = copy.deepcopy(dict(criterion.named_buffers()))
    print("batch | det grad | reid grad | own-row cos | best cos | best in queue | batch cos")
    for index, (images, targets) in enumerate(loader):
        if index == args.batches:
            break
        losses = model([img.float().div(255) for img in images], targets)
        detection = sum(v for k, v in losses.items() if k != "loss_reid")
        print(f"{index} | {grad_norm(detection, params):.2f} | "
              f"{grad_norm(losses['loss_reid'], params):.2f} | {seen['own']:.3f} | "
              f"{seen['best']:.3f} | {seen['best_in_queue']:.2f} | {seen['batch']:.3f}")
        for name, value in buffers.items():  # leave the table as the checkpoint had it
            getattr(criterion, name).copy_(value)


if __name__ == "__main__":
    try:
        main()
    except PsearchError as error:
        sys.exit(f"error: {error}")
