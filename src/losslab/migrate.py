"""Copy experiments between MLflow stores, so a user who started alone can join the team store.

    python -m losslab.migrate --from sqlite:///PATH/mlflow.db --to http://127.0.0.1:5001 [--experiment NAME]

Each run is copied with its name, params, tags, full metric histories (with their steps and
timestamps, in log_batch chunks), status, start/end times and artifacts; parent links
(`mlflow.parentRunId`, sweep children under their sweep's parent run) are remapped to the new ids.

Idempotent: every copy carries the tag `losslab.migrated_from` = source run id, and
`losslab.migration` = `done` once complete, so re-running skips finished copies and redoes
(after deleting) a copy that an interrupted migration left half-written. RUNNING source runs are
left out unless `--include-running` (their copy would freeze a history that is still growing).
Not copied: logged models, datasets/inputs and traces, which LossLab does not write.

Unlike the rest of the library (where only tracking.py and compare.py import mlflow), this
module imports mlflow itself: it is a command-line tool about MLflow stores.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Experiment, Metric, Param, Run, RunTag, ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from losslab.tracking.params import MAX_METRICS, MAX_PARAMS_TAGS, redact_uri
from losslab.tracking.store import TrackingError, ensure_experiment, open_store, resolve_tracking_uri

FROM_TAG = "losslab.migrated_from"
STATE_TAG = "losslab.migration"
PARENT_TAG = "mlflow.parentRunId"
#: tags MLflow derives itself, or that the migration rewrites
_SKIP_TAGS = {PARENT_TAG, "mlflow.runName", FROM_TAG, STATE_TAG}


@dataclass
class Report:
    """What a migration did, per experiment and in total."""

    copied: int = 0
    skipped: int = 0
    redone: int = 0
    running_left: int = 0
    points: int = 0
    artifacts: int = 0
    warnings: list[str] = field(default_factory=list)


def store_uri(text: str) -> str:
    """A URI, or a plain path to a sqlite file (made absolute, as every LossLab job would)."""
    if "://" not in text:
        return f"sqlite:///{Path(text).resolve()}"
    return resolve_tracking_uri(text) if text.startswith("sqlite:") else text


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _all_runs(client: MlflowClient, experiment_id: str, view: int = ViewType.ACTIVE_ONLY) -> list[Run]:
    """Every run of an experiment, oldest first (parents before their children), across pages."""
    runs: list[Run] = []
    token: str | None = None
    while True:
        page = client.search_runs(
            [experiment_id],
            run_view_type=view,
            max_results=1000,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _experiments(client: MlflowClient, names: Iterable[str] | None) -> list[Experiment]:
    if names:
        found = []
        for name in names:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise TrackingError(f"experiment {name!r} is not in the source store")
            found.append(exp)
        return found
    exps: list[Experiment] = []
    token = None
    while True:
        page = client.search_experiments(view_type=ViewType.ACTIVE_ONLY, page_token=token)
        exps.extend(page)
        token = page.token
        if not token:
            return sorted(exps, key=lambda e: int(e.experiment_id) if e.experiment_id.isdigit() else 0)


def _copy_data(src: MlflowClient, dst: MlflowClient, run: Run, new_id: str, report: Report) -> None:
    """Params, then every metric's full history, then artifacts."""
    params = [Param(k, v) for k, v in run.data.params.items()]
    for chunk in _chunks(params, MAX_PARAMS_TAGS):
        dst.log_batch(new_id, params=chunk)
    points: list[Metric] = []
    for key in sorted(run.data.metrics):
        hist = src.get_metric_history(run.info.run_id, key)
        points.extend(Metric(m.key, m.value, m.timestamp, m.step) for m in hist)  # no source run id
    for chunk in _chunks(points, MAX_METRICS):
        dst.log_batch(new_id, metrics=chunk)
    report.points += len(points)
    try:
        if not src.list_artifacts(run.info.run_id):
            return
        with tempfile.TemporaryDirectory(prefix="losslab-migrate-") as tmp:
            local = src.download_artifacts(run.info.run_id, "", tmp)
            dst.log_artifacts(new_id, local)
            report.artifacts += sum(1 for p in Path(local).rglob("*") if p.is_file())
    except (MlflowException, OSError) as exc:
        report.warnings.append(f"run {run.info.run_id}: artifacts not copied ({str(exc).splitlines()[0]})")


def _copy_run(src: MlflowClient, dst: MlflowClient, exp_id: str, run: Run, report: Report) -> str:
    info = run.info
    tags = {k: v for k, v in run.data.tags.items() if k not in _SKIP_TAGS}
    tags[FROM_TAG] = info.run_id
    tags[STATE_TAG] = "copying"
    new = dst.create_run(exp_id, start_time=info.start_time, tags=tags, run_name=info.run_name)
    new_id = new.info.run_id
    try:
        _copy_data(src, dst, run, new_id, report)
        if info.status != "RUNNING":
            dst.set_terminated(new_id, status=info.status, end_time=info.end_time)
    except BaseException:
        with contextlib.suppress(Exception):
            dst.set_terminated(new_id, status="FAILED")
        raise
    dst.log_batch(new_id, tags=[RunTag(STATE_TAG, "done")])
    return new_id


@dataclass
class Copy:
    """A source run and its copy; `parent` is the copy's current parent link."""

    run: Run
    new_id: str
    parent: str | None = None


def migrate_experiment(
    src: MlflowClient,
    dst: MlflowClient,
    exp: Experiment,
    id_map: dict[str, str],
    report: Report,
    include_running: bool = False,
) -> list[Copy]:
    """Copy one experiment's runs not yet in `dst`; return every source run with its copy."""
    runs = _all_runs(src, exp.experiment_id)
    if not runs:
        return []  # nothing to copy: no empty experiment is made in the destination
    exp_id = ensure_experiment(dst, exp.name)
    for key, value in exp.tags.items():
        if not key.startswith("mlflow.") or key == "mlflow.note.content":
            dst.set_experiment_tag(exp_id, key, value)
    existing: dict[str, Run] = {}
    for r in _all_runs(dst, exp_id, ViewType.ALL):  # a copy the user deleted stays deleted
        origin = r.data.tags.get(FROM_TAG)
        done = r.data.tags.get(STATE_TAG) == "done"
        if origin and (done or r.info.lifecycle_stage == "active") and (done or origin not in existing):
            existing[origin] = r
    copies: list[Copy] = []
    for run in runs:
        rid = run.info.run_id
        if run.info.status == "RUNNING" and not include_running:
            report.running_left += 1
            report.warnings.append(f"run {rid} ({run.info.run_name}) is RUNNING: left out")
            continue
        found = existing.get(rid)
        if found is not None and found.data.tags.get(STATE_TAG) == "done":
            report.skipped += 1
            copies.append(Copy(run, found.info.run_id, found.data.tags.get(PARENT_TAG)))
        else:
            if found is not None:  # an interrupted copy: start it again
                dst.delete_run(found.info.run_id)
                report.redone += 1
            copies.append(Copy(run, _copy_run(src, dst, exp_id, run, report)))
            report.copied += 1
        id_map[rid] = copies[-1].new_id
    return copies


def relink_parents(dst: MlflowClient, copies: list[Copy], id_map: dict[str, str], report: Report) -> None:
    """Point each copy at its parent's copy; a parent that was not migrated leaves no dangling link."""
    for c in copies:
        parent = c.run.data.tags.get(PARENT_TAG)
        if not parent:
            continue
        new_parent = id_map.get(parent)
        if new_parent is None:
            report.warnings.append(f"run {c.run.info.run_id}: parent {parent} not migrated, link dropped")
        elif c.parent != new_parent:
            dst.set_tag(c.new_id, PARENT_TAG, new_parent)


def migrate(
    src_uri: str, dst_uri: str, experiments: Sequence[str] | None = None, include_running: bool = False
) -> dict[str, Report]:
    """Copy `experiments` (default: all active ones) from `src_uri` to `dst_uri`; reports by name."""
    if src_uri == dst_uri:
        raise TrackingError("--from and --to are the same store")
    if src_uri.startswith("sqlite:///") and not Path(src_uri[len("sqlite:///") :]).is_file():
        raise TrackingError(f"the source store {src_uri} does not exist")
    src = open_store(src_uri)
    dst = open_store(dst_uri)
    id_map: dict[str, str] = {}
    done: list[tuple[Report, list[Copy]]] = []
    reports: dict[str, Report] = {}
    for exp in _experiments(src, experiments):
        report = reports[exp.name] = Report()
        done.append((report, migrate_experiment(src, dst, exp, id_map, report, include_running)))
    for report, copies in done:  # after all experiments: a parent may live in another one
        relink_parents(dst, copies, id_map, report)
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m losslab.migrate",
        description="Copy experiments (runs, params, tags, metric histories, artifacts) between MLflow "
        "stores; re-running skips runs already copied.",
    )
    parser.add_argument("--from", dest="src", required=True, help="source store URI or sqlite file path")
    parser.add_argument(
        "--to", dest="dst", required=True, help="destination store URI (e.g. http://HOST:PORT)"
    )
    parser.add_argument(
        "--experiment", action="append", metavar="NAME", help="experiment to copy (repeatable; default: all)"
    )
    parser.add_argument("--include-running", action="store_true", help="also copy runs still RUNNING")
    args = parser.parse_args(argv)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # one summary line per experiment instead of a progress bar and a "View run" URL per run
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    src, dst = store_uri(args.src), store_uri(args.dst)
    try:
        reports = migrate(src, dst, args.experiment, args.include_running)
    except TrackingError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print(f"{redact_uri(src)} -> {redact_uri(dst)}")
    for name, r in reports.items():
        if not (r.copied or r.skipped or r.running_left):
            continue
        redone = f", {r.redone} redone after an interrupted copy" if r.redone else ""
        print(
            f"  {name}: {r.copied} runs copied ({r.points} metric points, {r.artifacts} artifact files), "
            f"{r.skipped} already migrated{redone}"
            + (f", {r.running_left} RUNNING left out" if r.running_left else "")
        )
    for r in reports.values():
        for w in r.warnings:
            print(f"  warning: {w}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
