"""Learning-rate sensitivity (issue 23, item 7): val and test metric and failure rate against lr.

When the runs vary `optimizer.lr` (as a design param or as the tuned param of `--tune optimizer.lr`),
each design without its lr becomes a line; each lr a point: the mean over seeds with its 95% t-interval
(failed seeds scored as in the ranking) and the failure rate with its Clopper-Pearson interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.lines import Line2D

from losslab.report.analysis import Analysis
from losslab.report.designs import group_designs, short_names, sort_key, varying_params
from losslab.report.plots import colours as palette
from losslab.report.plots import png
from losslab.report.ranking import DesignResult, evaluate
from losslab.train.curve_plot import plt

LR = "optimizer.lr"
MAX_LINES = 10  # the best-ranked designs: more lines cannot be told apart


@dataclass
class Line:
    """One design (without its lr) across the lrs it ran."""

    label: str
    lrs: list[float]
    points: list[DesignResult]


def lr_lines(a: Analysis) -> list[Line]:
    """A line per design without its lr, in ranking order; empty when lr does not vary."""
    if LR not in varying_params(a.runs):
        return []
    others = [k for k in a.keys if k != LR]
    names = short_names(others)
    lines = []
    for d in group_designs(a.runs, others):
        points = [evaluate(c, a.metric, a.chance) for c in group_designs(d.runs, [LR])]
        pairs = [(float(p.design.values[LR]), p) for p in points if _number(p.design.values[LR])]
        pairs.sort(key=lambda lp: lp[0])
        label = ", ".join(f"{names[k]}={v}" for k, v in d.values.items()) or "all runs"
        lines.append(Line(label, [lr for lr, _ in pairs], [p for _, p in pairs]))

    # in ranking order: a line's rank is that of the best-ranked design holding one of its runs
    rank_of = {s.run.run_id: i for i, r in enumerate(a.ranked) for c in r.configs or [r] for s in c.scores}

    def key(line: Line) -> tuple[int, tuple[int, float, str]]:
        ids = [s.run.run_id for p in line.points for s in p.scores]
        return (
            min((rank_of.get(i, len(a.ranked)) for i in ids), default=len(a.ranked)),
            sort_key(line.label),
        )

    lines.sort(key=key)
    return [line for line in lines if line.lrs]


def _number(text: str | None) -> bool:
    try:
        return text is not None and math.isfinite(float(text)) and float(text) > 0
    except ValueError:
        return False


def _bars(stats: Sequence[tuple[float | None, float | None, float | None]]) -> tuple[np.ndarray, ...]:
    mean = np.array([np.nan if m is None else m for m, _, _ in stats])
    lo = np.array([0.0 if m is None or low is None else m - low for m, low, _ in stats])
    hi = np.array([0.0 if m is None or high is None else high - m for m, _, high in stats])
    return mean, lo, hi


def plot_lr(a: Analysis) -> tuple[bytes | None, str]:
    """Three panels against lr (log axis): val metric, test metric, failure rate; a line per design."""
    lines = lr_lines(a)
    if not lines:
        return None, ""
    note = ""
    if len(lines) > MAX_LINES:
        note = f" Showing the {MAX_LINES} best-ranked of {len(lines)} designs."
        lines = lines[:MAX_LINES]
    m = a.metric.name
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.9), dpi=100)
    colours = palette(len(lines))
    width = 0.04  # points of different lines side by side (a share of a decade), so bars do not overlap
    for i, (line, colour) in enumerate(zip(lines, colours, strict=True)):
        shift = 10 ** (width * (i - (len(lines) - 1) / 2))
        x = np.array(line.lrs) * shift
        for ax, which in zip(axes[:2], ("val", "test"), strict=True):
            stats = [(s.mean, s.lo, s.hi) for s in (getattr(p, which) for p in line.points)]
            mean, lo, hi = _bars(stats)
            ax.errorbar(x, mean, yerr=[lo, hi], color=colour, marker="o", ms=4, lw=1.3, capsize=3)
        rate = [(p.val_score.rate, p.val_score.rate_lo, p.val_score.rate_hi) for p in line.points]
        mean, lo, hi = _bars(rate)
        axes[2].errorbar(x, mean, yerr=[lo, hi], color=colour, marker="o", ms=4, lw=1.3, capsize=3)
    titles = (f"val {m} (mean, 95% CI)", f"test {m} (mean, 95% CI)", "failure rate (95% Clopper-Pearson)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (optimizer.lr)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[2].set_ylim(-0.03, 1.03)
    fig.legend(
        [Line2D([], [], color=c, marker="o") for c in colours],
        [line.label for line in lines],
        loc="lower center",
        ncol=min(len(lines), 5),
        fontsize=8,
        frameon=False,
    )
    rows = math.ceil(len(lines) / 5)
    fig.subplots_adjust(left=0.06, right=0.99, top=0.9, bottom=0.2 + 0.05 * rows, wspace=0.25)
    text = (
        f"Val and test {m} and the failure rate at each learning rate, a line per design (points of "
        "different designs are shifted slightly sideways so their intervals do not overlap). Each point: "
        f"mean over seeds, a failed seed scored as in the ranking ({a.chance.why} when it has no value); "
        f"bars are 95% t-intervals (none where every seed gave the same value or there is one seed).{note}"
    )
    return png(fig), text
