"""The ranked design table as rows of text: for the page, designs.csv and the markdown note.

Every number comes from `inference.py`: n is the number of seeds; intervals that cannot be computed
(one seed, all values equal) say why instead of printing [a, a]; p-values are the exact paired
sign-flip test's, raw and Holm-adjusted over the comparisons against the baseline.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from losslab.report import inference as inf
from losslab.report.analysis import Analysis
from losslab.report.designs import short_names, show_value
from losslab.report.plots import ordered_outcomes
from losslab.report.ranking import DesignResult, unpaired
from losslab.report.runs import RunData
from losslab.report.stats import MIN_SEEDS, mean_ci, median, steps_to_fraction
from losslab.vocab import FIT_CLEAN, FIT_NOISY


def to_csv(head: Sequence[str], rows: Sequence[Sequence[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(head)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def fmt(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def fmt_interval(stat: inf.MeanCI, digits: int = 4) -> str:
    """`0.912 [0.899, 0.925]`; `0.912 (1 seed; no interval)`; `—` with no value."""
    return inf.format_interval(stat, digits, signed=False)


def fmt_value(r: DesignResult, which: str) -> str:
    """A design's val or test mean over every seed, with its interval; seeds scored at chance said."""
    stat = r.val if which == "val" else r.test
    text = fmt_interval(stat)
    missing = sum(v is None for v in r.per_seed(which).values())
    if missing and stat.mean is not None:
        text += f" ({missing} of {r.n} seed{'s' if r.n != 1 else ''} at chance)"
    return text


def fmt_seeds(r: DesignResult) -> str:
    """`5`, or `5 (2 reruns dropped)`: n counts seeds; reruns of a seed never add to it."""
    dup = len(r.duplicates)
    return str(r.n) + (f" ({dup} rerun{'s' if dup != 1 else ''} dropped)" if dup else "")


def fmt_failed(r: DesignResult) -> str:
    """`0 of 5 [0, 0.52]`, `1 of 5 (diverged: seed 3) [0.0051, 0.72]`: failed seeds, why, and the
    Clopper-Pearson interval of the failure rate."""
    f = r.val_score
    if not r.n:
        return "—"
    if not r.failed:
        return f"0 of {r.n} [{f.rate_lo:.2g}, {f.rate_hi:.2g}]"
    by_why: dict[str, list[str]] = {}
    for seed, why in r.failed_seeds.items():
        by_why.setdefault(why, []).append(seed)
    parts = [f"{why}: seed{'s' if len(s) > 1 else ''} {', '.join(s)}" for why, s in sorted(by_why.items())]
    return f"{r.failed} of {r.n} ({'; '.join(parts)}) [{f.rate_lo:.2g}, {f.rate_hi:.2g}]"


def fmt_gaps(gaps: Counter[str] | dict[str, int]) -> str:
    """`1 failed; 1 baseline failed`: why seeds are left out of a pairing."""
    return "; ".join(f"{n} {why}" for why, n in sorted(gaps.items()) if n)


def _snap(ci: inf.MeanCI, tol: float) -> inf.MeanCI:
    """Float32 round-off (MLflow keeps float32-derived doubles) printed as 0: -1.19e-08 is a tie."""

    def s(x: float | None) -> float | None:
        return 0.0 if x is not None and abs(x) <= tol else x

    return replace(ci, mean=s(ci.mean), lo=s(ci.lo), hi=s(ci.hi))


def fmt_diff(r: DesignResult, which: str) -> str:
    """The paired difference against the baseline on `which`, with its interval; seeds left out of the
    pairing counted and named (`4 of 5 seeds paired; 1 failed`)."""
    cmp = r.cmp_val if which == "val" else r.cmp_test
    if cmp is None:
        gaps = Counter(r.seed_gaps(which).values())
        if not gaps:
            return "baseline"
        return f"baseline ({r.n - sum(gaps.values())} of {r.n} seeds usable; {fmt_gaps(gaps)})"
    gaps = unpaired(r, cmp, which)
    coverage = f"{cmp.paired.n} of {r.n} seeds paired; {fmt_gaps(gaps)}" if gaps else ""
    if cmp.paired.n == 0:
        return "no shared seeds" + (f" ({coverage})" if coverage else "")
    text = inf.format_interval(_snap(cmp.paired.interval, cmp.paired.tol), 3, signed=True)
    return text + (f" ({coverage})" if coverage else "")


def fmt_p(r: DesignResult, which: str) -> str:
    """`p = 0.0625 (Holm 0.312)`: the exact paired sign-flip test, raw and Holm-adjusted."""
    cmp = r.cmp_val if which == "val" else r.cmp_test
    return "" if cmp is None else inf.format_p(cmp.p, cmp.p_adjusted)


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


def _kept_runs(r: DesignResult) -> list[RunData]:
    return [s.run for s in r.kept.values()]


def _gap(run: RunData, metric: str) -> float | None:
    """Selected-checkpoint test value minus final-weights test value (`test/m - test_last/m`)."""
    best, last = run.metrics.get(f"test/{metric}"), run.metrics.get(f"test_last/{metric}")
    return None if best is None or last is None else best - last


Column = tuple[str, Callable[[list[RunData]], str]]


def memorisation_columns(a: Analysis) -> list[Column]:
    """Columns that show what training did after the selected checkpoint, present only when the runs
    logged their inputs: test at the final weights and the paired selected-minus-last gap (every task
    metric run logs `test_last/*`), and on data with corrupted labels the shares of noisy and clean
    training labels the final model fits (`train/fit_noisy`, `train/fit_clean`; 1.0 on noisy labels
    means the wrong labels were memorised). Means over seeds with their 95% t-intervals."""
    if a.metric.task is None:
        return []
    m = a.metric.name
    runs = a.runs
    cols: list[Column] = []
    if any(f"test_last/{m}" in x.metrics for x in runs):
        cols += [
            (
                f"Test {m} at the last step (mean [95% CI])",
                lambda rs: fmt_interval(mean_ci(x.metrics.get(f"test_last/{m}") for x in rs)),
            ),
            (
                f"Selected − last test {m} (per seed, mean [95% CI])",
                lambda rs: inf.format_interval(mean_ci(_gap(x, m) for x in rs), 3, signed=True),
            ),
        ]
    for key, name in (
        (FIT_NOISY, "Noisy training labels fit at the end"),
        (FIT_CLEAN, "Clean training labels fit at the end"),
    ):
        if any(key in x.metrics for x in runs):
            cols.append(
                (
                    f"{name} (mean [95% CI])",
                    lambda rs, key=key: fmt_interval(mean_ci(x.metrics.get(key) for x in rs), 3),
                )
            )
    return cols


def headers(a: Analysis) -> list[str]:
    """Readable column names: a design param by its short name (`optimizer`, `lr`, `margin`)."""
    m, on = a.metric.name, a.paired_on
    names = short_names([*a.keys, *a.tune_keys])
    head = ["Rank", *(names[k] for k in a.keys)]
    if a.tune_keys:
        head += [f"Chosen {names[k]}" for k in a.tune_keys] + ["Configs tried"]
    head += [
        "Seeds",
        "Failed seeds [95% CI]",
        f"Val {m} (mean [95% CI])",
        f"Test {m} (mean [95% CI])",
        f"Δ val {m} vs baseline (paired, 95% CI)",
        "p val (sign-flip; Holm)",
        f"Δ test {m} vs baseline (paired, 95% CI)",
        "p test (sign-flip; Holm)",
        f"P(X > Y) on {on} [95% bootstrap]",
        f"Seeds won on {on} [95% CI]",
        *(name for name, _ in memorisation_columns(a)),
        "Outcomes",
        "Overfitting",
        "Best val loss (mean [95% CI])",
        "Steps to 90% of train-loss drop (median)",
        "Median gradient norm",
    ]
    return head


def rows(a: Analysis) -> list[list[str]]:
    out = []
    on = a.paired_on
    extra = memorisation_columns(a)
    for i, r in enumerate(a.ranked, 1):
        runs = _kept_runs(r)
        row = [str(i), *(show_value(k, r.design.values[k]) for k in a.keys)]
        if a.tune_keys:
            row += [show_value(k, (r.tuned or {}).get(k)) for k in a.tune_keys] + [str(len(r.configs))]
        cmp = r.cmp_val if on == "val" else r.cmp_test
        steps90 = median(steps_to_fraction(*x.curves["train/loss"]) for x in runs if "train/loss" in x.curves)
        row += [
            fmt_seeds(r),
            fmt_failed(r),
            fmt_value(r, "val"),
            fmt_value(r, "test"),
            fmt_diff(r, "val"),
            fmt_p(r, "val"),
            fmt_diff(r, "test"),
            fmt_p(r, "test"),
            "" if cmp is None else inf.format_prob_improvement(cmp.prob),
            "" if cmp is None else inf.format_seeds_won(cmp.wins),
            *(cell(runs) for _, cell in extra),
            fmt_outcomes(runs),
            fmt_overfitting(runs),
            fmt_interval(mean_ci(x.metrics.get("best/val_loss") for x in runs)),
            "" if steps90 is None else f"{steps90:.0f}",
            fmt(median(_run_median(x, "grad/global_norm") for x in runs), 3),
        ]
        out.append(row)
    return out


def caveat(results: Sequence[DesignResult]) -> str | None:
    """One line for a table whose designs have under MIN_SEEDS seeds (instead of one per cell)."""
    ns = [r.n for r in results if r.n]
    if not ns or min(ns) >= MIN_SEEDS:
        return None
    lo, hi = min(ns), max(ns)
    n = f"{lo}" if lo == hi else f"{lo} to {hi}"
    floor = inf.min_p_value(lo)
    return (
        f"Few seeds: n = {n} per design. Intervals from under {MIN_SEEDS} seeds are wide and unstable, "
        f"and with {lo} seed{'s' if lo != 1 else ''} the sign-flip test's smallest p is {floor:.3g}: "
        "read the differences as hints, not findings."
    )


def footnote(a: Analysis) -> str:
    """What the table's numbers are (one paragraph; the full definitions are docs/statistics.md)."""
    m = a.metric.name
    return (
        f"n is the number of seeds: each (design, seed) keeps its latest FINISHED run; reruns are dropped "
        f"and named. Val and test {m}: mean over every seed with its 95% t-interval; a seed that failed "
        "after its selected checkpoint keeps that checkpoint's value, and a seed with no finite value "
        f"scores {a.chance.why}. Failed seeds: not finished, diverged or non-finite, with the 95% "
        "Clopper-Pearson interval of the failure rate. Δ: design minus baseline, paired by seed (seeds "
        "without a value on either side are left out and counted), 95% t-interval; 'no interval' where "
        "every difference is equal or there is one seed. p: exact two-sided paired sign-flip test, raw and "
        f"Holm-adjusted over the {a.family} comparison{'s' if a.family != 1 else ''} against the baseline "
        "on each split. P(X > Y): rliable's probability of improvement over all pairs of the two designs' "
        "seed values (ties half), 95% percentile bootstrap. Seeds won: paired seeds on which the design "
        "beats the baseline, ties apart, with the Clopper-Pearson interval of that share."
    )


MARKDOWN_LIMIT = 4000


def _short(stat: inf.MeanCI) -> str:
    if stat.mean is None:
        return "—"
    return fmt(stat.mean) + ("" if stat.half is None else f" ± {stat.half:.2g}")


def markdown(a: Analysis, limit: int = MARKDOWN_LIMIT) -> str:
    """The ranked designs as a markdown table (MLflow renders it as the parent run's note).

    Compact columns; rows past `limit` characters are cut with a line saying how many.
    """
    m = a.metric.name
    names = short_names([*a.keys, *a.tune_keys])
    intro = (
        f"Designs ranked on val {m} ({a.metric.direction}) over seeds, failed seeds included; test {m} "
        "beside it is the honest estimate."
    )
    if a.tune_keys:
        from losslab.report.tuning import budget_sentence

        intro += " " + budget_sentence(a.budgets, a.tune_keys)
    few = caveat(a.ranked)
    if few:
        intro += " " + few
    head = f"| # | Design | Val {m} | Test {m} | Δ test vs baseline | p (Holm) | Failed seeds |"
    lines = [intro, "", head, "|" + "---|" * 7]
    for i, r in enumerate(a.ranked, 1):
        label = r.label
        if r.tuned:
            label += (
                " (" + ", ".join(f"{names.get(k, k)}={show_value(k, v)}" for k, v in r.tuned.items()) + ")"
            )
        diff = fmt_diff(r, "test")
        p = "" if r.cmp_test is None or r.cmp_test.p is None else f"{r.cmp_test.p_adjusted:.3g}"
        failed = f"{r.failed} of {r.n}"
        mark = " **best**" if r is a.best else ""
        lines.append(
            f"| {i} | {label.replace('|', '/')}{mark} | {_short(r.val)} | {_short(r.test)} | {diff} | {p} "
            f"| {failed} |"
        )
    text = "\n".join(lines)
    while len(text) > limit and len(lines) > 5:
        lines.pop()
        cut = len(a.ranked) - (len(lines) - 4)
        text = "\n".join(lines) + f"\n\n… and {cut} more designs (see the report)."
    return text
