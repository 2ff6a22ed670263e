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
from losslab.report import inference as inf
from losslab.report.analysis import Analysis
from losslab.report.designs import sort_key
from losslab.report.ranking import unpaired
from losslab.report.runs import RunData
from losslab.report.stats import MIN_SEEDS
from losslab.report.tables import (
    caveat,
    fmt,
    fmt_failed,
    fmt_gaps,
    fmt_interval,
    fmt_seeds,
    fmt_value,
    footnote,
)
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
    left_out: str = ""  # the runs left out because LossLab did not write them (runs.foreign_note)


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
    if ctx.left_out:
        out.append(f"<p class='note'>{esc(ctx.left_out)}</p>")
    if not ctx.uri.startswith(("http://", "https://")):
        why = links.ui_choice(ctx.uri)[1]
        out.append(
            "<p class='note'>The store is a local file: start the UI first with <code>make ui</code>, "
            f"then open the links above. {esc(why)}</p>"
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
    seeds = [r.n for r in a.ranked]
    if seeds and min(seeds) < MIN_SEEDS:
        out.append(
            f"Too few seeds: the smallest design has {min(seeds)} seed(s). Below {MIN_SEEDS} seeds a 95% "
            "interval is too wide, or too unstable, to tell designs apart; add seeds (seed=0,1,2,3,4)."
        )
    dups = a.duplicates()
    if dups:
        named = "; ".join(f"{r.label} seed {s.seed}: {s.run.name} ({s.run.run_id[:8]})" for r, s in dups[:8])
        more = f"; and {len(dups) - 8} more" if len(dups) > 8 else ""
        out.append(
            f"Reruns: {len(dups)} run(s) repeat a seed already counted and were dropped (each design keeps "
            f"the latest FINISHED run of each seed, so n counts seeds, not runs): {named}{more}."
        )
    if a.best is None:
        out.append("No design has a finite val value on any seed: none is highlighted as best.")
    else:
        tied = [r.label for r in a.ranked if r.has_value and r.val.mean == a.best.val.mean]
        if len(tied) > 1:
            out.append(
                f"{len(tied)} designs tie for the best mean val {m.name} ({a.best.val.mean:.4g}): "
                f"{'; '.join(tied)}. The first in param order is highlighted; the val data cannot tell them "
                "apart, so look at their test values and paired differences."
            )
    short = [(r, unpaired(r, r.cmp_test, "test")) for r in a.ranked if r.cmp_test is not None]
    short = [(r, gaps) for r, gaps in short if gaps]
    if short:
        r, gaps = short[0]
        n_paired = r.cmp_test.paired.n if r.cmp_test is not None else 0
        out.append(
            f"{len(short)} design(s) are paired with the baseline on fewer seeds than they ran (seeds "
            "without a value on either side, or seeds the baseline lacks): their Δ cells count the seeds "
            f"left out and why, e.g. {r.label}: {n_paired} of {r.n} seeds paired; {fmt_gaps(gaps)}."
        )
    failing = [r for r in a.ranked if r.failed]
    if failing:
        out.append(
            f"{len(failing)} design(s) failed on some seeds. Failures are a column, not a demotion: each "
            "failed seed keeps its selected checkpoint's val value when it has one, else scores "
            f"{a.chance.why}, and its failure rate stands beside the score."
        )
    return out


def _significant(a: Analysis, which: str) -> tuple[list[str], list[str], list[str]]:
    """(better, worse, undecided) designs against the baseline on `which`, by Holm-adjusted p <= ALPHA."""
    better, worse, same = [], [], []
    for r in a.ranked:
        c = r.cmp_val if which == "val" else r.cmp_test
        if c is None:
            continue
        d = c.paired.interval.mean
        if c.p_adjusted is not None and c.p_adjusted <= inf.ALPHA and d is not None:
            (better if (d > 0) == a.metric.maximize else worse).append(r.label)
        else:
            same.append(r.label)
    return better, worse, same


def _names(labels: list[str], shown: int = 4) -> str:
    more = f" and {len(labels) - shown} more" if len(labels) > shown else ""
    return f"{len(labels)} design(s) ({'; '.join(labels[:shown])}{more})"


def verdict_lines(a: Analysis) -> list[str]:
    """The verdict as plain sentences: the best design (and whether it failed on some seed), what the
    Holm-adjusted paired tests say against the baseline on val and on test, and the power."""
    m = a.metric
    parts = []
    if a.best is not None:
        b = a.best
        chosen = f" with {', '.join(f'{k}={v}' for k, v in b.tuned.items())}" if b.tuned else ""
        parts.append(
            f"Best design on val {m.name} ({m.direction}): {b.label}{chosen}: val {fmt_interval(b.val)}, "
            f"test {fmt_interval(b.test)} over {b.n} seed{'s' if b.n != 1 else ''}."
        )
        if b.failed:
            parts.append(
                f"The winner failed on {b.failed} of {b.n} seeds; failure rate {fmt_failed(b)}. Each failed "
                f"seed counts in its score (at its selected checkpoint, or {b.chance.why} without one)."
            )
    base = a.baseline
    parts.append(
        f"Baseline for the paired comparisons: {base.label}. Each design is compared on the seeds both "
        "share (same data split and initialisation), on val and on test, with an exact sign-flip test; "
        f"p-values are Holm-adjusted over the {a.family} comparison(s) on each split."
    )
    for which in ("test", "val"):
        better, worse, same = _significant(a, which)
        if not (better or worse or same):
            continue
        said = []
        if better:
            said.append(f"better than the baseline: {_names(better)}")
        if worse:
            said.append(f"worse: {_names(worse)}")
        if same:
            said.append(f"{len(same)} design(s) cannot be told apart from it (adjusted p > {inf.ALPHA:g})")
        parts.append(f"On {which} (Holm-adjusted p <= {inf.ALPHA:g}): " + "; ".join(said) + ".")
    if a.resolution is not None:
        parts.append(a.resolution.sentence)
    return parts


def _verdict(a: Analysis) -> str:
    parts = [esc(p) for p in verdict_lines(a)]
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
        f"A design is one combination of the params that vary here ({varying}); seeds are its replicates. "
        f"Ranked on val {esc(m.name)} ({m.direction}), read from {val_from}; <code>{esc(m.test_key)}</code> "
        "stands beside it as the honest estimate and takes no part in choosing. "
        "Steps to 90%: first step where the smoothed train loss has made 90% of its start-to-end drop. "
        f"Also as <a download='designs.csv' href='{data_uri(csv_bytes, 'text/csv')}'>designs.csv</a>."
    )
    rows = [[esc(c) for c in row] for row in table_rows]
    few = caveat(a.ranked)
    out = [f"<h2>Designs</h2><p class='note'>{note}</p>", html_table(table_head, rows, best)]
    if few:
        out.append(f"<p class='note'><b>{esc(few)}</b></p>")
    out.append(f"<p class='note'>{esc(footnote(a))}</p>")
    return "\n".join(out)


def _tuning_section(a: Analysis, plots: dict[str, bytes | None], notes: dict[str, str]) -> str:
    if not a.tune_keys:
        return ""
    out = [
        "<h2>Tuning</h2>",
        f"<p class='note'>{esc(budget_sentence(a.budgets, a.tune_keys))} Every config "
        "tried per design, ranked on mean val (the first is the one chosen). The chosen config's val value "
        "is optimistic (the best of several); its test value is the honest estimate.</p>",
    ]
    head = ["Design", "Config", "Seeds", "Failed seeds", f"Val {a.metric.name}", f"Test {a.metric.name}"]
    rows = []
    configs = []
    for r in a.ranked:
        for i, c in enumerate(r.configs):
            configs.append(c)
            mark = " (chosen)" if i == 0 else ""
            rows.append(
                [
                    esc(r.label),
                    esc(c.label + mark),
                    esc(fmt_seeds(c)),
                    esc(fmt_failed(c)),
                    esc(fmt_value(c, "val")),
                    esc(fmt_value(c, "test")),
                ]
            )
    few = caveat(configs)
    table = html_table(head, rows) + (f"<p class='note'><b>{esc(few)}</b></p>" if few else "")
    if plots.get("lr") is not None and "optimizer.lr" in a.tune_keys:
        out.append(f"<p class='note'>{esc(notes.get('lr', ''))}</p>")
        out.append(_img(plots.get("lr"), "learning-rate sensitivity", ""))
    out.append(f"<details><summary>{len(rows)} configs</summary>\n{table}\n</details>")
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
    out = []
    if plots.get("lr") is not None and "optimizer.lr" not in a.tune_keys:
        out += [
            "<h2>Learning-rate sensitivity</h2>",
            f"<p class='note'>{esc(notes.get('lr', ''))}</p>",
            _img(plots.get("lr"), "learning-rate sensitivity", ""),
        ]
    out += [
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
        dropped = {s.run.run_id for c in (r.configs or [r]) for s in c.duplicates}
        for s in sorted(scores, key=lambda s: (sort_key(s.run.seed), s.run.name)):
            run = s.run
            seed = esc(run.seed or "") + (" (rerun, dropped)" if run.run_id in dropped else "")
            url = links.run_url(exp_id, run.run_id, ctx.uri)
            rows.append(
                [
                    f'<a href="{esc(url)}">{esc(run.name)}</a>',
                    esc(r.label),
                    seed,
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
            _tuning_section(a, plots, notes),
            _plots_section(a, plots, notes),
            _runs_table(ctx, a),
            "</body></html>",
        ]
    )
