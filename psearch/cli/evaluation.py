"""Click commands of this stage, registered on the ``psearch`` group by ``psearch.cli.main``."""

from __future__ import annotations

from pathlib import Path

import click

from psearch.core.options import (
    format_option,
    gallery_sizes_option,
    out_option,
    quiet_option,
    score_thresh_option,
)
from psearch.evaluation.metrics import DET_THRESH
from psearch.evaluation.report import format_report, write_report_json
from psearch.evaluation.results import load_results
from psearch.evaluation.standard import evaluate

MAX_LISTED_MISSING = 3


@click.command("evaluate")
@click.option(
    "--data",
    "data_root",
    required=True,
    type=click.Path(path_type=Path),
    help="Dataset root folder (CUHK-SYSU, PRW or folder format).",
)
@format_option()
@click.option(
    "--results",
    "results_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Results .npz of the test images and queries (see psearch.evaluation.results).",
)
@gallery_sizes_option("CUHK-SYSU gallery sizes to report, e.g. 50,100.  [default: 50 and 100]")
@click.option("--full-set", is_flag=True, help="CUHK-SYSU: also report the full-set gallery.")
@score_thresh_option(DET_THRESH)
@out_option("Also write the metrics (fractions) to this JSON file.", name="json_path",
            required=False, file=True, aliases=("--json",))
@quiet_option()
def evaluate_command(
    data_root: Path,
    fmt: str,
    results_path: Path,
    gallery_sizes: tuple[int, ...] | None,
    full_set: bool,
    score_thresh: float,
    json_path: Path | None,
    quiet: bool,
) -> None:
    """Score search results with the dataset's standard protocols.

    Person search (mAP, top-1/5/10): CUHK-SYSU with galleries of 50 and 100 images (and the
    full set), PRW over all cameras and across cameras. Detection: AP and recall, all people and
    labeled people. Results without features are scored for detection only.

    \b
    Example:
      psearch evaluate --data CUHK-SYSU/ --results results.npz --out eval.json
      psearch evaluate --data PRW/ --format prw --results results.npz
    """
    from psearch.data import load_dataset

    dataset = load_dataset(data_root, fmt)
    results = load_results(results_path)
    missing = results.check_dataset(dataset, str(results_path))
    if missing:
        listed = ", ".join(missing[:MAX_LISTED_MISSING]) + (
            ", ..." if len(missing) > MAX_LISTED_MISSING else ""
        )
        click.echo(
            f"warning: {len(missing)} test image(s) are not in {results_path}; "
            f"counted as having no detection: {listed}",
            err=True,
        )
    report = evaluate(
        dataset,
        results,
        gallery_sizes=gallery_sizes,
        full_set=full_set,
        det_thresh=score_thresh,
        progress=not quiet,
    )
    click.echo(format_report(report))
    if json_path is not None:
        write_report_json(json_path, report)
        click.echo(f"wrote {json_path}")


COMMANDS: list[click.Command] = [evaluate_command]
