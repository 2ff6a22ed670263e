"""The report's figures as PNG bytes (embedded in the page): curves per design, outcome heatmap.

Curves are binned (at most 400 points per run) and drawn with fixed margins: a 200-run report
draws in about a second.
"""

from __future__ import annotations

import io
import itertools
import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from losslab.report.designs import Design, group_designs, short_names, show_value, sort_key
from losslab.report.runs import RunData
from losslab.train.curve_plot import plt
from losslab.vocab import OUTCOME_LABELS

OUTCOMES = tuple(OUTCOME_LABELS)
OTHER_COLOUR = "#9e9e9e"  # failed / killed / running runs have no outcome tag
MAX_HEATMAP_PANELS = 12


def png(fig: Any) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def ordered_outcomes(counts: Counter[str]) -> list[str]:
    return [o for o in OUTCOMES if o in counts] + sorted(o for o in counts if o not in OUTCOMES)


def curve_band(
    runs: Sequence[RunData], key: str, max_points: int = 400
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(step, median, min, max) over runs, after averaging each run into at most `max_points` bins.

    Binning keeps plots fast for long runs and smooths minibatch noise; non-finite points
    (a diverged run's tail) are left out, so its line ends where it blew up.
    """
    curves = [r.curves[key] for r in runs if key in r.curves and len(r.curves[key][0])]
    if not curves:
        return None
    lo_step = min(int(s[0]) for s, _ in curves)
    hi_step = max(int(s[-1]) for s, _ in curves)
    n_unique = len(np.unique(np.concatenate([s for s, _ in curves])))
    nbins = max(1, min(max_points, n_unique))
    edges = np.linspace(lo_step, hi_step + 1e-9, nbins + 1)
    per_run = np.full((len(curves), nbins), np.nan)
    step_sum, step_n = np.zeros(nbins), np.zeros(nbins)
    for i, (steps, values) in enumerate(curves):
        ok = np.isfinite(values)
        idx = np.clip(np.searchsorted(edges, steps[ok], side="right") - 1, 0, nbins - 1)
        count = np.bincount(idx, minlength=nbins)
        total = np.bincount(idx, weights=values[ok], minlength=nbins)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_run[i] = total / count
        step_sum += np.bincount(idx, weights=steps[ok].astype(float), minlength=nbins)
        step_n += count
    keep = step_n > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bins
        med = np.nanmedian(per_run[:, keep], axis=0)
        lo = np.nanmin(per_run[:, keep], axis=0)
        hi = np.nanmax(per_run[:, keep], axis=0)
    return step_sum[keep] / step_n[keep], med, lo, hi


def colours(n: int) -> list[Any]:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


@dataclass(frozen=True)
class Axis:
    """How a curve's y axis is drawn: `scale` ("log" or "linear"), its limits, and why."""

    scale: str
    lo: float | None
    hi: float | None
    why: str


#: values within this share of the largest one are float32 round-off, not data (MLflow keeps float32)
RESOLUTION = 1e-6
#: log when the positive values span at least this ratio (two decades)
LOG_SPAN = 100.0
#: exact zeros "dominate" above this share of the points: a linear axis from 0
ZERO_SHARE = 0.2


def choose_axis(values: Sequence[np.ndarray]) -> Axis:
    """The y axis that suits these values (issue 25): never symlog, never ticks below the data's resolution.

    - all positive and spanning two decades or more (a decaying loss): log, from the smallest value;
    - exact zeros (or values below the float32 resolution of the largest) on more than ZERO_SHARE of the
      points (a hinge loss that reaches 0): linear from 0;
    - a few zeros among positive values spanning decades: log, clipped at the 1st percentile of the
      positive values (the zeros sit on the axis floor);
    - otherwise (noisy, narrow, or negative values): linear.
    """
    arrays = [np.asarray(v, float).ravel() for v in values]
    finite = np.concatenate([v[np.isfinite(v)] for v in arrays]) if arrays else np.array([])
    if not len(finite):
        return Axis("linear", None, None, "no finite values")
    top = float(np.abs(finite).max())
    if finite.min() < 0:
        return Axis("linear", None, None, "negative values")
    floor = top * RESOLUTION
    zero = finite <= floor
    positive = finite[~zero]
    if not len(positive):
        return Axis("linear", 0.0, None, "every value is zero")
    span = float(positive.max() / positive.min())
    if zero.mean() > ZERO_SHARE:
        return Axis("linear", 0.0, None, f"{zero.mean():.0%} of the points are exact zeros")
    if span < LOG_SPAN:
        return Axis("linear", None, None, "within two decades")
    if zero.any():
        lo = float(np.quantile(positive, 0.01))
        return Axis(
            "log", lo, float(positive.max()), "positive over decades; the few zeros drawn at the floor"
        )
    return Axis("log", float(positive.min()), float(positive.max()), "positive over decades")


def _set_scale(axes: Sequence[Any], values: list[np.ndarray], log: bool) -> Axis | None:
    if not log or not values:
        return None
    axis = choose_axis(values)
    for ax in axes:
        if axis.scale == "log":
            ax.set_yscale("log", nonpositive="clip")
            assert axis.lo is not None and axis.hi is not None
            ax.set_ylim(axis.lo / 1.15, axis.hi * 1.15)
            if axis.hi > 100 * axis.lo:
                # over 2+ decades the major ticks suffice; minor ones are many artists, slow to draw
                ax.minorticks_off()
        elif axis.lo == 0.0:
            ax.set_ylim(bottom=0.0)
    return axis


#: (panel title, [(line label, design)]): one small plot of a facet grid
Panel = tuple[str, list[tuple[str, Design]]]


def _facet_key(designs: Sequence[Design], keys: Sequence[str]) -> str | None:
    """With many designs, split plots by the varying param with fewest values (2-6), else None."""
    if len(designs) <= 6 or len(keys) < 2:
        return None
    counts = {k: len({d.values[k] for d in designs}) for k in keys}
    key = min(keys, key=lambda k: counts[k])
    return key if counts[key] <= 6 else None


def curve_panels(designs: Sequence[Design], keys: Sequence[str]) -> list[Panel]:
    """Designs as lines in panels: one panel when few, else one per value of a facet param.

    Twenty lines in one plot cannot be told apart; five lines in each of four panels
    (e.g. one per lr, a line per margin) can, with the same colour for the same line label.
    """
    facet = _facet_key(designs, keys)
    if facet is None:
        return [("", [(d.label, d) for d in designs])]
    rest = [k for k in keys if k != facet]
    names = short_names(keys)
    panels: dict[str | None, list[tuple[str, Design]]] = {}
    for d in designs:
        label = ", ".join(f"{names[k]}={show_value(k, d.values[k])}" for k in rest)
        panels.setdefault(d.values[facet], []).append((label, d))
    return [(f"{names[facet]}={show_value(facet, v)}", panels[v]) for v in sorted(panels, key=sort_key)]


def plot_curves(
    panels: Sequence[Panel], metrics: Sequence[tuple[str, str, bool]], title: str
) -> bytes | None:
    """A row per (metric key, y label, log scale), a column per panel: median line, min–max band."""
    from matplotlib.lines import Line2D

    designs = [d for _, lines in panels for _, d in lines]
    drawn = [m for m in metrics if any(m[0] in r.curves for d in designs for r in d.runs)]
    if not drawn:
        return None
    labels = list(dict.fromkeys(label for _, lines in panels for label, _ in lines))
    colour = dict(zip(labels, colours(len(labels)), strict=True))
    width, height = (6.4, 3.6) if len(panels) == 1 else (4.0, 2.9)
    fig_w = max(width * len(panels), 6.4)
    ncol = max(1, min(len(labels), int(fig_w / 2.3)))
    legend_h = 0.2 * math.ceil(len(labels) / ncol) + 0.15
    fig_h = height * len(drawn) + legend_h + 1.1
    fig, axes = plt.subplots(
        len(drawn), len(panels), figsize=(fig_w, fig_h), dpi=100, squeeze=False, sharex=True, sharey="row"
    )
    for row, (key, ylabel, log) in enumerate(drawn):
        plotted: list[np.ndarray] = []
        for ax, (panel_title, lines) in zip(axes[row], panels, strict=True):
            for label, design in lines:
                band = curve_band(design.runs, key)
                if band is None:
                    continue
                x, med, lo, hi = band
                ax.plot(x, med, color=colour[label], lw=1.3)
                if len(design.runs) > 1:
                    ax.fill_between(x, lo, hi, color=colour[label], alpha=0.15, lw=0)
                plotted += [lo, hi]
            if row == 0 and panel_title:
                ax.set_title(panel_title, fontsize=9)
            ax.grid(alpha=0.3)
        _set_scale(axes[row], plotted, log)
        axes[row][0].set_ylabel(ylabel, fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    handles = [Line2D([], [], color=colour[label], lw=1.5) for label in labels]
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    # fixed margins in inches instead of tight_layout: as good for this grid, a second faster per plot
    fig.subplots_adjust(
        left=0.85 / fig_w,
        right=1 - 0.2 / fig_w,
        top=1 - 0.6 / fig_h,
        bottom=(legend_h + 0.5) / fig_h,
        wspace=0.06,
        hspace=0.12,
    )
    return png(fig)


def heatmap_params(runs: Sequence[RunData], keys: Sequence[str]) -> tuple[str, str] | None:
    """The two varying params with the most distinct values (x, y), or None when fewer than 2 vary."""
    if len(keys) < 2:
        return None
    ranked = sorted(keys, key=lambda k: (-len({r.params.get(k) for r in runs}), k))
    return ranked[0], ranked[1]


def majority(counts: Counter[str]) -> str:
    """Most frequent outcome; ties go to the worse one (the list is ordered best to worst)."""
    order = ordered_outcomes(counts)
    return max(order, key=lambda o: (counts[o], order.index(o)))


def _cell_grid(
    runs: Sequence[RunData], x: str, y: str, xs: list[str | None], ys: list[str | None]
) -> list[list[Counter[str]]]:
    grid: list[list[Counter[str]]] = [[Counter() for _ in xs] for _ in ys]
    for r in runs:
        grid[ys.index(r.params.get(y))][xs.index(r.params.get(x))][r.outcome] += 1
    return grid


def _draw_heatmap(
    ax: Any, runs: Sequence[RunData], x: str, y: str, xs: list[str | None], ys: list[str | None]
) -> None:
    from matplotlib.colors import to_rgb

    grid = _cell_grid(runs, x, y, xs, ys)
    image = np.ones((len(ys), len(xs), 3))
    for j, i in itertools.product(range(len(ys)), range(len(xs))):
        counts = grid[j][i]
        if not counts:
            ax.text(i, j, "—", ha="center", va="center", fontsize=8, color="#777")
            continue
        top = majority(counts)
        image[j, i] = to_rgb(OUTCOME_LABELS.get(top, OTHER_COLOUR))
        dark = top in ("converged", "diverged")
        text = f"{top.replace('_', ' ')}\n{counts[top]}/{sum(counts.values())}"
        ax.text(i, j, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.imshow(image, aspect="auto", origin="lower")
    ax.set_xticks(range(len(xs)), [show_value(x, v) for v in xs], fontsize=8)
    ax.set_yticks(range(len(ys)), [show_value(y, v) for v in ys], fontsize=8)
    ax.set_xlabel(x)
    ax.set_ylabel(y)


def plot_heatmap(runs: Sequence[RunData], keys: Sequence[str]) -> tuple[bytes | None, str]:
    """Majority outcome per (x, y) cell, one panel per combination of the other varying params."""
    from matplotlib.patches import Patch

    pair = heatmap_params(runs, keys)
    if pair is None:
        return None, "Fewer than two params vary across these runs, so there is no outcome heatmap."
    x, y = pair
    xs = sorted({r.params.get(x) for r in runs}, key=sort_key)
    ys = sorted({r.params.get(y) for r in runs}, key=sort_key)
    rest = [k for k in keys if k not in pair]
    facets = group_designs(runs, rest)
    note = f"Majority outcome over seeds for {x} × {y}"
    if rest:
        note += f", one panel per {', '.join(rest)}"
    if len(facets) > MAX_HEATMAP_PANELS:
        note += f" (first {MAX_HEATMAP_PANELS} of {len(facets)} panels)"
        facets = facets[:MAX_HEATMAP_PANELS]
    ncols = min(3, len(facets))
    nrows = math.ceil(len(facets) / ncols)
    w, h = 1.1 * len(xs) + 1.8, 0.55 * len(ys) + 1.6
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows + 0.6), dpi=100, squeeze=False)
    for ax, facet in zip(axes.flat, facets, strict=False):
        _draw_heatmap(ax, facet.runs, x, y, xs, ys)
        if rest:
            ax.set_title(facet.label, fontsize=8)
    for ax in list(axes.flat)[len(facets) :]:
        ax.axis("off")
    present = {r.outcome for r in runs}
    handles = [
        Patch(color=OUTCOME_LABELS.get(o, OTHER_COLOUR), label=o) for o in ordered_outcomes(Counter(present))
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.6 / fig.get_figheight(), 1, 1))
    return png(fig), note + "."


MAX_CURVE_DESIGNS = 36  # more lines than this are unreadable even in facets; the best-ranked are drawn


def figures(
    designs: Sequence[Design],
    runs: Sequence[RunData],
    keys: Sequence[str],
    metric_key: str | None,
    metric_label: str,
) -> tuple[dict[str, bytes | None], dict[str, str]]:
    """Every figure of the page (None where there was nothing to plot) and notes about them.

    `designs` come ranked (best first): past MAX_CURVE_DESIGNS only the best-ranked are drawn.
    `metric_key`: the task metric's val curve (None: no task metric, no figure).
    """
    notes: dict[str, str] = {}
    shown = list(designs)
    if len(shown) > MAX_CURVE_DESIGNS:
        shown = shown[:MAX_CURVE_DESIGNS]
        notes["curves"] = f"Showing the {MAX_CURVE_DESIGNS} best-ranked designs of {len(designs)}."
    shown.sort(key=lambda d: [sort_key(d.values[k]) for k in keys])  # legends in param order
    panels = curve_panels(shown, keys)
    specs = {
        "loss": ([("train/loss", "train loss", True), ("val/loss", "val loss", True)], "Loss"),
        "metric": (
            [(metric_key, metric_label, False)],
            f"{metric_label.capitalize()}, the task metric designs are ranked on",
        ),
        "grad_norm": ([("grad/global_norm", "gradient norm", True)], "Gradient global norm"),
        "zero_frac": (
            [("grad/pred/zero_frac", "zero-gradient fraction", False)],
            "Fraction of samples with zero loss gradient",
        ),
    }
    if metric_key is None:
        del specs["metric"]
    plots = {name: plot_curves(panels, m, title) for name, (m, title) in specs.items()}
    plots["heatmap"], notes["heatmap"] = plot_heatmap(runs, keys)
    return plots, notes
