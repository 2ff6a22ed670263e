"""Compare loss designs across runs: `python -m losslab.compare [--metric M] [--tune P ...] [--sweep ID]`.

The command line of the report package (losslab.report): ranks designs on a task metric read on
val, shows test beside it, pairs every design with a baseline over shared seeds, and writes one
self-contained reports/<name>/index.html (also logged on the sweep's parent run).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from losslab.report import Report, ReportError, build_report, build_reports, load_runs
from losslab.report.ranking import METRICS
from losslab.tracking.store import TrackingError
from losslab.vocab import TASK_METRICS

__all__ = ["Report", "ReportError", "build_report", "build_reports", "load_runs", "main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m losslab.compare",
        description="Compare loss designs across MLflow runs: one self-contained HTML report under "
        "<out>/<sweep or experiment name>/. Without arguments: the latest sweep in the current store "
        "(MLFLOW_TRACKING_URI or the project's mlflow.db), in any experiment (each study has its "
        "own), or in MLFLOW_EXPERIMENT_NAME's when that is set.",
    )
    p.add_argument("--experiment", help="experiment name (default: MLFLOW_EXPERIMENT_NAME or 'losslab')")
    p.add_argument(
        "--sweep", metavar="PARENT_RUN_ID", help="the sweep's parent run id (default: latest sweep)"
    )
    p.add_argument(
        "--all", action="store_true", dest="all_runs", help="all runs of the experiment, not one sweep"
    )
    p.add_argument(
        "--metric",
        help=f"task metric to rank on: {'|'.join(METRICS)} (default: the runs' task's primary metric, "
        "accuracy for binary, rmse for regression)",
    )
    p.add_argument(
        "--baseline",
        metavar="DESIGN",
        help="design the others are paired with (default: the best design): its label as the report "
        "prints it, e.g. 'margin=0.5, lr=0.01' in a sweep of loss.margin x optimizer.lr, or key=value pairs "
        "joined by commas that name only it, short or full keys (margin=0.5,optimizer.lr=0.01)",
    )
    p.add_argument(
        "--tune",
        nargs="+",
        default=[],
        metavar="PARAM",
        help="params chosen per design on mean val (e.g. optimizer.lr); the other swept params "
        "define designs",
    )
    p.add_argument(
        "--task",
        choices=list(TASK_METRICS),
        help="only the runs of this task (by default a study that mixes tasks or data sets gets one report "
        "per data set)",
    )
    p.add_argument("--data", metavar="NAME", help="only the runs on this data set (data.name)")
    p.add_argument("--out", type=Path, default=Path("reports"), help="output root (default: ./reports)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.sweep and args.all_runs:
        print("Error: --sweep and --all exclude each other.", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        options = dict(metric=args.metric, baseline=args.baseline, tune=args.tune, all_runs=args.all_runs)
        if args.data:
            reports = [
                build_report(
                    None, args.experiment, args.sweep, args.out, task=args.task, data=args.data, **options
                )
            ]
        else:  # --task alone still gets one report per data set of that task
            reports = build_reports(None, args.experiment, args.sweep, args.out, task=args.task, **options)
    except (ReportError, TrackingError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    if reports and reports[0].left_out:  # the same runs for each per-task or per-data-set report
        print(f"note: {reports[0].left_out}", file=sys.stderr)
    for report in reports:
        best = report.best.get("label", "none (every design has a failed run)")
        print(f"best design: {best}")
        print(f"report: {report.html_path} ({time.perf_counter() - started:.1f}s)")
    if reports and reports[0].summary_path is not None:
        print(f"summary across data sets: {reports[0].summary_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
