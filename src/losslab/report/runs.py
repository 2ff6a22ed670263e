"""Reading runs from an MLflow store: which runs a report compares (their histories: histories.py).

This package and tracking.py are the only MLflow users.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Experiment, Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from losslab.report.histories import (  # noqa: F401 (re-exported: callers import them from here)
    MAX_FLOAT,
    History,
    fetch_histories,
    histories_via_client,
    histories_via_sql,
)
from losslab.tracking.params import redact_uri
from losslab.tracking.store import (
    TrackingError,
    _sqlite_path,
    open_store,
    resolve_experiment_name,
    resolve_tracking_uri,
)

#: per-step histories every report reads (the ranked task metric's `val/<m>` is added to these)
CURVE_KEYS = ("train/loss", "val/loss", "grad/global_norm", "grad/pred/zero_frac")

#: tags a run LossLab recorded carries (train/job.py writes them all when it creates the run; `outcome`
#: when it ends): a run with none of them was written by something else (plain MLflow) and is left out
LOSSLAB_TAGS = ("task", "losslab.config_hash", "losslab.version", "outcome")


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
    #: when the run ended (else started), ms since the epoch: the latest FINISHED run of a seed is kept
    order: float = 0.0
    #: rows of its test split when recorded (an `n_test` param or tag, or its MLflow test dataset input)
    n_test: int | None = None

    @property
    def outcome(self) -> str:
        return self.tags.get("outcome") or self.status.lower()

    @property
    def seed(self) -> str | None:
        return self.params.get("seed")


# ----------------------------------------------------------------------------- store access


def _client_and_uri(client_or_uri: MlflowClient | str | None) -> tuple[MlflowClient, str]:
    """A client on an existing store: the given one, the given URI (it wins over MLFLOW_TRACKING_URI,
    as an explicit argument should), or the current store."""
    if isinstance(client_or_uri, MlflowClient):
        return client_or_uri, str(client_or_uri.tracking_uri)
    uri = client_or_uri or resolve_tracking_uri(None)
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri[len('sqlite:///') :]).resolve()}"
    path = _sqlite_path(uri)
    if path is not None and not path.exists():
        raise ReportError(
            f"There is no MLflow store at {path} (tracking URI {uri}), so there is nothing to report. "
            "Run a sweep first (`python train.py loss=hinge -m`), or point MLFLOW_TRACKING_URI at your store."
        )
    try:
        return open_store(uri), uri
    except TrackingError as exc:
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


def group_choices(params: dict[str, str], overrides: str) -> dict[str, str]:
    """Config-group choices from a run's Hydra overrides that left no param of their own.

    `+design=hinge_m0` picks a `@package _global_` group: its settings land under `loss.*`, and
    no `design` param exists. Named like a param, the choice becomes what a design is called
    (`design=hinge_m0`), instead of the loss settings it implies.
    """
    out = {}
    for item in overrides.split():
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if not value or "." in key or "/" in key or key in params:
            continue
        if not any(k.startswith(f"{key}.") for k in params):
            out[key] = value
    return out


#: where a run may record the size of its test split (params, tags or metrics)
N_TEST_KEYS = ("n_test", "data.n_test", "data/n_test", "data.test_size")


def recorded_test_size(run: Run) -> int | None:
    """Rows of the run's test split: an `n_test`-like param, tag or metric, else the first dimension of
    the targets of its MLflow dataset input whose context is "test" (train/job.py logs one per split)."""
    for source in (run.data.params, run.data.tags, run.data.metrics):
        for key in N_TEST_KEYS:
            try:
                n = int(float(source[key]))
            except (KeyError, TypeError, ValueError):
                continue
            if n > 0:
                return n
    inputs = getattr(run, "inputs", None)
    for item in getattr(inputs, "dataset_inputs", None) or []:
        if not any(t.key == "mlflow.data.context" and t.value == "test" for t in item.tags):
            continue
        try:
            profile = json.loads(item.dataset.profile or "{}")
            shape = profile.get("targets_shape") or profile.get("features_shape")
            return int(shape[0]) if shape else None
        except (ValueError, TypeError, AttributeError, IndexError):
            return None
    return None


def _to_run_data(run: Run) -> RunData:
    params = dict(run.data.params)
    params.update(group_choices(params, run.data.tags.get("overrides", "")))
    return RunData(
        run_id=run.info.run_id,
        name=run.info.run_name or run.info.run_id[:8],
        status=run.info.status,
        params=params,
        tags=dict(run.data.tags),
        metrics=dict(run.data.metrics),
        order=float(run.info.end_time or run.info.start_time or 0),
        n_test=recorded_test_size(run),
    )


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
    exp = _experiment(client, resolve_experiment_name(experiment))
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
        exp = _experiment(client, resolve_experiment_name(experiment))
    parent = _sweep_parent(client, sweep, run, exp)
    if parent.info.experiment_id != exp.experiment_id:
        raise ReportError(
            f"Sweep {sweep!r} belongs to experiment id {parent.info.experiment_id}, not to "
            f"{exp.name!r}. Drop --experiment, or pass the sweep's experiment."
        )
    return exp, parent, _sweep_runs(client, parent)


@dataclass
class Selection:
    """The runs a report compares, with where they came from."""

    client: MlflowClient
    uri: str
    experiment: Experiment
    parent: Run | None  # the sweep's parent run; None for a whole-experiment report
    runs: list[RunData]
    subset: str | None = None  # set when the runs were narrowed to one task or data set (`narrow`)
    #: runs of the sweep or experiment that carry none of LOSSLAB_TAGS: left out, named (`foreign_note`)
    foreign: list[RunData] = field(default_factory=list)

    @property
    def name(self) -> str:
        name = (
            self.parent.info.run_name if self.parent and self.parent.info.run_name else self.experiment.name
        )
        return f"{name}-{self.subset}" if self.subset else name


def tasks_of(runs: Iterable[RunData]) -> list[str]:
    """The `task` tags of these runs, sorted (several when a study mixes binary and regression data)."""
    return sorted({r.tags["task"] for r in runs if r.tags.get("task")})


def datasets_of(runs: Iterable[RunData]) -> list[str]:
    """The data sets (`data.name`) of these runs, sorted (several when each loss runs on its own data)."""
    return sorted({r.params["data.name"] for r in runs if r.params.get("data.name")})


def narrow(sel: Selection, *, task: str | None = None, data: str | None = None) -> Selection:
    """The selection narrowed to one task and/or data set; ReportError naming what is there if empty."""
    runs = [
        r
        for r in sel.runs
        if (task is None or r.tags.get("task") == task)
        and (data is None or r.params.get("data.name") == data)
    ]
    if not runs:
        asked = " ".join(f"--{k} {v}" for k, v in (("task", task), ("data", data)) if v is not None)
        raise ReportError(
            f"{asked}: no such runs here; tasks: {', '.join(tasks_of(sel.runs)) or 'none tagged'}; "
            f"data sets: {', '.join(datasets_of(sel.runs)) or 'none recorded'}."
        )
    return replace(sel, runs=runs, subset=data or task)


def written_by_losslab(run: Run) -> bool:
    """Whether the run carries any of the tags LossLab records (LOSSLAB_TAGS)."""
    return any(run.data.tags.get(t) for t in LOSSLAB_TAGS)


def _named(runs: list[RunData], limit: int = 8) -> str:
    shown = ", ".join(f"{r.name!r} ({r.run_id})" for r in runs[:limit])
    return shown + (f" and {len(runs) - limit} more" if len(runs) > limit else "")


def _tag_list() -> str:
    return ", ".join(LOSSLAB_TAGS[:-1]) + f" or {LOSSLAB_TAGS[-1]}"


def foreign_note(sel: Selection) -> str:
    """One sentence naming the runs left out because LossLab did not write them ("" when none)."""
    if not sel.foreign:
        return ""
    n = len(sel.foreign)
    return (
        f"{n} run{'s' if n != 1 else ''} not written by LossLab (no {_tag_list()} tag) "
        f"{'are' if n != 1 else 'is'} left out of this report: {_named(sel.foreign)}."
    )


def _foreign_error(uri: str, where: str, foreign: list[RunData]) -> ReportError:
    n = len(foreign)
    return ReportError(
        f"{where} in the MLflow store {redact_uri(uri)} holds {n} run{'s' if n != 1 else ''} not written by "
        f"LossLab ({_named(foreign)}): none carries a tag LossLab records on every run ({_tag_list()}), so "
        "there are no loss designs to compare. compare reads the runs `python train.py` (losslab-train) "
        "records: their params (loss.*, optimizer.*, seed), tags task and outcome, and metrics such as "
        "best/val_<metric> and test/<metric>. Run a LossLab sweep into this store (`python train.py "
        "loss=hinge -m`), or point --experiment, --sweep or MLFLOW_TRACKING_URI at runs LossLab wrote."
    )


def select_runs(
    client_or_uri: MlflowClient | str | None,
    experiment: str | None = None,
    sweep: str | None = None,
    all_runs: bool = False,
) -> Selection:
    """Pick the runs (see `build_report`) with their params, tags and latest metrics, no curves yet.

    `client_or_uri`: an MlflowClient, a tracking URI, or None for the current store. With no
    sweep, the experiment's latest sweep (or all its runs when it has none, or when `all_runs`).
    """
    client, uri = _client_and_uri(client_or_uri)
    exp, parent, found = _select(client, experiment, sweep, all_runs)
    if not found:
        where = f"sweep {parent.info.run_id}" if parent else f"experiment {exp.name!r}"
        raise ReportError(f"There are no runs in {where} to compare. {_sweep_list(client, exp)}")
    ours = [_to_run_data(r) for r in found if written_by_losslab(r)]
    foreign = [_to_run_data(r) for r in found if not written_by_losslab(r)]
    if not ours:
        where = f"Sweep {parent.info.run_id}" if parent else f"Experiment {exp.name!r}"
        raise _foreign_error(uri, where, foreign)
    return Selection(client, uri, exp, parent, ours, foreign=foreign)


def attach_curves(sel: Selection, keys: Iterable[str]) -> Selection:
    """Fill each run's `curves` with the per-step histories of `keys` (bulk, see the module doc)."""
    histories = fetch_histories(sel.client, sel.uri, [r.run_id for r in sel.runs], keys)
    for run in sel.runs:
        run.curves = {k: h[run.run_id] for k, h in histories.items() if run.run_id in h}
    return sel


def load_runs(
    client_or_uri: MlflowClient | str | None,
    experiment: str | None = None,
    sweep: str | None = None,
    all_runs: bool = False,
    keys: Iterable[str] = CURVE_KEYS,
) -> Selection:
    """`select_runs` and their histories of `keys`."""
    return attach_curves(select_runs(client_or_uri, experiment, sweep, all_runs), keys)
