"""The ranked design table as rows of text: for the page, designs.csv and the markdown note."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from losslab.report.analysis import Analysis
from losslab.report.designs import short_names, show_value
from losslab.report.plots import ordered_outcomes
from losslab.report.ranking import DesignResult
from losslab.report.runs import RunData
from losslab.report.stats import MIN_SEEDS, Interval, mean_ci, median, steps_to_fraction


def fmt(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def fmt_interval(stat: Interval) -> str:
    """`0.912 ± 0.013`, with the sample size said plainly when it is too small to rely on."""
    if stat.mean is None:
        return "—"
    if stat.half is None:
        return f"{fmt(stat.mean)} (1 run: no interval)"
    text = f"{fmt(stat.mean)} ± {stat.half:.2g}"
    return text + (f" (n={stat.n}: too few to rely on)" if stat.n < MIN_SEEDS else f" (n={stat.n})")


def fmt_failed(r: DesignResult) -> str:
    if not r.failed:
        return "0"
    if set(r.failures) == {"failed"}:  # no reason beyond the status: say it once
        return f"{r.failed} of {r.n} failed"
    why = ", ".join(f"{reason} {n}" for reason, n in sorted(r.failures.items()))
    return f"{r.failed} of {r.n} failed ({why})"


def _snap(x: float) -> float:
    """0 for float32 round-off (MLflow stores metrics as float32-derived doubles): -1.19e-08 is a tie."""
    return 0.0 if abs(x) < 1e-6 else x


def fmt_gaps(gaps: Counter[str] | dict[str, int]) -> str:
    """`1 failed; 1 baseline failed`: why seeds are left out of a pairing."""
    return "; ".join(f"{n} {why}" for why, n in sorted(gaps.items()) if n)


def fmt_paired(r: DesignResult, on: str = "test") -> tuple[str, str]:
    """(difference with its interval, probability of improvement) against the baseline.

    Seeds left out of the pairing are counted and named (`4 of 5 seeds paired; 1 failed`): a
    difference over the seeds that survived must not read like one over all of them.
    """
    p = r.paired
    if p is None:
        gaps = Counter(r.seed_gaps(on).values())
        if not gaps:
            return "baseline", ""
        n = len(r.seeds)
        return f"baseline ({n - sum(gaps.values())} of {n} seeds usable; {fmt_gaps(gaps)})", ""
    left_out = sum(p.unpaired.values())
    coverage = f"{p.seeds} of {p.of} seeds paired; {fmt_gaps(p.unpaired)}" if left_out else ""
    if p.seeds == 0:
        return "no shared seeds" + (f" ({coverage})" if coverage else ""), ""
    d = p.diff
    text = f"{_snap(d.mean):+.3g}"
    if d.half is None:
        text += " (1 seed: no interval)"
    else:
        text += f" [{_snap(d.lo):+.3g}, {_snap(d.hi):+.3g}]" + (
            " (too few seeds)" if p.seeds < MIN_SEEDS else ""
        )
    if coverage:
        text += f" ({coverage})"
    return text, f"{p.p_improve:.2f} ({p.seeds} seed{'s' if p.seeds != 1 else ''})"


def fmt_outcomes(runs: Iterable[RunData]) -> str:
    counts = Counter(r.outcome for r in runs)
    return ", ".join(f"{o} {counts[o]}" for o in ordered_outcomes(counts))


def fmt_overfitting(runs: Sequence[RunData]) -> str:
    tagged = [r.tags["overfitting"] for r in runs if "overfitting" in r.tags]
    if not tagged:
        return "—"
    return f"{sum(t == 'true' for t in tagged)} of {len(tagged)}"


def _run_median(run: RunData, key: str) -> float | None:
    curve = run.curves.get(key)
    return None if curve is None else median(curve[1].tolist())


def headers(a: Analysis) -> list[str]:
    m, on = a.metric.name, a.paired_on
    head = ["Rank", *a.keys]
    if a.tune_keys:
        head += [f"Chosen {k}" for k in a.tune_keys] + ["Configs tried"]
    head += [
        "Runs",
        "Failed",
        f"Val {m} (mean ± 95% CI)",
        f"Test {m} (mean ± 95% CI)",
        f"Δ {on} {m} vs baseline (paired, 95% CI)",
        "P(improvement)",
        "Outcomes",
        "Overfitting",
        "Best val loss (mean ± 95% CI)",
        "Steps to 90% of train-loss drop (median)",
        "Median gradient norm",
    ]
    return head


def rows(a: Analysis) -> list[list[str]]:
    out = []
    for i, r in enumerate(a.ranked, 1):
        runs = r.design.runs
        row = [str(i), *(show_value(k, r.design.values[k]) for k in a.keys)]
        if a.tune_keys:
            row += [show_value(k, (r.tuned or {}).get(k)) for k in a.tune_keys] + [str(len(r.configs))]
        diff, prob = fmt_paired(r, a.paired_on)
        steps90 = median(steps_to_fraction(*x.curves["train/loss"]) for x in runs if "train/loss" in x.curves)
        row += [
            str(r.n),
            fmt_failed(r),
            fmt_interval(r.val),
            fmt_interval(r.test),
            diff,
            prob,
            fmt_outcomes(runs),
            fmt_overfitting(runs),
            fmt_interval(mean_ci(x.metrics.get("best/val_loss") for x in runs)),
            "" if steps90 is None else f"{steps90:.0f}",
            fmt(median(_run_median(x, "grad/global_norm") for x in runs), 3),
        ]
        out.append(row)
    return out


MARKDOWN_LIMIT = 4000


def _short(stat: Interval) -> str:
    if stat.mean is None:
        return "—"
    return fmt(stat.mean) + ("" if stat.half is None else f" ± {stat.half:.2g}")


def markdown(a: Analysis, limit: int = MARKDOWN_LIMIT) -> str:
    """The ranked designs as a markdown table (MLflow renders it as the parent run's note).

    Compact columns; rows past `limit` characters are cut with a line saying how many.
    """
    m = a.metric.name
    names = short_names(a.keys)
    intro = f"Designs ranked on val {m} ({a.metric.direction}); test {m} beside it is the honest estimate."
    if a.tune_keys:
        from losslab.report.tuning import budget_sentence

        intro += " " + budget_sentence(a.budgets, a.tune_keys)
    head = f"| # | Design | Val {m} | Test {m} | Δ {a.paired_on} vs baseline | P(improve) | Failed |"
    lines = [intro, "", head, "|" + "---|" * 7]
    for i, r in enumerate(a.ranked, 1):
        label = r.label
        if r.tuned:
            label += (
                " (" + ", ".join(f"{names.get(k, k)}={show_value(k, v)}" for k, v in r.tuned.items()) + ")"
            )
        diff, prob = fmt_paired(r, a.paired_on)
        val, test = _short(r.val), _short(r.test)
        failed = f"{r.failed} of {r.n}" if r.failed else "0"
        mark = " **best**" if r is a.best else ""
        lines.append(
            f"| {i} | {label.replace('|', '/')}{mark} | {val} | {test} | {diff} | {prob} | {failed} |"
        )
    text = "\n".join(lines)
    while len(text) > limit and len(lines) > 5:
        lines.pop()
        cut = len(a.ranked) - (len(lines) - 4)
        text = "\n".join(lines) + f"\n\n… and {cut} more designs (see the report)."
    return text
