"""`build_report`: runs in, one self-contained HTML report (and designs.csv) out."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from losslab.report import across, page, plots, sensitivity, tables
from losslab.report.analysis import Analysis, analyse
from losslab.report.ranking import DesignResult, resolve_metric
from losslab.report.runs import (
    CURVE_KEYS,
    Selection,
    attach_curves,
    datasets_of,
    foreign_note,
    narrow,
    select_runs,
    tasks_of,
)


@dataclass
class Report:
    """What `build_report` made. `str()` / `os.fspath()` give the HTML path, as the old return value did."""

    html_path: Path
    designs_markdown: str
    best: dict[str, Any] = field(default_factory=dict)
    csv_path: Path | None = None
    analysis: Analysis | None = field(default=None, repr=False)
    parts: int = 1  # >1: the note of several per-task or per-data-set reports (html_path: the first)
    subset: str | None = None  # the task or data set this report was narrowed to
    left_out: str = ""  # the runs left out because LossLab did not write them (runs.foreign_note)
    #: the page lining up every data set's designs (`across`), when the study has several data sets
    summary_path: Path | None = None

    def __fspath__(self) -> str:
        return str(self.html_path)

    def __str__(self) -> str:
        return str(self.html_path)


def best_summary(a: Analysis) -> dict[str, Any]:
    """The best design's label and key metrics (empty when no design has a finite val value).

    `runs` is the number of seeds (reruns of a seed are not counted); `failed_seeds` how many of
    them failed (each still counted in the score)."""
    b: DesignResult | None = a.best
    if b is None:
        return {}
    m = a.metric.name
    out: dict[str, Any] = {
        "label": b.label,
        "params": dict(b.design.values),
        "metric": m,
        "direction": "max" if a.metric.maximize else "min",
        f"val_{m}": b.val.mean,
        f"val_{m}_ci95": b.val.half,
        f"test_{m}": b.test.mean,
        f"test_{m}_ci95": b.test.half,
        "runs": b.n,
        "failed_seeds": b.failed,
    }
    if b.tuned is not None:
        out["tuned"] = dict(b.tuned)
        out["configs_tried"] = len(b.configs)
    return out


def safe_name(name: str) -> str:
    """The folder name a report of `name` is written to, under the output root."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "report"


def build_report(
    client_or_uri: MlflowClient | str | None,
    experiment: str | None,
    sweep: str | None,
    out: Path | str,
    *,
    metric: str | None = None,
    baseline: str | None = None,
    tune: Sequence[str] = (),
    all_runs: bool = False,
    log_artifacts: bool = True,
    task: str | None = None,
    data: str | None = None,
) -> Report:
    """Write <out>/<name>/index.html (self-contained) and designs.csv; return a `Report`.

    `client_or_uri`: an MlflowClient, a tracking URI, or None for the current store. With no
    sweep, the experiment's latest sweep is reported (or all its runs when it has none, or when
    `all_runs`). `metric`: accuracy|auc|rmse|mae|r2 (default: the runs' task's primary metric);
    `baseline`: the design the others are paired with (default: the best); `tune`: params chosen
    per design on val (see tuning.py); `task` / `data`: only the runs of that task (binary|regression)
    or data set (`data.name`), for a study that mixes them. A sweep's report is also logged to its
    parent run under artifact path "report" ("report-<data or task>" when narrowed).
    """
    sel = select_runs(client_or_uri, experiment, sweep, all_runs)
    if task is not None or data is not None:
        sel = narrow(sel, task=task, data=data)
    return _write(sel, out, metric=metric, baseline=baseline, tune=tune, log_artifacts=log_artifacts)


def _write(
    sel: Selection,
    out: Path | str,
    *,
    metric: str | None = None,
    baseline: str | None = None,
    tune: Sequence[str] = (),
    log_artifacts: bool = True,
) -> Report:
    """The report of the selected runs (see `build_report`)."""
    yardstick = resolve_metric(sel.runs, metric)
    keys = CURVE_KEYS if yardstick.task is None else (*CURVE_KEYS, yardstick.curve_key)
    attach_curves(sel, keys)
    a = analyse(sel.runs, yardstick, tune, baseline)
    figs, notes = plots.figures(
        [r.design for r in a.ranked],
        sel.runs,
        a.keys,
        None if yardstick.task is None else yardstick.curve_key,
        f"val {yardstick.name}",
    )
    figs["lr"], notes["lr"] = sensitivity.plot_lr(a)
    head, rows = tables.headers(a), tables.rows(a)
    csv_bytes = tables.to_csv(head, rows)
    out_dir = Path(out) / safe_name(sel.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    left_out = foreign_note(sel)
    ctx = page.Context(f"LossLab report: {sel.name}", sel.uri, sel.experiment, sel.parent, left_out)
    index = out_dir / "index.html"
    index.write_text(page.render(ctx, a, (head, rows), csv_bytes, figs, notes), encoding="utf-8")
    csv_path = out_dir / "designs.csv"
    csv_path.write_bytes(csv_bytes)
    if sel.parent is not None and log_artifacts:
        where = f"report-{sel.subset}" if sel.subset else "report"
        _log_report(sel.client, sel.parent.info.run_id, [index, csv_path], where)
    return Report(
        index, tables.markdown(a), best_summary(a), csv_path, a, subset=sel.subset, left_out=left_out
    )


def _log_report(client: MlflowClient, run_id: str, files: Sequence[Path], where: str) -> None:
    """Attach the report to the sweep's parent run; a failure leaves the local report usable."""
    try:
        for path in files:
            client.log_artifact(run_id, os.fspath(path), where)
    except (MlflowException, OSError) as exc:
        print(f"warning: could not log the report to run {run_id}: {exc}", file=sys.stderr)


def build_reports(
    client_or_uri: MlflowClient | str | None,
    experiment: str | None,
    sweep: str | None,
    out: Path | str,
    *,
    all_runs: bool = False,
    task: str | None = None,
    **options: Any,
) -> list[Report]:
    """`build_report`, or one report per data set when the runs use several (a study such as
    optimizer_stability runs each loss on its own data): a metric is ranked only among runs on the
    same data, and never across binary and regression tasks. `task`: only that task's runs, still
    one report per data set."""
    sel = select_runs(client_or_uri, experiment, sweep, all_runs)
    if task is not None:
        sel = narrow(sel, task=task)
    datasets = datasets_of(sel.runs)
    if len(datasets) > 1:
        reports = [_write(narrow(sel, data=d), out, **options) for d in datasets]
        summary = _write_summary(sel, reports, Path(out), options.get("log_artifacts", True))
        for report in reports:
            report.summary_path = summary
        return reports
    tasks = tasks_of(sel.runs)
    if len(tasks) > 1:
        return [_write(narrow(sel, task=t), out, **options) for t in tasks]
    return [_write(sel, out, **options)]


def _write_summary(sel: Selection, reports: Sequence[Report], out: Path, log_artifacts: bool) -> Path | None:
    """The across-data-sets page of a study with one report per data set (`across`)."""
    analyses = {r.subset: r.analysis for r in reports if r.subset and r.analysis is not None}
    pages = {r.subset: r.html_path for r in reports if r.subset}
    name = f"{sel.name}-across-data"
    index = across.write(out / safe_name(name), f"LossLab summary: {name}", analyses, pages)
    if index is not None and sel.parent is not None and log_artifacts:
        _log_report(
            sel.client, sel.parent.info.run_id, [index, index.parent / "summary.csv"], "report-summary"
        )
    return index
