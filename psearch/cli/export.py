"""``psearch export onnx``: a trained re-ID network as an ONNX file for onnxruntime."""

from __future__ import annotations

from pathlib import Path

import click


@click.group("export")
def export_command() -> None:
    """Export trained models to other runtimes.

    \b
    Example:
      psearch export onnx --weights runs/reid/last.pt --out reid.onnx
      psearch embed --weights reid.onnx --manifest dets/manifest.csv --out emb/
    """


@export_command.command("onnx")
@click.option("--weights", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A re-ID checkpoint (psearch train-reid); traced and checked on the CPU.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The .onnx file to write (replaced only once complete).")
@click.option("--check-crops", type=click.IntRange(min=1), default=8, show_default=True,
              help="Random crops on which the ONNX and PyTorch embeddings are compared.")
def onnx_command(weights: Path, out: Path, check_crops: int) -> None:
    """Write the re-ID network to ONNX (input size, mean/std and the source checkpoint's
    sha256 as metadata), then print the largest difference between its embeddings and the
    PyTorch model's on the same crops. The .onnx file is accepted wherever a re-ID checkpoint
    is (embed, query --checkpoint, PersonSearch) and runs without torch."""
    from psearch.core.errors import PsearchError
    from psearch.reid.export import export_reid_onnx

    if out.suffix.lower() != ".onnx":
        raise PsearchError(f"{out}: the output must end in .onnx (how psearch recognises it)")
    report = export_reid_onnx(weights, out, check_batch=check_crops)
    meta = report["metadata"]
    click.echo(f"{out}: {report['bytes'] / 1e6:.1f} MB, opset {report['opset']}, input "
               f"{meta['input_size'][0]}x{meta['input_size'][1]}, dim {meta['dim']}")
    click.echo(f"max |onnxruntime - pytorch| over {report['check_crops']} crops: "
               f"{report['max_abs_diff']:.2e}")


COMMANDS: list[click.Command] = [export_command]
