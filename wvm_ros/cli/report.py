"""`wvm report DATASET`: per-episode outcome and final progress, and a PNG of the curves."""
from __future__ import annotations

import argparse
import sys

HELP = "per-episode outcomes and progress curves of a dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="LeRobot dataset folder with a per-frame progress column")
    parser.add_argument("--output", "-o", default=None, help="report folder (default DATASET/report)")
    parser.add_argument("--value-column", default="progress", help="column to plot (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    from wvm_ros.core.report import ReportError, markdown_table, write_report

    try:
        eps, out = write_report(args.dataset, args.output, args.value_column)
    except ReportError as exc:
        print(f"wvm report: {exc}", file=sys.stderr)
        return 1
    print(markdown_table(eps), end="")
    print(f"wrote {out / 'report.md'}, {out / 'report.json'}, {out / 'progress_curves.png'}")
    return 0
