"""The report page: one self-contained HTML file (figures and the CSV embedded as data URIs).

Self-contained because MLflow shows an HTML artifact from a blob URL inside a sandboxed iframe,
where relative paths to images beside it cannot load; a data URI always does.
"""

from __future__ import annotations

import base64
import html
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlflow.entities import Experiment, Run

from losslab import links
from losslab.report.analysis import Analysis
from losslab.report.designs import sort_key
from losslab.report.runs import RunData
from losslab.report.stats import MIN_SEEDS
from losslab.report.tables import fmt, fmt_gaps, fmt_interval
from losslab.report.tuning import budget_sentence
from losslab.tracking.liveness import REASON_TAG as KILLED_REASON
from losslab.tracking.params import redact_uri

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}
tr.best td{font-weight:600;background:#f1faf1}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px}
.note{color:#555;font-size:13px}
.warn{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em 1em;margin:1em 0}
.verdict{background:#f1faf1;border-left:4px solid #2ca02c;padding:.5em 1em;margin:1em 0}
"""


def esc(text: Any) -> str:
    return html.escape(str(text))


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def html_table(head: Sequence[str], rows: Sequence[Sequence[str]], best: int | None = None) -> str:
    """Cells are HTML already (escape text before)."""
    out = ["<table>", "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        cls = ' class="best"' if i == best else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


@dataclass
class Context:
    """Where the runs came from: shown in the header and used for links."""

    title: str
    uri: str
    experiment: Experiment
    parent: Run | None


def _header(ctx: Context, a: Analysis) -> str:
    exp = ctx.experiment
    source = (
        f"sweep <code>{esc(ctx.parent.info.run_id)}</code>" if ctx.parent else "all runs of the experiment"
    )
    table = links.runs_url(exp.experiment_id, ctx.uri)
    lines = [f'Runs in the MLflow UI: <a href="{esc(table)}">{esc(table)}</a>']
    if ctx.parent is not None:
        url = links.run_url(exp.experiment_id, ctx.parent.info.run_id, ctx.uri)
        lines.append(f'Sweep parent run: <a href="{esc(url)}">{esc(ctx.parent.info.run_id)}</a>')
    out = [
        "<!DOCTYPE html>",
        f"<html><head><meta charset='utf-8'><title>{esc(ctx.title)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{esc(ctx.title)}</h1>",
        f"<p>{len(a.runs)} runs from {source} in experiment <b>{esc(exp.name)}</b> (id "
        f"{esc(exp.experiment_id)}), store <code>{esc(redact_uri(ctx.uri))}</code>. "
        f"Generated {esc(time.strftime('%Y-%m-%d %H:%M:%S'))}.</p>",
        "<p>" + "<br>".join(lines) + "</p>",
    ]
    if not ctx.uri.startswith(("http://", "https://")):
        out.append(
            "<p class='note'>The store is a local file: start the UI first with <code>make ui</code> "
            "(LOSSLAB_UI_HOST / LOSSLAB_UI_PORT choose its address), then open the links above.</p>"
        )
    return "\n".join(out)


def warnings_of(a: Analysis) -> list[str]:
    """Plain sentences about what limits the comparison (plain text, escaped by the caller)."""
    out = []
    m = a.metric
    if m.task is None:
        out.append(
            "These runs carry no task tag and no task metrics, so designs are ranked on their own val loss. "
            "Different losses measure different things: this ranking compares only designs of one loss."
        )
    if a.no_heldout:
        out.append(
            f"No held-out data: {a.no_heldout} of {len(a.runs)} runs used a data set without a held-out "
            "split (tag heldout=false). Their val and test values are computed on the training data: "
            "they measure fit, not generalisation."
        )
    seeds = [len({s.run.seed for s in r.scores}) for r in a.ranked]
    if seeds and min(seeds) < MIN_SEEDS:
        out.append(
            f"Too few seeds: the smallest design has {min(seeds)} seed(s). Below {MIN_SEEDS} seeds a 95% "
            "interval is too wide, or too unstable, to tell designs apart; add seeds (seed=0,1,2,3,4)."
        )
    if a.best is None:
        out.append(
            "Every design has a failed, diverged or non-finite run (or no val value): none is "
            "highlighted as best."
        )
    else:
        tied = [r.label for r in a.ranked if r.clean and r.val.mean == a.best.val.mean]
        if len(tied) > 1:
            out.append(
                f"{len(tied)} designs tie for the best mean val {m.name} ({a.best.val.mean:.4g}): "
                f"{'; '.join(tied)}. The first in param order is highlighted; the val data cannot tell them "
                "apart, so look at their test values and paired differences."
            )
    short = [r for r in a.ranked if r.paired is not None and any(r.paired.unpaired.values())]
    if short:
        first, p = short[0].label, short[0].paired
        out.append(
            f"{len(short)} design(s) are paired with the baseline on fewer seeds than they ran (failed runs, "
            "or seeds the baseline lacks): their Δ cell counts the seeds left out and why, e.g. "
            f"{first}: {p.seeds} of {p.of} seeds paired; {fmt_gaps(p.unpaired)}."
        )
    if a.best is not None and any(r.failed for r in a.ranked):
        n = sum(1 for r in a.ranked if r.failed)
        out.append(
            f"{n} design(s) have failed, diverged or non-finite runs: they rank below every design "
            "whose runs all finished, whatever their other runs scored."
        )
    return out


def _verdict(a: Analysis) -> str:
    m = a.metric
    parts = []
    if a.best is not None:
        b = a.best
        chosen = ""
        if b.tuned:
            chosen = " with " + ", ".join(f"{k}={v}" for k, v in b.tuned.items())
        parts.append(
            f"Best design on val {m.name} ({m.direction}): <b>{esc(b.label)}</b>{esc(chosen)}: val "
            f"{esc(fmt_interval(b.val))}, test {esc(fmt_interval(b.test))}."
        )
    base = a.baseline
    parts.append(
        f"Baseline for the paired differences: <b>{esc(base.label)}</b>. Each design is compared on "
        f"the seeds both share (same data split and initialisation), on the {a.paired_on} value; "
        "P(improvement) is the share of shared seeds where the design beats the baseline (ties count half)."
    )
    if a.tune_keys:
        parts.append(esc(budget_sentence(a.budgets, a.tune_keys)))
    return "<div class='verdict'>" + "<br>".join(parts) + "</div>"


def _designs_section(
    a: Analysis, table_head: list[str], table_rows: list[list[str]], csv_bytes: bytes
) -> str:
    m = a.metric
    varying = ", ".join(f"<code>{esc(k)}</code>" for k in a.keys) or "none"
    best = a.ranked.index(a.best) if a.best is not None else None
    val_from = " or ".join(f"<code>{k}</code>" for k in m.val_keys)
    note = (
        f"A design is one combination of the params that vary here ({varying}); seeds are pooled. Ranked on "
        f"val {esc(m.name)} ({m.direction}), read from {val_from}; <code>{esc(m.test_key)}</code> "
        "stands beside it as the honest estimate and takes no part in choosing. A design with any "
        "failed, diverged or non-finite run ranks below those whose runs all finished. Intervals: 95% "
        "t-intervals over seeds. "
        "Steps to 90%: first step where the smoothed train loss has made 90% of its start-to-end drop. "
        f"Also as <a download='designs.csv' href='{data_uri(csv_bytes, 'text/csv')}'>designs.csv</a>."
    )
    rows = [[esc(c) for c in row] for row in table_rows]
    return f"<h2>Designs</h2><p class='note'>{note}</p>\n" + html_table(table_head, rows, best)


def _tuning_section(a: Analysis) -> str:
    if not a.tune_keys:
        return ""
    out = [
        "<h2>Tuning</h2>",
        f"<p class='note'>{esc(budget_sentence(a.budgets, a.tune_keys))} Every config "
        "tried per design, ranked on mean val (the first is the one chosen). The chosen config's val value "
        "is optimistic (the best of several); its test value is the honest estimate.</p>",
    ]
    head = ["Design", "Config", "Runs", "Failed", f"Val {a.metric.name}", f"Test {a.metric.name}"]
    rows = []
    for r in a.ranked:
        for i, c in enumerate(r.configs):
            mark = " (chosen)" if i == 0 else ""
            failed = f"{c.failed} of {c.n}" if c.failed else "0"
            rows.append(
                [
                    esc(r.label),
                    esc(c.label + mark),
                    str(c.n),
                    failed,
                    esc(fmt_interval(c.val)),
                    esc(fmt_interval(c.test)),
                ]
            )
    out.append(f"<details><summary>{len(rows)} configs</summary>\n{html_table(head, rows)}\n</details>")
    return "\n".join(out)


def _img(data: bytes | None, alt: str, missing: str) -> str:
    if data is None:
        return f"<p class='note'>{esc(missing)}</p>"
    return f'<img src="{data_uri(data, "image/png")}" alt="{esc(alt)}">'


def _plots_section(a: Analysis, plots: dict[str, bytes | None], notes: dict[str, str]) -> str:
    curves_note = (
        "Median over seeds, band = min–max, each run averaged into at most 400 bins; a run that "
        f"stopped early (diverged) leaves the band after its last step. {notes.get('curves', '')}"
    )
    zero_note = (
        "Share of samples whose loss gradient dL/dŷ is exactly zero (grad/pred/zero_frac): for "
        "margin losses, the part of each batch that no longer teaches anything."
    )
    out = [
        "<h2>Outcomes</h2>",
        f"<p class='note'>{esc(notes['heatmap'])}</p>",
        _img(plots.get("heatmap"), "outcome heatmap", ""),
    ]
    if a.metric.task is not None:
        out += [
            f"<h2>Validation {esc(a.metric.name)}</h2>",
            _img(plots.get("metric"), f"val {a.metric.name}", f"No {a.metric.curve_key} was recorded."),
        ]
    out += [
        "<h2>Loss curves</h2>",
        f"<p class='note'>{esc(curves_note)}</p>",
        _img(plots.get("loss"), "loss curves", "No train/val loss was recorded."),
        "<h2>Gradient norm</h2>",
        _img(plots.get("grad_norm"), "gradient norm", "No grad/global_norm was recorded."),
        "<h2>Zero-gradient samples</h2>",
        f"<p class='note'>{esc(zero_note)}</p>",
        _img(plots.get("zero_frac"), "zero-gradient fraction", "No grad/pred/zero_frac was recorded."),
    ]
    return "\n".join(out)


def steps_reached(run: RunData) -> str:
    """`final/steps`; a run that ended before logging it (FAILED, KILLED) shows the last step it logged."""
    if "final/steps" in run.metrics:
        return fmt(run.metrics["final/steps"], 6)
    last = [int(steps[-1]) for steps, _ in run.curves.values() if len(steps)]
    return f"{max(last)} (last logged)" if last else "none logged"


def why(run: RunData) -> str:
    """The reason a run ended as it did: its error (FAILED), why it was marked KILLED, else the
    outcome's reason; all are tags the run recorded."""
    for key in ("error", KILLED_REASON, "outcome_reason"):
        if run.tags.get(key):
            return run.tags[key]
    return "" if run.status == "FINISHED" else f"ended {run.status} with no reason recorded"


def _runs_table(ctx: Context, a: Analysis) -> str:
    exp_id = ctx.experiment.experiment_id
    m = a.metric
    rows = []
    for r in a.ranked:
        scores = [s for c in (r.configs or [r]) for s in c.scores]
        for s in sorted(scores, key=lambda s: (sort_key(s.run.seed), s.run.name)):
            run = s.run
            url = links.run_url(exp_id, run.run_id, ctx.uri)
            rows.append(
                [
                    f'<a href="{esc(url)}">{esc(run.name)}</a>',
                    esc(r.label),
                    esc(run.seed or ""),
                    esc(run.status),
                    esc(run.outcome),
                    esc(run.tags.get("overfitting", "—")),
                    esc(s.failure or ""),
                    esc(fmt(next((run.metrics[k] for k in m.val_keys if k in run.metrics), None))),
                    esc(fmt(run.metrics.get(m.test_key))),
                    esc(fmt(run.metrics.get("final/val_loss"))),
                    esc(steps_reached(run)),
                    esc(why(run)),
                ]
            )
    head = (
        "Run",
        "Design",
        "Seed",
        "Status",
        "Outcome",
        "Overfitting",
        "Failed",
        f"Val {m.name}",
        f"Test {m.name}",
        "Final val loss",
        "Steps",
        "Why (outcome or error)",
    )
    table = html_table(head, rows)
    return f"<h2>Runs</h2>\n<details><summary>All {len(rows)} runs</summary>\n{table}\n</details>"


def render(
    ctx: Context,
    a: Analysis,
    table: tuple[list[str], list[list[str]]],
    csv_bytes: bytes,
    plots: dict[str, bytes | None],
    notes: dict[str, str],
) -> str:
    """The whole page: header with UI links, warnings, verdict, designs, tuning, figures, runs."""
    warn = "".join(f"<div class='warn'>{esc(w)}</div>" for w in warnings_of(a))
    return "\n".join(
        [
            _header(ctx, a),
            warn,
            _verdict(a),
            _designs_section(a, *table, csv_bytes),
            _tuning_section(a),
            _plots_section(a, plots, notes),
            _runs_table(ctx, a),
            "</body></html>",
        ]
    )
