"""Across data sets: each design's test metric over a study's data sets (noise rates, imbalance
ratios) in one table and one plot, beside the one report per data set.

Every cell is what that data set's own report ranks, read from its `Analysis`: the design's test value
at its val-selected checkpoint (with `--tune`, at the config its own val chose on that data set),
mean over seeds with its 95% t-interval. Designs are matched across data sets by their params (all but
the seed, the data and the tuned ones), so two losses that share a label never share a line. The x
axis is the one numeric data param that varies between the data sets (`data.label_noise.rate`,
`data.imbalance_ratio`); categorical ones (`data.label_noise.kind`) split each design's points into
series. Written here because it composes LossLab's own per-data-set analyses; matplotlib draws it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from losslab.report import inference as inf
from losslab.report.analysis import Analysis
from losslab.report.designs import NON_DESIGN_KEYS, NON_DESIGN_PREFIXES, show_value, sort_key
from losslab.report.page import CSS, data_uri, esc, html_table
from losslab.report.plots import colours, png
from losslab.report.ranking import DesignResult
from losslab.report.stats import mean_ci
from losslab.report.tables import to_csv
from losslab.train.curve_plot import plt
from losslab.vocab import FIT_NOISY

#: data params that never tell data sets apart (the name is the setting; seeds follow the run's seed)
NOT_SETTING = ("data.name", "data.split_seed", "data.label_noise.seed")
NOISE_RATE = "data/noise_rate"


@dataclass(frozen=True)
class Setting:
    """One data set of the study and the data params that set it apart from the others."""

    name: str
    values: tuple[tuple[str, str | None], ...]  # (key, value) for every varying data param
    analysis: Analysis

    def value(self, key: str) -> str | None:
        return dict(self.values).get(key)


def _data_params(a: Analysis) -> dict[str, str | None]:
    """The most common value of each `data.*` param over the runs of one data set."""
    keys = {k for r in a.runs for k in r.params if k.startswith("data.") and k not in NOT_SETTING}
    out: dict[str, str | None] = {}
    for key in sorted(keys):
        counts = Counter(r.params.get(key) for r in a.runs)
        out[key] = counts.most_common(1)[0][0]
    return out


def _numeric(values: Sequence[str | None]) -> bool:
    try:
        return all(v is not None and math.isfinite(float(v)) for v in values)
    except ValueError:
        return False


@dataclass(frozen=True)
class Layout:
    settings: list[Setting]  # in plot and table order
    x_key: str | None  # the numeric param on the x axis; None: the data set names, in order
    group_keys: list[str]  # categorical params that split a design's points into series

    def group(self, s: Setting) -> tuple[str | None, ...]:
        return tuple(s.value(k) for k in self.group_keys)

    def label(self, s: Setting) -> str:
        return s.name


def layout(analyses: dict[str, Analysis]) -> Layout:
    """Which data params vary, which one is the x axis, and the order of the data sets."""
    params = {name: _data_params(a) for name, a in analyses.items()}
    keys = sorted({k for p in params.values() for k in p})
    varying = [k for k in keys if len({p.get(k) for p in params.values()}) > 1]
    numeric = [k for k in varying if _numeric([p.get(k) for p in params.values()])]
    x_key = numeric[0] if len(numeric) == 1 else None
    group_keys = [k for k in varying if k != x_key] if x_key else []
    settings = [
        Setting(name, tuple((k, params[name].get(k)) for k in varying), a) for name, a in analyses.items()
    ]
    sizes = Counter(tuple(s.value(k) for k in group_keys) for s in settings)

    def order(s: Setting) -> tuple[Any, ...]:
        group = tuple(s.value(k) for k in group_keys)
        x = float(s.value(x_key) or 0.0) if x_key else 0.0
        return (-sizes[group], [sort_key(v) for v in group], x, s.name)

    return Layout(sorted(settings, key=order), x_key, group_keys)


Key = tuple[tuple[str, str], ...]


def design_key(r: DesignResult, a: Analysis) -> Key:
    """What a design is across data sets: the params its runs share, less the seed, the data (`data.*`
    and a param whose value is the data set's name, as a study's `+design=mnist1d_sym40` choice), the
    tuned params and bookkeeping (`loss._target_=...SCE, loss.alpha=0.1, ...`)."""
    runs = [s.run for s in r.kept.values()] or r.design.runs
    common = set(runs[0].params.items()).intersection(*(set(x.params.items()) for x in runs[1:]))
    data_name = runs[0].params.get("data.name")
    skip = (*NON_DESIGN_PREFIXES, "data.")
    return tuple(
        sorted(
            (k, v)
            for k, v in common
            if k not in NON_DESIGN_KEYS and not k.startswith(skip) and k not in a.tune_keys and v != data_name
        )
    )


def find(a: Analysis, key: Key) -> DesignResult | None:
    return next((r for r in a.ranked if design_key(r, a) == key), None)


def _cell(a: Analysis, key: Key) -> str:
    r = find(a, key)
    if r is None:
        return "—"
    text = inf.format_interval(r.test, 3, signed=False)
    if r.tuned:
        text += (
            " (" + ", ".join(f"{k.rsplit('.', 1)[-1]}={show_value(k, v)}" for k, v in r.tuned.items()) + ")"
        )
    if r.failed:
        text += f"; {r.failed} of {r.n} seeds failed"
    return text


def designs_of(lay: Layout) -> list[tuple[Key, str]]:
    """(key, label) of every design, in label order of first sight over the data sets."""
    seen: dict[Key, str] = {}
    for s in lay.settings:
        for r in sorted(s.analysis.ranked, key=lambda r: r.label):
            seen.setdefault(design_key(r, s.analysis), r.label)
    return list(seen.items())


def table(lay: Layout) -> tuple[list[str], list[list[str]]]:
    """Rows: designs (plus the realised noise rate and the val-best design); columns: data sets."""
    metric = lay.settings[0].analysis.metric.name
    head = [f"Test {metric} (mean [95% CI])", *(lay.label(s) for s in lay.settings)]
    rows = [[label, *(_cell(s.analysis, key) for s in lay.settings)] for key, label in designs_of(lay)]
    rates = [mean_ci(r.metrics.get(NOISE_RATE) for r in s.analysis.runs) for s in lay.settings]
    if any(c.mean is not None for c in rates):
        rows.insert(
            0,
            [
                "Realised noise rate (mean over runs)",
                *("—" if c.mean is None else f"{c.mean:.3f}" for c in rates),
            ],
        )
    rows.append(
        ["Best on val", *((s.analysis.best.label if s.analysis.best else "none") for s in lay.settings)]
    )
    return head, rows


def fit_table(lay: Layout) -> tuple[list[str], list[list[str]]] | None:
    """Share of the corrupted training labels each design fits at the end (memorisation), if logged."""
    if not any(FIT_NOISY in r.metrics for s in lay.settings for r in s.analysis.runs):
        return None
    head = ["Noisy training labels fit at the end (mean [95% CI])", *(lay.label(s) for s in lay.settings)]
    rows = []
    for key, label in designs_of(lay):
        cells = []
        for s in lay.settings:
            r = find(s.analysis, key)
            runs = [] if r is None else [x.run for x in r.kept.values()]
            cells.append(
                inf.format_interval(mean_ci(x.metrics.get(FIT_NOISY) for x in runs), 3, signed=False)
            )
        rows.append([label, *cells])
    return head, rows


def plot(lay: Layout) -> bytes:
    """Test metric against the x param (or the data sets in order), a line per design with its 95%
    interval as error bars; categorical params give each design a separate series (own marker)."""
    a0 = lay.settings[0].analysis
    metric = a0.metric.name
    designs = designs_of(lay)
    groups = list(dict.fromkeys(lay.group(s) for s in lay.settings))
    xs = {
        s.name: (float(s.value(lay.x_key) or 0.0) if lay.x_key else float(i))
        for i, s in enumerate(lay.settings)
    }
    values = np.array(list(xs.values()))
    log_x = bool(lay.x_key) and values.min() > 0 and values.max() / values.min() >= 10
    span = (np.log10(values.max() / values.min()) if log_x else float(np.ptp(values))) or 1.0
    fig, ax = plt.subplots(figsize=(10.5, 4.8), layout="constrained")
    markers = ["o", "s", "^", "D", "v"]
    for d, ((key, label), colour) in enumerate(zip(designs, colours(len(designs)), strict=True)):
        shift = (d - (len(designs) - 1) / 2) * 0.012 * span
        for g, group in enumerate(groups):
            pts = []
            for s in lay.settings:
                if lay.group(s) != group:
                    continue
                r = find(s.analysis, key)
                if r is None or r.test.mean is None:
                    continue
                offset = shift + g * 0.006 * span  # a second series beside the first, not on it
                x = xs[s.name] * 10**offset if log_x else xs[s.name] + offset
                lo = r.test.lo if r.test.lo is not None else r.test.mean
                hi = r.test.hi if r.test.hi is not None else r.test.mean
                pts.append((x, r.test.mean, r.test.mean - lo, hi - r.test.mean))
            if not pts:
                continue
            x, y, lo, hi = map(np.array, zip(*pts, strict=True))
            shown = [str(v) for v in group if v not in (None, "None")]
            name = f"{label} ({', '.join(shown)})" if shown else label
            ax.errorbar(
                x,
                y,
                yerr=[lo, hi],
                color=colour,
                marker=markers[g % len(markers)],
                capsize=3,
                linestyle="-" if g == 0 else ":",
                mfc=colour if g == 0 else "white",
                label=name,
            )
    if log_x:
        ax.set_xscale("log")
    if lay.x_key:
        ax.set_xlabel(lay.x_key)
        ticks = sorted(set(values.tolist()))
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    else:
        ax.set_xticks(values, [s.name for s in lay.settings], rotation=20)
    ax.set_ylabel(f"test {metric} (mean, 95% CI over seeds)")
    ax.set_title(f"Test {metric} across data sets: each design at its val-selected checkpoint")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the data, never on it
    return png(fig)


def render(title: str, lay: Layout, figure: bytes, links: Sequence[tuple[str, str]], csv_bytes: bytes) -> str:
    """The summary page: one self-contained HTML file (figure and CSV embedded)."""
    head, rows = table(lay)
    fits = fit_table(lay)
    a0 = lay.settings[0].analysis
    axis = f"x axis: {esc(lay.x_key)}" if lay.x_key else "x axis: the data sets in order"
    if lay.group_keys:
        axis += f"; series split by {esc(', '.join(lay.group_keys))}"
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{CSS}</style>",
        f"</head><body><h1>{esc(title)}</h1>",
        "<p>Each cell is the design's test value at its val-selected checkpoint"
        + (" and at the config chosen on that data set's val" if a0.tune_keys else "")
        + f", mean over seeds with its 95% t-interval ({esc(a0.metric.direction)}). The per-data-set "
        "reports rank the designs, give the paired differences with their Holm-adjusted p-values, and say "
        f"which are significant; this page only lines them up. {axis}.</p>",
        f"<img alt='test metric across data sets' src='{data_uri(figure, 'image/png')}'>",
        html_table(head, [[esc(c) for c in row] for row in rows]),
    ]
    if fits is not None:
        parts += [
            "<h2>Memorisation</h2><p>Share of the corrupted training labels that the final model predicts "
            "as their (wrong) label: 1 means every wrong label was learnt.</p>",
            html_table(fits[0], [[esc(c) for c in row] for row in fits[1]]),
        ]
    parts.append("<h2>Per data set</h2><ul>")
    parts += [f"<li><a href='{esc(href)}'>{esc(name)}</a></li>" for name, href in links]
    parts.append(
        f"</ul><p><a download='summary.csv' href='{data_uri(csv_bytes, 'text/csv')}'>summary.csv</a></p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def comparable(analyses: dict[str, Analysis]) -> bool:
    """At least 2 data sets, ranked on the same metric, with a design that runs on several of them
    (a sweep where each loss brings its own data, or binary beside regression, has nothing to line up)."""
    if len(analyses) < 2 or len({a.metric for a in analyses.values()}) != 1:
        return False
    seen = Counter(design_key(r, a) for a in analyses.values() for r in a.ranked)
    return any(n >= 2 for n in seen.values())


def write(out_dir: Path, title: str, analyses: dict[str, Analysis], pages: dict[str, Path]) -> Path | None:
    """Write <out_dir>/index.html and summary.csv; None unless the data sets are `comparable`.
    `pages`: each data set's report, linked relative to <out_dir> (its siblings)."""
    usable = {k: a for k, a in analyses.items() if a.ranked}
    if not comparable(usable):
        return None
    lay = layout(usable)
    out_dir.mkdir(parents=True, exist_ok=True)
    head, rows = table(lay)
    data = to_csv(head, rows)
    links = [
        (s.name, f"../{pages[s.name].parent.name}/{pages[s.name].name}")
        for s in lay.settings
        if s.name in pages
    ]
    index = out_dir / "index.html"
    index.write_text(render(title, lay, plot(lay), links, data), encoding="utf-8")
    (out_dir / "summary.csv").write_bytes(data)
    return index
