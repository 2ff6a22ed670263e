"""Compare loss designs across runs: `python -m losslab.compare [--experiment N] [--sweep ID] [--out DIR]`.

Reads runs from MLflow and writes reports/<name>/index.html with PNG plots beside it: a table
per design (runs grouped by the params that vary, seeds pooled), loss / gradient-norm /
zero-gradient curves with a band over seeds, and an outcome heatmap over two swept params.
A sweep's report is also logged as artifacts ("report/") of the sweep's parent run.

Speed: a sqlite store is read with one SQL query per metric key for all runs (MLflow's client
would make one request per metric per run: minutes for a large experiment); other stores fall
back to threaded `get_metric_history`. This module and tracking.py are the only MLflow users.
"""

from __future__ import annotations

import argparse
import csv
import functools
import html
import itertools
import json
import math
import os
import re
import sqlite3
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Experiment, Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from . import tracking
from .plots import plt

#: per-step histories the report reads (everything else comes from the runs' latest metrics)
CURVE_KEYS = ("train/loss", "val/loss", "grad/global_norm", "grad/pred/zero_frac")
#: params that never define a design: `seed` is pooled over; the rest are bookkeeping
#: (the same keys `naming.config_hash` ignores)
NON_DESIGN_KEYS = ("seed", "rerun", "trainer.enable_progress_bar")
NON_DESIGN_PREFIXES = ("tracking.", "hydra.")
OUTCOMES = ("converged", "still_improving", "plateaued", "oscillating", "diverged")
OUTCOME_COLOURS = {
    "converged": "#2ca02c",
    "still_improving": "#9ecae1",
    "plateaued": "#d4c84a",
    "oscillating": "#ff7f0e",
    "diverged": "#d62728",
}
OTHER_COLOUR = "#9e9e9e"  # failed / killed / running runs have no outcome tag
MAX_CURVE_DESIGNS = 36  # more lines than this are unreadable even in facets; the best ones are drawn
MAX_HEATMAP_PANELS = 12
MLFLOW_UI_DEFAULT = "http://127.0.0.1:5000"
_MAX_FLOAT = 1.7976931348623157e308  # MLflow's sql stores keep +-inf as +-max float


class ReportError(ValueError):
    """The report cannot be made (unknown experiment or sweep, no runs); the message says what exists."""


# ----------------------------------------------------------------------------- data model


@dataclass
class RunData:
    """One training run: what the report needs, already fetched."""

    run_id: str
    name: str
    status: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        return self.tags.get("outcome") or self.status.lower()


@dataclass
class Design:
    """Runs sharing every varying param but the seed."""

    values: dict[str, str | None]
    runs: list[RunData]
    label: str = ""

    @functools.cached_property
    def summary(self) -> dict[str, Any]:
        """The numbers of its table row; computed once (table, CSV, ranking and page all use them)."""
        return summarise(self)


# ----------------------------------------------------------------------------- store access


def _client_and_uri(client_or_uri: MlflowClient | str | None) -> tuple[MlflowClient, str]:
    """A client on an existing store: the given one, the given URI (it wins over MLFLOW_TRACKING_URI,
    as an explicit argument should), or the current store."""
    if isinstance(client_or_uri, MlflowClient):
        return client_or_uri, str(client_or_uri.tracking_uri)
    uri = client_or_uri or tracking.resolve_tracking_uri(None)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri[len('sqlite:///') :]).resolve()}"
    path = tracking._sqlite_path(uri)
    if path is not None and not path.exists():
        raise ReportError(
            f"There is no MLflow store at {path} (tracking URI {uri}), so there is nothing to report. "
            "Run a sweep first (`python train.py loss=hinge -m`), or point MLFLOW_TRACKING_URI at your store."
        )
    try:
        return tracking.open_store(uri), uri
    except tracking.TrackingError as exc:
        raise ReportError(str(exc)) from None


def _experiment(client: MlflowClient, name: str) -> Experiment:
    exp = client.get_experiment_by_name(name)
    if exp is not None and exp.lifecycle_stage == "active":
        return exp
    names = [e.name for e in client.search_experiments(max_results=20)]
    shown = ", ".join(repr(n) for n in names[:10]) or "none"
    raise ReportError(
        f"There is no experiment named {name!r} in the MLflow store. Experiments there: {shown}. "
        "Pick one with --experiment NAME or MLFLOW_EXPERIMENT_NAME."
    )


def _search(client: MlflowClient, exp_ids: list[str], filter_string: str = "", **kw: Any) -> list[Run]:
    """All matching runs, page by page (one page is at most a few thousand runs)."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            exp_ids, filter_string, ViewType.ACTIVE_ONLY, max_results=5000, page_token=token, **kw
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _sweeps(client: MlflowClient, exp_id: str, limit: int) -> list[Run]:
    return list(
        client.search_runs(
            [exp_id],
            "tags.`losslab.sweep` = 'parent'",
            ViewType.ACTIVE_ONLY,
            max_results=limit,
            order_by=["attributes.start_time DESC"],
        )
    )


def _sweep_list(client: MlflowClient, exp: Experiment) -> str:
    recent = _sweeps(client, exp.experiment_id, 5)
    if not recent:
        return f"Experiment {exp.name!r} has no sweeps."
    shown = "; ".join(f"{r.info.run_name} ({r.info.run_id})" for r in recent)
    return f"Recent sweeps in experiment {exp.name!r}: {shown}."


def _sweep_parent(client: MlflowClient, sweep_id: str, run: Run | None, exp: Experiment) -> Run:
    """`run` (fetched as `sweep_id`, None if unknown) checked to be a sweep parent; errors say what exists."""
    if run is None or run.info.lifecycle_stage != "active":
        raise ReportError(
            f"There is no sweep with parent run id {sweep_id!r} in the MLflow store. "
            f"{_sweep_list(client, exp)} Omit --sweep to report the latest sweep."
        )
    if run.data.tags.get("losslab.sweep") != "parent":
        parent = run.data.tags.get("mlflow.parentRunId")
        hint = f" It is a run of sweep {parent}: use --sweep {parent}." if parent else ""
        raise ReportError(
            f"Run {sweep_id!r} ({run.info.run_name}) is not a sweep parent run "
            f"(it has no tag losslab.sweep=parent).{hint} {_sweep_list(client, exp)}"
        )
    return run


def _reused_run_ids(parent: Run) -> set[str]:
    """Runs a resumed sweep reused instead of re-training (SKIPPED jobs): they have another parent.

    Their ids are only in the jobs' result.json files under the sweep dir, when it still exists.
    """
    sweep_dir = parent.data.tags.get("sweep_dir")
    ids: set[str] = set()
    if not sweep_dir or not Path(sweep_dir).is_dir():
        return ids
    for path in Path(sweep_dir).glob("*/result.json"):
        try:
            run_id = json.loads(path.read_text()).get("run_id")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(run_id, str) and re.fullmatch(r"[0-9a-f]{32}", run_id):
            ids.add(run_id)
    return ids


def _sweep_runs(client: MlflowClient, parent: Run) -> list[Run]:
    exp_id = parent.info.experiment_id
    runs = _search(client, [exp_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    missing = sorted(_reused_run_ids(parent) - {r.info.run_id for r in runs})
    for i in range(0, len(missing), 100):
        quoted = ", ".join(f"'{rid}'" for rid in missing[i : i + 100])
        runs += _search(client, [exp_id], f"attributes.run_id IN ({quoted})")
    return runs


def _to_run_data(run: Run) -> RunData:
    return RunData(
        run_id=run.info.run_id,
        name=run.info.run_name or run.info.run_id[:8],
        status=run.info.status,
        params=dict(run.data.params),
        tags=dict(run.data.tags),
        metrics=dict(run.data.metrics),
    )


# ----------------------------------------------------------------------------- metric histories

History = dict[str, tuple[np.ndarray, np.ndarray]]  # run id -> (steps, values), sorted by step


def fetch_histories(
    client: MlflowClient, uri: str, run_ids: Sequence[str], keys: Iterable[str]
) -> dict[str, History]:
    """{key: {run_id: (steps, values)}} for all runs: bulk SQL on sqlite, threaded client otherwise."""
    path = tracking._sqlite_path(uri)
    if path is not None:
        try:
            return histories_via_sql(path, run_ids, keys)
        except sqlite3.Error as exc:  # an unexpected schema: still correct, only slower
            print(f"warning: bulk read of {path} failed ({exc}); using the MLflow client", file=sys.stderr)
    return histories_via_client(client, run_ids, keys)


def histories_via_sql(path: Path, run_ids: Sequence[str], keys: Iterable[str]) -> dict[str, History]:
    """One query per key on MLflow's `metrics` table, joined to a temp table of the wanted runs.

    The join (not `run_uuid IN (...)`) has no parameter limit and returns a small integer per
    row instead of the 32-character run id, so rows load straight into a float array.
    """
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        con.execute("CREATE TEMP TABLE wanted (run_uuid TEXT PRIMARY KEY, idx INTEGER NOT NULL)")
        con.executemany("INSERT INTO wanted VALUES (?, ?)", [(r, i) for i, r in enumerate(run_ids)])
        out = {}
        for key in keys:
            rows = con.execute(
                "SELECT w.idx, m.step, m.timestamp, m.value, m.is_nan FROM wanted w "
                "JOIN metrics m ON m.run_uuid = w.run_uuid AND m.key = ?",
                (key,),
            ).fetchall()
            out[key] = _group(np.array(rows, np.float64).reshape(-1, 5), run_ids)
        return out
    finally:
        con.close()


def _group(rows: np.ndarray, run_ids: Sequence[str]) -> History:
    """Rows (run index, step, timestamp, value, is_nan) -> per-run arrays sorted by step.

    A step logged twice keeps its newest value, as MLflow's UI shows; stored +-max float is
    read back as +-inf (MLflow's sql stores cannot hold inf).
    """
    if not len(rows):
        return {}
    order = np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))
    rows = rows[order]
    code, step, value = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64), rows[:, 3].copy()
    value[rows[:, 4] != 0] = np.nan
    value[value >= _MAX_FLOAT] = np.inf
    value[value <= -_MAX_FLOAT] = -np.inf
    last = np.ones(len(code), bool)
    last[:-1] = (code[1:] != code[:-1]) | (step[1:] != step[:-1])
    code, step, value = code[last], step[last], value[last]
    bounds = np.flatnonzero(np.diff(code)) + 1
    starts = np.concatenate([[0], bounds])
    return {
        run_ids[code[b]]: (s, v)
        for b, s, v in zip(starts, np.split(step, bounds), np.split(value, bounds), strict=True)
    }


def histories_via_client(
    client: MlflowClient, run_ids: Sequence[str], keys: Iterable[str], workers: int = 16
) -> dict[str, History]:
    """Fallback for tracking servers: `get_metric_history` per run and key, in parallel threads."""
    keys = list(keys)

    def one(pair: tuple[int, str]) -> list[tuple[float, ...]]:
        idx, key = pair
        hist = client.get_metric_history(run_ids[idx], key)
        return [(idx, m.step, m.timestamp, m.value, math.isnan(m.value)) for m in hist]

    pairs = list(itertools.product(range(len(run_ids)), keys))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, pairs))
    by_key: dict[str, list[tuple[float, ...]]] = {k: [] for k in keys}
    for (_, key), rows in zip(pairs, results, strict=True):
        by_key[key] += rows
    return {k: _group(np.array(rows, np.float64).reshape(-1, 5), run_ids) for k, rows in by_key.items()}


# ----------------------------------------------------------------------------- designs


def _is_design_key(key: str) -> bool:
    return key not in NON_DESIGN_KEYS and not key.startswith(NON_DESIGN_PREFIXES)


def varying_params(runs: Sequence[RunData]) -> list[str]:
    """Params whose value differs between runs (absent counts as a value), seed excluded."""
    keys = sorted({k for r in runs for k in r.params if _is_design_key(k)})
    return [k for k in keys if len({r.params.get(k) for r in runs}) > 1]


def _override_keys(runs: Sequence[RunData], keys: Sequence[str]) -> list[str]:
    """Params named by the runs' Hydra overrides: `optimizer.lr=0.1` names itself, a group choice
    (`loss=hinge`) names that group's `_target_` (or `name`)."""
    named: list[str] = []
    for run in runs:
        for item in run.tags.get("overrides", "").split():
            key = item.split("=", 1)[0].lstrip("+~")
            candidates = [key] if key in keys else [f"{key}._target_", f"{key}.name"]
            for cand in candidates:
                if cand in keys and cand not in named:
                    named.append(cand)
                    break
    return named


def design_params(runs: Sequence[RunData]) -> list[str]:
    """The varying params that define a design, without those that merely follow from them.

    In a sweep over losses, `data.name` and `loss.margin` vary too, but only because each loss
    brings its own data and knobs; grouping, heatmap axes and legends should say `loss`.
    Greedy: take keys in order of preference (named by the overrides, then most values, then
    `loss.*`) and keep one only if it splits the runs into more groups.
    """
    keys = varying_params(runs)
    named = _override_keys(runs, keys)
    rest = sorted(
        (k for k in keys if k not in named),
        key=lambda k: (-len({r.params.get(k) for r in runs}), not k.startswith("loss."), k),
    )
    kept: list[str] = []
    n_groups = 1
    for key in [*named, *rest]:
        n = len({tuple(r.params.get(k) for k in [*kept, key]) for r in runs})
        if n > n_groups:
            kept.append(key)
            n_groups = n
    return sorted(kept)


def _sort_key(value: str | None) -> tuple[int, float, str]:
    if value is None:
        return (0, 0.0, "")
    try:
        return (1, float(value), value)
    except ValueError:
        return (2, 0.0, value)


def _show_value(key: str, value: str | None) -> str:
    if value is None:
        return "—"
    return value.rsplit(".", 1)[-1] if key.endswith("_target_") else value


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """`loss.margin` -> `margin`, `loss._target_` -> `loss`; full keys where short ones collide."""
    short = {k: (k.split(".")[-2] if k.endswith("._target_") else k.split(".")[-1]) for k in keys}
    counts = Counter(short.values())
    return {k: (s if counts[s] == 1 else k) for k, s in short.items()}


def group_designs(runs: Sequence[RunData], keys: Sequence[str]) -> list[Design]:
    groups: dict[tuple[str | None, ...], list[RunData]] = {}
    for run in runs:
        groups.setdefault(tuple(run.params.get(k) for k in keys), []).append(run)
    names = short_names(keys)
    designs = []
    for values in sorted(groups, key=lambda vs: [_sort_key(v) for v in vs]):
        label = ", ".join(f"{names[k]}={_show_value(k, v)}" for k, v in zip(keys, values, strict=True))
        designs.append(Design(dict(zip(keys, values, strict=True)), groups[values], label or "all runs"))
    return designs


# ----------------------------------------------------------------------------- statistics


def mean_ci(values: Iterable[float | None]) -> tuple[float | None, float | None, int, int]:
    """(mean, 95% CI half-width from the t-distribution, n finite, n non-finite); CI None for n < 2."""
    from scipy import stats

    vals = [v for v in values if v is not None]
    finite = np.array([v for v in vals if math.isfinite(v)], float)
    n, bad = len(finite), len(vals) - len(finite)
    if n == 0:
        return None, None, 0, bad
    mean = float(finite.mean())
    if n < 2:
        return mean, None, n, bad
    half = float(stats.t.ppf(0.975, n - 1) * finite.std(ddof=1) / math.sqrt(n))
    return mean, half, n, bad


def steps_to_fraction(steps: np.ndarray, values: np.ndarray, fraction: float = 0.9) -> float | None:
    """First step where the loss has made `fraction` of its total improvement (start -> end).

    Read on a trailing moving average (1/20 of the curve): one lucky minibatch must not count
    as reaching the target. None when the loss did not improve or is not finite.
    """
    if len(values) < 2 or not np.all(np.isfinite(values)):
        return None
    w = max(1, len(values) // 20)
    smooth = np.convolve(values, np.ones(w) / w, mode="valid")
    start, end = smooth[0], smooth[-1]
    if not end < start:
        return None
    reached = np.flatnonzero(smooth <= start - fraction * (start - end))
    return float(steps[reached[0] + w - 1])


def _median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(vals)) if vals else None


def _run_median(run: RunData, key: str) -> float | None:
    curve = run.curves.get(key)
    if curve is None:
        return None
    finite = curve[1][np.isfinite(curve[1])]
    return float(np.median(finite)) if len(finite) else None


def outcome_counts(runs: Iterable[RunData]) -> Counter[str]:
    return Counter(r.outcome for r in runs)


def _ordered_outcomes(counts: Counter[str]) -> list[str]:
    return [o for o in OUTCOMES if o in counts] + sorted(o for o in counts if o not in OUTCOMES)


def summarise(design: Design) -> dict[str, Any]:
    """The numbers of one table row (None where undefined)."""
    final = mean_ci(r.metrics.get("final/val_loss") for r in design.runs)
    best = mean_ci(r.metrics.get("best/val_loss") for r in design.runs)
    steps90 = [steps_to_fraction(*r.curves["train/loss"]) for r in design.runs if "train/loss" in r.curves]
    return {
        "n": len(design.runs),
        "final": final,
        "best": best,
        "steps90": _median(steps90),
        "outcomes": outcome_counts(design.runs),
        "grad_norm": _median(_run_median(r, "grad/global_norm") for r in design.runs),
    }


# ----------------------------------------------------------------------------- formatting


def _fmt(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}g}"


def fmt_mean_ci(stat: tuple[float | None, float | None, int, int]) -> str:
    mean, half, _, bad = stat
    text = "—" if mean is None else _fmt(mean) + ("" if half is None else f" ± {half:.2g}")
    return text + (f" ({bad} non-finite)" if bad else "")


def fmt_outcomes(counts: Counter[str]) -> str:
    return ", ".join(f"{o} {counts[o]}" for o in _ordered_outcomes(counts))


TABLE_COLUMNS = (
    "Runs",
    "Final val loss (mean ± 95% CI)",
    "Best val loss (mean ± 95% CI)",
    "Steps to 90% of train-loss drop (median)",
    "Outcomes",
    "Median gradient norm",
)


def table_rows(designs: Sequence[Design], keys: Sequence[str]) -> list[list[str]]:
    rows = []
    for d in designs:
        s = d.summary
        row = [_show_value(k, d.values[k]) for k in keys]
        steps = "" if s["steps90"] is None else f"{s['steps90']:.0f}"
        row += [str(s["n"]), fmt_mean_ci(s["final"]), fmt_mean_ci(s["best"]), steps]
        row += [fmt_outcomes(s["outcomes"]), _fmt(s["grad_norm"], 3)]
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- plots


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


def _colours(n: int) -> list[Any]:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _set_scale(axes: Sequence[Any], values: list[np.ndarray], log: bool) -> None:
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
    if not log or not len(finite):
        return
    for ax in axes:
        if finite.min() > 0:
            ax.set_yscale("log")
        else:  # a loss that reaches exactly 0 (hinge): log away from 0, linear near it
            positive = finite[finite > 0]
            ax.set_yscale("symlog", linthresh=float(positive.min()) if len(positive) else 1e-3)


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
        label = ", ".join(f"{names[k]}={_show_value(k, d.values[k])}" for k in rest)
        panels.setdefault(d.values[facet], []).append((label, d))
    return [(f"{names[facet]}={_show_value(facet, v)}", panels[v]) for v in sorted(panels, key=_sort_key)]


def plot_curves(
    panels: Sequence[Panel], metrics: Sequence[tuple[str, str, bool]], path: Path, title: str
) -> Path | None:
    """A row per (metric key, y label, log scale), a column per panel: median line, min–max band."""
    from matplotlib.lines import Line2D

    designs = [d for _, lines in panels for _, d in lines]
    drawn = [m for m in metrics if any(m[0] in r.curves for d in designs for r in d.runs)]
    if not drawn:
        return None
    labels = list(dict.fromkeys(label for _, lines in panels for label, _ in lines))
    colour = dict(zip(labels, _colours(len(labels)), strict=True))
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
    fig.savefig(path)
    plt.close(fig)
    return path


def heatmap_params(runs: Sequence[RunData], keys: Sequence[str]) -> tuple[str, str] | None:
    """The two varying params with the most distinct values (x, y), or None when fewer than 2 vary."""
    if len(keys) < 2:
        return None
    ranked = sorted(keys, key=lambda k: (-len({r.params.get(k) for r in runs}), k))
    return ranked[0], ranked[1]


def majority(counts: Counter[str]) -> str:
    """Most frequent outcome; ties go to the worse one (the list is ordered best to worst)."""
    order = _ordered_outcomes(counts)
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
        image[j, i] = to_rgb(OUTCOME_COLOURS.get(top, OTHER_COLOUR))
        dark = top in ("converged", "diverged")
        text = f"{top.replace('_', ' ')}\n{counts[top]}/{sum(counts.values())}"
        ax.text(i, j, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.imshow(image, aspect="auto", origin="lower")
    ax.set_xticks(range(len(xs)), [_show_value(x, v) for v in xs], fontsize=8)
    ax.set_yticks(range(len(ys)), [_show_value(y, v) for v in ys], fontsize=8)
    ax.set_xlabel(x)
    ax.set_ylabel(y)


def plot_heatmap(runs: Sequence[RunData], keys: Sequence[str], path: Path) -> tuple[Path | None, str]:
    """Majority outcome per (x, y) cell, one panel per combination of the other varying params."""
    from matplotlib.patches import Patch

    pair = heatmap_params(runs, keys)
    if pair is None:
        return None, "Fewer than two params vary across these runs, so there is no outcome heatmap."
    x, y = pair
    xs = sorted({r.params.get(x) for r in runs}, key=_sort_key)
    ys = sorted({r.params.get(y) for r in runs}, key=_sort_key)
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
        Patch(color=OUTCOME_COLOURS.get(o, OTHER_COLOUR), label=o)
        for o in _ordered_outcomes(Counter(present))
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.6 / fig.get_figheight(), 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path, note + "."


# ----------------------------------------------------------------------------- html

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}
tr.best td{font-weight:600;background:#f1faf1}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px}
.note{color:#555;font-size:13px}
"""


def _esc(text: Any) -> str:
    return html.escape(str(text))


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]], best: int | None = None) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        cls = ' class="best"' if i == best else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def ui_base(uri: str) -> str:
    return (
        tracking.redact_uri(uri).rstrip("/") if uri.startswith(("http://", "https://")) else MLFLOW_UI_DEFAULT
    )


def _ui_section(uri: str, exp: Experiment, parent: Run | None) -> str:
    base = ui_base(uri)
    runs_url = f"{base}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
    lines = [f'<p>Runs in the MLflow UI: <a href="{_esc(runs_url)}">{_esc(runs_url)}</a>']
    if parent is not None:
        parent_url = f"{base}/#/experiments/{exp.experiment_id}/runs/{parent.info.run_id}"
        lines.append(f'<br>Sweep parent run: <a href="{_esc(parent_url)}">{_esc(parent.info.run_id)}</a>')
    lines.append("</p>")
    if not uri.startswith(("http://", "https://")):
        lines.append(
            "<p class='note'>The store is a local file: start the UI first with <code>make ui</code> or "
            f"<code>mlflow ui --backend-store-uri {_esc(tracking.redact_uri(uri))}</code>, then open the "
            "links above.</p>"
        )
    return "\n".join(lines)


def _runs_table(designs: Sequence[Design], base: str, exp_id: str) -> str:
    rows = []
    for d in designs:
        for r in sorted(d.runs, key=lambda r: _sort_key(r.params.get("seed"))):
            url = f"{base}/#/experiments/{exp_id}/runs/{r.run_id}"
            rows.append(
                [
                    f'<a href="{_esc(url)}">{_esc(r.name)}</a>',
                    _esc(d.label),
                    _esc(r.params.get("seed", "")),
                    _esc(r.status),
                    _esc(r.outcome),
                    _esc(r.tags.get("outcome_reason", "")),
                    _fmt(r.metrics.get("final/val_loss")),
                    _fmt(r.metrics.get("final/steps"), 6),
                ]
            )
    head = ("Run", "Design", "Seed", "Status", "Outcome", "Why", "Final val loss", "Steps")
    return f"<details><summary>All {len(rows)} runs</summary>\n{_html_table(head, rows)}\n</details>"


def _img(name: str | None, alt: str, missing: str) -> str:
    if name is None:
        return f"<p class='note'>{_esc(missing)}</p>"
    return f'<img src="{_esc(name)}" alt="{_esc(alt)}">'


@dataclass
class ReportContext:
    """Where the runs came from: shown in the header and used for links."""

    title: str
    uri: str
    experiment: Experiment
    parent: Run | None
    keys: list[str]


def _header(ctx: ReportContext, n_runs: int) -> str:
    source = (
        f"sweep <code>{_esc(ctx.parent.info.run_id)}</code>" if ctx.parent else "all runs of the experiment"
    )
    exp = ctx.experiment
    return "\n".join(
        [
            "<!DOCTYPE html>",
            f"<html><head><meta charset='utf-8'><title>{_esc(ctx.title)}</title>",
            f"<style>{CSS}</style></head><body>",
            f"<h1>{_esc(ctx.title)}</h1>",
            f"<p>{n_runs} runs from {source} in experiment <b>{_esc(exp.name)}</b> (id "
            f"{_esc(exp.experiment_id)}), store <code>{_esc(tracking.redact_uri(ctx.uri))}</code>. "
            f"Generated {_esc(time.strftime('%Y-%m-%d %H:%M:%S'))}.</p>",
            _ui_section(ctx.uri, exp, ctx.parent),
        ]
    )


def _designs_section(ctx: ReportContext, designs: Sequence[Design]) -> str:
    varying = ", ".join(f"<code>{_esc(k)}</code>" for k in ctx.keys) or "none"
    finals = [(d.summary["final"][0], i) for i, d in enumerate(designs)]
    scored = [(v, i) for v, i in finals if v is not None]
    best = min(scored)[1] if scored and len(designs) > 1 else None
    rows = [[_esc(c) for c in row] for row in table_rows(designs, ctx.keys)]
    note = (
        f"A design is one combination of the params that vary here ({varying}); seeds are pooled. "
        "CI: 95% t-interval over seeds (blank for one run). Steps to 90%: first step where the "
        "smoothed train loss has made 90% of its start-to-end drop. The lowest mean final val loss "
        "is highlighted. Also in <a href='designs.csv'>designs.csv</a>."
    )
    return f"<h2>Designs</h2><p class='note'>{note}</p>\n" + _html_table(
        [*ctx.keys, *TABLE_COLUMNS], rows, best
    )


def _plots_section(plots: dict[str, str | None], notes: dict[str, str]) -> str:
    curves_note = (
        "Median over seeds, band = min–max, each run averaged into at most 400 bins; a run that "
        f"stopped early (diverged) leaves the band after its last step. {notes.get('curves', '')}"
    )
    zero_note = (
        "Share of samples whose loss gradient dL/dŷ is exactly zero (grad/pred/zero_frac): for "
        "margin losses, the part of each batch that no longer teaches anything."
    )
    return "\n".join(
        [
            "<h2>Outcomes</h2>",
            f"<p class='note'>{_esc(notes['heatmap'])}</p>",
            _img(plots.get("heatmap"), "outcome heatmap", ""),
            "<h2>Loss curves</h2>",
            f"<p class='note'>{_esc(curves_note)}</p>",
            _img(plots.get("loss"), "loss curves", "No train/val loss was recorded."),
            "<h2>Gradient norm</h2>",
            _img(plots.get("grad_norm"), "gradient norm", "No grad/global_norm was recorded."),
            "<h2>Zero-gradient samples</h2>",
            f"<p class='note'>{_esc(zero_note)}</p>",
            _img(plots.get("zero_frac"), "zero-gradient fraction", "No grad/pred/zero_frac was recorded."),
        ]
    )


def render_html(
    ctx: ReportContext, designs: Sequence[Design], plots: dict[str, str | None], notes: dict[str, str]
) -> str:
    """The page: header with UI links, designs table, plots, and a per-run table (collapsed)."""
    n_runs = sum(len(d.runs) for d in designs)
    return "\n".join(
        [
            _header(ctx, n_runs),
            _designs_section(ctx, designs),
            _plots_section(plots, notes),
            "<h2>Runs</h2>",
            _runs_table(designs, ui_base(ctx.uri), ctx.experiment.experiment_id),
            "</body></html>",
        ]
    )


# ----------------------------------------------------------------------------- report


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "report"


def _select(
    client: MlflowClient, experiment: str | None, sweep: str | None, all_runs: bool
) -> tuple[Experiment, Run | None, list[Run]]:
    """The experiment, the sweep parent (None for a whole-experiment report) and the runs to compare."""
    if sweep is not None:
        return _select_sweep(client, experiment, sweep)
    if experiment is None and not all_runs and not os.environ.get("MLFLOW_EXPERIMENT_NAME"):
        newest = client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            "tags.`losslab.sweep` = 'parent'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        if newest:  # each study writes to its own experiment: the latest sweep, wherever it went
            return _select_sweep(client, None, newest[0].info.run_id)
    exp = _experiment(client, tracking.resolve_experiment_name(experiment))
    latest = [] if all_runs else _sweeps(client, exp.experiment_id, 1)
    if latest:
        return exp, latest[0], _sweep_runs(client, latest[0])
    runs = _search(client, [exp.experiment_id])
    return exp, None, [r for r in runs if r.data.tags.get("losslab.sweep") != "parent"]


def _select_sweep(
    client: MlflowClient, experiment: str | None, sweep: str
) -> tuple[Experiment, Run, list[Run]]:
    """A sweep id alone is enough: its experiment is the parent run's, whatever the current one is."""
    try:
        run: Run | None = client.get_run(sweep)
    except MlflowException:
        run = None
    if experiment is None and run is not None:
        exp = client.get_experiment(run.info.experiment_id)
    else:
        exp = _experiment(client, tracking.resolve_experiment_name(experiment))
    parent = _sweep_parent(client, sweep, run, exp)
    if parent.info.experiment_id != exp.experiment_id:
        raise ReportError(
            f"Sweep {sweep!r} belongs to experiment id {parent.info.experiment_id}, not to "
            f"{exp.name!r}. Drop --experiment, or pass the sweep's experiment."
        )
    return exp, parent, _sweep_runs(client, parent)


def _write_csv(path: Path, head: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(head)
        writer.writerows(rows)
    return path


def _make_plots(
    designs: list[Design], runs: list[RunData], keys: list[str], out_dir: Path
) -> tuple[dict[str, str | None], dict[str, str]]:
    """The PNGs (file names, None where there was nothing to plot) and notes for the page."""
    shown = designs
    notes: dict[str, str] = {}
    if len(designs) > MAX_CURVE_DESIGNS:
        means = {id(d): d.summary["final"][0] for d in designs}
        ranked = sorted(designs, key=lambda d: (means[id(d)] is None, means[id(d)] or 0.0))
        keep = {id(d) for d in ranked[:MAX_CURVE_DESIGNS]}
        shown = [d for d in designs if id(d) in keep]
        notes["curves"] = (
            f"Showing the {MAX_CURVE_DESIGNS} designs with the lowest mean final val loss of {len(designs)}."
        )
    panels = curve_panels(shown, keys)
    specs = {
        "loss": (
            [("train/loss", "train loss", True), ("val/loss", "val loss", True)],
            "loss_curves.png",
            "Loss",
        ),
        "grad_norm": ([("grad/global_norm", "gradient norm", True)], "grad_norm.png", "Gradient global norm"),
        "zero_frac": (
            [("grad/pred/zero_frac", "zero-gradient fraction", False)],
            "zero_grad_fraction.png",
            "Fraction of samples with zero loss gradient",
        ),
    }
    plots = {name: plot_curves(panels, m, out_dir / file, title) for name, (m, file, title) in specs.items()}
    plots["heatmap"], notes["heatmap"] = plot_heatmap(runs, keys, out_dir / "outcome_heatmap.png")
    intended = [out_dir / file for _, file, _ in specs.values()] + [out_dir / "outcome_heatmap.png"]
    for path in set(intended) - set(plots.values()):
        path.unlink(missing_ok=True)  # a previous report's plot, no longer true for these runs
    return {k: (p.name if p else None) for k, p in plots.items()}, notes


@dataclass
class Selection:
    """The runs a report compares, with where they came from."""

    client: MlflowClient
    uri: str
    experiment: Experiment
    parent: Run | None  # the sweep's parent run; None for a whole-experiment report
    runs: list[RunData]

    @property
    def name(self) -> str:
        return (
            self.parent.info.run_name if self.parent and self.parent.info.run_name else self.experiment.name
        )


def load_runs(
    client_or_uri: MlflowClient | str | None,
    experiment: str | None = None,
    sweep: str | None = None,
    all_runs: bool = False,
) -> Selection:
    """Pick the runs (see `build_report`) and fetch their params, tags, final metrics and curves."""
    client, uri = _client_and_uri(client_or_uri)
    exp, parent, found = _select(client, experiment, sweep, all_runs)
    if not found:
        where = f"sweep {parent.info.run_id}" if parent else f"experiment {exp.name!r}"
        raise ReportError(f"There are no runs in {where} to compare. {_sweep_list(client, exp)}")
    runs = [_to_run_data(r) for r in found]
    histories = fetch_histories(client, uri, [r.run_id for r in runs], CURVE_KEYS)
    for run in runs:
        run.curves = {k: h[run.run_id] for k, h in histories.items() if run.run_id in h}
    return Selection(client, uri, exp, parent, runs)


def build_report(
    client_or_uri: MlflowClient | str | None,
    experiment: str | None,
    sweep: str | None,
    out: Path,
    *,
    all_runs: bool = False,
    log_artifacts: bool = True,
) -> Path:
    """Write <out>/<name>/index.html (+ PNGs, designs.csv) and return its path.

    `client_or_uri`: an MlflowClient, a tracking URI, or None for the current store. With no
    sweep, the experiment's latest sweep is reported (or all its runs when it has none, or when
    `all_runs`). A sweep's report is also logged to its parent run under artifact path "report".
    """
    sel = load_runs(client_or_uri, experiment, sweep, all_runs)
    keys = design_params(sel.runs)
    designs = group_designs(sel.runs, keys)
    out_dir = Path(out) / _safe_name(sel.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots, notes = _make_plots(designs, sel.runs, keys, out_dir)
    files = [_write_csv(out_dir / "designs.csv", [*keys, *TABLE_COLUMNS], table_rows(designs, keys))]
    ctx = ReportContext(f"LossLab report: {sel.name}", sel.uri, sel.experiment, sel.parent, keys)
    index = out_dir / "index.html"
    index.write_text(render_html(ctx, designs, plots, notes), encoding="utf-8")
    files += [out_dir / name for name in plots.values() if name] + [index]
    if sel.parent is not None and log_artifacts:
        _log_report(sel.client, sel.parent.info.run_id, files)
    return index


def _log_report(client: MlflowClient, run_id: str, files: Sequence[Path]) -> None:
    """Attach the report to the sweep's parent run; a failure leaves the local report usable."""
    try:
        for path in files:
            client.log_artifact(run_id, str(path), "report")
    except (MlflowException, OSError) as exc:
        print(f"warning: could not log the report to run {run_id}: {exc}", file=sys.stderr)


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m losslab.compare",
        description="Compare loss designs across MLflow runs: an HTML report with plots under "
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
    p.add_argument("--out", type=Path, default=Path("reports"), help="output root (default: ./reports)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.sweep and args.all_runs:
        print("Error: --sweep and --all exclude each other.", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        index = build_report(None, args.experiment, args.sweep, args.out, all_runs=args.all_runs)
    except (ReportError, tracking.TrackingError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {index} ({time.perf_counter() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
