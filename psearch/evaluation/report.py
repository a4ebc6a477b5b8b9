"""Evaluation reports: a printed markdown table and a JSON file."""

from __future__ import annotations

import os

from psearch.core.io import write_json_atomic


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def format_report(report: dict) -> str:
    """The result of ``psearch.evaluation.evaluate`` as markdown tables, percentages to 0.1."""
    lines = [
        f"dataset: {report['dataset']}  (detection score threshold {report['det_thresh']})",
        "",
    ]
    if report["search"]:
        lines += [
            "| search protocol | mAP | top-1 | top-5 | top-10 | queries |",
            "|---|---|---|---|---|---|",
        ]
        for name, m in report["search"].items():
            queries = str(m["queries"]) + (
                f" ({m['skipped_queries']} skipped)" if m["skipped_queries"] else ""
            )
            lines.append(
                f"| {name} | {_pct(m['mAP'])} | {_pct(m['top1'])} | {_pct(m['top5'])} "
                f"| {_pct(m['top10'])} | {queries} |"
            )
        lines.append("")
    lines += ["| detection | AP | recall | ground truths | detections |", "|---|---|---|---|---|"]
    for name, m in report["detection"].items():
        people = "all people" if name == "all" else "labeled people"
        lines.append(
            f"| {people} | {_pct(m['ap'])} | {_pct(m['recall'])} | {m['gt']} | {m['detections']} |"
        )
    return "\n".join(lines)


def write_report_json(path: str | os.PathLike, report: dict) -> None:
    """Write ``report`` to ``path`` as JSON (atomically); metrics stay fractions in [0, 1]."""
    write_json_atomic(path, report)
