"""Run lifecycle in MLflow: a run created with params and tags, fed metrics in batches, always closed.

Library code uses `MlflowClient` with explicit run ids, never the fluent active run:
sweep workers are reused across jobs, and a fluent run leaks from one job into the next.
The store itself (URIs, creation, health checks) lives in `store`, secret masking and MLflow's
size limits in `params`, liveness (heartbeat, stale runs, claims) in `liveness`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import sqlite3
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from losslab.tracking import liveness
from losslab.tracking.params import (
    MAX_METRICS,
    MAX_PARAMS_TAGS,
    MAX_TAG_LEN,
    clip_tags,
)
from losslab.tracking.store import (
    TrackingError,
    _sqlite_path,
    disk_full,
    disk_full_error,
    locked_error,
    run_vanished,
    store_locked,
    vanished_error,
)

if TYPE_CHECKING:  # steplog imports torch, which a sweep driver does not need (1.4 s at start-up)
    from losslab.train.steplog import StepBuffer

__all__ = [
    "PARENT_ENV",
    "ConfigClaimed",
    "RunRecorder",
    "RunVanished",
    "SqliteMetricWriter",
    "find_finished",
]

log = logging.getLogger("losslab.tracking.recorder")
PARENT_ENV = "LOSSLAB_PARENT_RUN_ID"


class RunVanished(TrackingError):
    """The store no longer knows this run (a server back on another backend store): nothing more of it
    can be written; `RunRecorder.close` says so in one paragraph with what was not written."""


class ConfigClaimed(Exception):
    """Another live or finished run holds this config (two sweeps on one store): skip it."""

    def __init__(self, holder: Any) -> None:
        super().__init__(f"run {holder.info.run_id} ({holder.info.status}) holds this config")
        self.holder = holder


class SqliteMetricWriter:
    """Metric points straight into an MLflow sqlite store: the rows `log_batch` would write.

    MLflow's SqlAlchemyStore.log_batch builds an ORM object per point and merges latest_metrics
    in Python: ~0.1 ms a point here, 1.7 ms per training step at 16 metrics a step, more than the
    step itself. Two `executemany` in one transaction write the same rows (duplicates ignored,
    NaN as is_nan=1/value 0, +-inf as +-max float, latest_metrics kept at the max (step,
    timestamp, value)) at ~7 us a point. Used only when both tables have exactly these columns
    (checked once per run); any other schema goes through MLflow's client.
    """

    COLUMNS = frozenset({"key", "value", "timestamp", "run_uuid", "step", "is_nan"})
    _INSERT = (
        "INSERT OR IGNORE INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,?)"
    )
    _LATEST = (
        "INSERT INTO latest_metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,?) "
        "ON CONFLICT (key, run_uuid) DO UPDATE SET value = excluded.value, timestamp = excluded.timestamp, "
        "step = excluded.step, is_nan = excluded.is_nan WHERE (excluded.step, excluded.timestamp, "
        "excluded.value) > (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)"
    )

    def __init__(self, path: Path) -> None:
        # written from the recorder's writer thread only (check_same_thread off for that hand-over)
        self.con = sqlite3.connect(path, timeout=60, check_same_thread=False)

    @classmethod
    def open(cls, uri: str) -> SqliteMetricWriter | None:
        path = _sqlite_path(uri)
        if path is None or not path.exists():
            return None
        with contextlib.closing(sqlite3.connect(path, timeout=60)) as con:
            tables = {
                t: {row[1] for row in con.execute(f"PRAGMA table_info({t})")}
                for t in ("metrics", "latest_metrics")
            }
        if any(cols != cls.COLUMNS for cols in tables.values()):
            return None
        return cls(path)

    def write(self, run_id: str, metrics: Iterable[Metric]) -> None:
        rows: list[tuple[str, float, int, str, int, int]] = []
        latest: dict[str, tuple[str, float, int, str, int, int]] = {}
        for m in metrics:
            value, nan = m.value, math.isnan(m.value)
            if nan:
                value = 0.0
            elif math.isinf(value):
                value = math.copysign(1.7976931348623157e308, value)
            row = (m.key, value, m.timestamp, run_id, m.step, int(nan))
            rows.append(row)
            seen = latest.get(m.key)
            if seen is None or (m.step, m.timestamp, value) > (seen[4], seen[2], seen[1]):
                latest[m.key] = row
        with self.con:  # one transaction: both tables or neither
            self.con.executemany(self._INSERT, rows)
            self.con.executemany(self._LATEST, list(latest.values()))

    def close(self) -> None:
        self.con.close()


@dataclass(frozen=True)
class FinishedRun:
    run_id: str
    outcome: str | None
    val_loss: float | None
    #: non-empty: no FINISHED run of the config came from the current code; this is the newest one,
    #: and these kinds (`loss`, `model`) of its code changed since (see `fingerprint`)
    changed: tuple[str, ...] = ()


def find_finished(
    client: MlflowClient, experiment_id: str, config_hash: str, sources: Mapping[str, str] | None = None
) -> FinishedRun | None:
    """The newest FINISHED run of this exact config in the experiment, for resumable sweeps, made from
    the same loss and model source as `sources` (tag -> fingerprint; a run that recorded none counts)."""
    from losslab.tracking import fingerprint

    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`losslab.config_hash` = '{config_hash}' and attributes.status = 'FINISHED'",
        max_results=100,
        order_by=["attributes.start_time DESC"],
    )
    if not runs:
        return None
    for run in runs:
        if not fingerprint.changed(run.data.tags, sources or {}):
            return _finished(run)
    return _finished(runs[0], tuple(fingerprint.changed(runs[0].data.tags, sources or {}) or ()))


def _finished(run: Any, changed: tuple[str, ...] = ()) -> FinishedRun:
    return FinishedRun(
        run.info.run_id, run.data.tags.get("outcome"), run.data.metrics.get("final/val_loss"), changed
    )


# ----------------------------------------------------------------------------- standard tags, dataset


@functools.lru_cache(maxsize=1)
def _context_tags() -> tuple[tuple[str, str], ...]:
    from mlflow.tracking.context.registry import resolve_tags

    return tuple((k, str(v)) for k, v in resolve_tags().items())


def standard_tags() -> dict[str, str]:
    """MLflow's own context tags (mlflow.user, mlflow.source.name/type, mlflow.source.git.commit, ...),
    exactly as its context providers resolve them for a fluent run; the runs table's User and Source
    columns read them. Entry-point scripts (train.py, losslab-train) are resolved like any script."""
    try:  # one resolution per process: the script, user and commit do not change within it
        return dict(_context_tags())
    except Exception:  # a context provider failing (e.g. git unreadable) must not stop a run
        return {}


def log_dataset(client: MlflowClient, run_id: str, name: str, splits: Mapping[str, Any]) -> None:
    """Each split (`{"train": (x, y), "validation": (x, y)}`) as a run input: name, digest and schema
    (MLflow computes them from the arrays), so the runs table's Dataset column names the data."""
    import numpy as np
    from mlflow.data.numpy_dataset import from_numpy
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = []
    for context, (x, y) in splits.items():
        features = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
        targets = np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y)
        dataset = from_numpy(features, targets=targets, name=name)  # source: the code location
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)]))
    client.log_inputs(run_id, datasets=inputs)


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# ----------------------------------------------------------------------------- runs


class RunRecorder:
    """One MLflow run: created with params and tags, fed metrics in batches, always closed.

    `close()` flushes buffered points before setting the final status, so a run is never
    left RUNNING and its curve is kept up to the last step whatever ended it.
    """

    #: metrics also kept on the host, for the outcome classifier and the curve plot
    KEEP = ("train/loss", "val/loss")

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        retry_seconds: float = 60.0,
        flush_every: int = 256,
        buffer: StepBuffer | None = None,
        heartbeat_seconds: float = liveness.HEARTBEAT_SECONDS,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.retry_seconds = retry_seconds
        if buffer is None:
            from losslab.train.steplog import StepBuffer

            buffer = StepBuffer(capacity=flush_every)
        self.buffer = buffer
        self.history: dict[str, list[tuple[int, float]]] = {k: [] for k in self.KEEP}
        self._pending: list[Metric] = []
        self._outage_since: float | None = None
        #: set once a write failed for good (full disk, an error that is no outage): the points not
        #: written stay here, in order, and nothing later is written before them (see `flush`)
        self._failed: BaseException | None = None
        self._unwritten: list[Metric] = []
        #: set when the store answered that it does not know this run (see `RunVanished`)
        self._vanished = False
        self.closed = False
        self._sql = SqliteMetricWriter.open(client.tracking_uri)
        # Every write runs on one background thread: the training thread only drains the device
        # buffer and hands the points over, so a slow server or a reader holding a long sqlite
        # read transaction (which blocks a writer's commit) never stalls training.
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="losslab-metrics")
        self._writing: Future[None] | None = None
        self._heartbeat = (
            liveness.Heartbeat(client, run_id, heartbeat_seconds) if heartbeat_seconds > 0 else None
        )

    @classmethod
    def start(
        cls,
        client: MlflowClient,
        experiment_id: str,
        run_name: str,
        params: Mapping[str, str],
        tags: Mapping[str, str],
        parent_run_id: str | None = None,
        retry_seconds: float = 60.0,
        flush_every: int = 256,
        buffer: StepBuffer | None = None,
        claim_hash: str | None = None,
        finished_counts: bool = True,
        heartbeat_seconds: float = liveness.HEARTBEAT_SECONDS,
        stale_after: float = liveness.STALE_AFTER,
    ) -> RunRecorder:
        """Create the run; with `claim_hash`, raise `ConfigClaimed` (run deleted) if another run holds it."""
        all_tags = clip_tags({**standard_tags(), **tags, **liveness.identity()})
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        asked = time.monotonic()
        # MLflow logs a locked sqlite store's error with its whole traceback before raising it; LossLab
        # says it in one paragraph below (any other error is raised with its traceback as before)
        sql_log = logging.getLogger("mlflow.store.db.utils")
        level = sql_log.level
        sql_log.setLevel(logging.CRITICAL)
        try:
            run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
        except Exception as exc:
            if disk_full(exc):
                raise disk_full_error(client.tracking_uri, "the run could not be created") from None
            if store_locked(exc):
                waited = time.monotonic() - asked
                raise locked_error(client.tracking_uri, "the run could not be created", waited) from None
            raise
        finally:
            sql_log.setLevel(level)
        run_id = run.info.run_id
        try:
            if claim_hash is not None:
                holder = liveness.claim(client, experiment_id, run, claim_hash, finished_counts, stale_after)
                if holder is not None:
                    client.delete_run(run_id)
                    raise ConfigClaimed(holder)
            rec = cls(
                client,
                run_id,
                retry_seconds=retry_seconds,
                flush_every=flush_every,
                buffer=buffer,
                heartbeat_seconds=heartbeat_seconds,
            )
            param_list = [Param(k, v) for k, v in params.items()]
            for chunk in _chunks(param_list, MAX_PARAMS_TAGS):
                rec._with_retry(lambda c=chunk: client.log_batch(run_id, params=c))
        except ConfigClaimed:
            raise
        except BaseException as exc:  # never leave the run RUNNING, whatever stopped its start
            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            with contextlib.suppress(Exception):
                client.set_tag(run_id, "error", f"run start failed: {str(exc).splitlines()[0][:300]}")
                client.set_terminated(run_id, status=status)
            if disk_full(exc):
                raise disk_full_error(client.tracking_uri, "the run could not be recorded") from None
            raise
        return rec

    def _transient(self, exc: Exception) -> bool:
        """Errors worth retrying: the server is away or busy (connection refused, 5xx, locked sqlite).

        A full disk is not one of them: it is said at once, with its own words.
        """
        if disk_full(exc):
            raise disk_full_error(self.client.tracking_uri, "LossLab stopped writing this run") from exc
        if run_vanished(exc, self.run_id):  # no retry brings it back: the server reads another store
            self._vanished = True
            raise RunVanished(str(exc).splitlines()[0][:300]) from None
        if isinstance(exc, MlflowException):
            return exc.error_code in ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED")
        return isinstance(exc, (OSError, sqlite3.OperationalError))  # the latter: "database is locked"

    def _with_retry(self, fn: Any) -> Any:
        """Retry a write while the store is unreachable, for up to `retry_seconds`."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.5
        while True:
            try:
                return fn()
            except Exception as exc:
                if not self._transient(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        tag_list = [RunTag(k, v) for k, v in clip_tags(tags).items()]
        for chunk in _chunks(tag_list, MAX_PARAMS_TAGS):
            self._with_retry(lambda c=chunk: self.client.log_batch(self.run_id, tags=c))

    def log_metrics(self, values: Mapping[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        self._pending.extend(Metric(k, float(v), ts, step) for k, v in values.items())
        self.flush()

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._with_retry(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def flush(self, block: bool = False) -> None:
        """Move device-buffered points to the store (one sqlite transaction, or log_batch per 1000 points).

        While the store is away, points stay queued here and training goes on; the next flush
        tries again. After `retry_seconds` of outage the run fails with the count of points
        not written (none is dropped silently). `block=True` (at the end of a run) waits and
        retries for up to `retry_seconds` instead of returning.

        The writes run on one background thread (see `__init__`); an error it meets is raised
        here at the next flush.
        """
        ts = int(time.time() * 1000)
        for name, step, value in self.buffer.drain():
            self._pending.append(Metric(name, value, ts, step))
            if name in self.history:
                self.history[name].append((step, value))
        if self._writing is not None:
            if not self._writing.done() and not block:
                return  # still writing the last hand-over: these points go with the next one
            writing, self._writing = self._writing, None
            writing.result()  # re-raises the writer's error (TrackingError after a long outage)
        if self._failed is not None:
            return  # a write failed for good: later points must not land before the unwritten ones
        if self._pending:
            batch, self._pending = self._pending, []
            self._writing = self._writer.submit(self._write, batch, True)
        if block and self._writing is not None:
            writing, self._writing = self._writing, None
            writing.result()

    def _write(self, points: list[Metric], block: bool) -> None:
        """Write and remove `points` from the front; on an outage keep the rest (see `flush`)."""
        delay = 0.5
        while points:
            chunk = points[: len(points) if self._sql is not None else MAX_METRICS]
            try:
                if self._sql is not None:
                    self._sql.write(self.run_id, chunk)
                else:
                    self.client.log_batch(self.run_id, metrics=chunk)
            except Exception as exc:
                try:
                    if not self._transient(exc):
                        raise
                    self._outage(exc, len(points))
                except BaseException as final:
                    # Stop here: these points (the failed batch first) stay queued in order, so the
                    # curve never gets a hole (a later batch written while an earlier one was not).
                    self._failed, self._unwritten = final, list(points)
                    raise
                if not block:
                    return
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if self._outage_since is not None:
                down = time.monotonic() - self._outage_since
                log.info("tracking store back after %.0fs; writing %d queued points", down, len(points))
                self._outage_since = None
            del points[: len(chunk)]

    def _outage(self, exc: Exception, queued: int) -> None:
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
            log.warning(
                "warning: tracking store unreachable (%s); training goes on, points are queued for up to %gs",
                str(exc).splitlines()[0][:120],
                self.retry_seconds,
            )
        elif now - self._outage_since > self.retry_seconds:
            raise TrackingError(
                f"the tracking store was unreachable for over {self.retry_seconds:g}s "
                f"(tracking.retry_seconds); {queued} points could not be written."
            ) from exc

    def _write_after_failure(self) -> None:
        """Once, at close: the points a failed write left, then the later ones, in step order.

        Written only if the whole queue goes in (space freed, the store back); otherwise none of it,
        so the stored curve is always the run's first steps without a gap. The failure itself was
        already raised to the job (the run ends FAILED with it)."""
        for name, step, value in self.buffer.drain():
            self._pending.append(Metric(name, value, int(time.time() * 1000), step))
        queued = self._unwritten + self._pending
        self._unwritten, self._pending = [], []
        if not queued:
            return
        try:
            if self._sql is not None:
                self._sql.write(self.run_id, queued)
            else:
                for chunk in _chunks(queued, MAX_METRICS):
                    self.client.log_batch(self.run_id, metrics=chunk)
        except Exception as exc:
            log.warning(
                "warning: %d points of run %s were not written (%s)",
                len(queued),
                self.run_id,
                str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__,
            )

    def close(self, status: str = "FINISHED", error: str | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._close(status, error)
        except Exception:
            if self._vanished:
                raise self._vanished_error() from None
            raise
        if self._vanished:  # e.g. only a tag write met it: still said, the run is not closed
            raise self._vanished_error()

    def _vanished_error(self) -> TrackingError:
        """The one paragraph for a run the store no longer knows, with what of it was not written."""
        for name, step, value in self.buffer.drain():
            self._pending.append(Metric(name, value, int(time.time() * 1000), step))
        lost = self._unwritten + self._pending
        self._unwritten, self._pending = [], []
        if lost:
            steps = [m.step for m in lost]
            unwritten = (
                f"{len(lost)} metric points of the run (steps {min(steps)} to {max(steps)}) were not "
                "written, nor its end status."
            )
        else:
            unwritten = "Its last tags or metrics and its end status were not written."
        return vanished_error(self.client.tracking_uri, self.run_id, unwritten)

    def _close(self, status: str, error: str | None) -> None:
        try:
            failure: Exception | None = None
            try:
                self.flush(block=True)
            except Exception as exc:
                if self._failed is None:
                    raise
                failure = exc  # first said here: still the run's error, after the queue is tried
            if self._failed is not None and not self._vanished:
                self._write_after_failure()
            if failure is not None:
                raise failure
        except TrackingError as exc:  # the store stayed away: say so on the run if it comes back
            status, error = "FAILED", str(exc)
            raise
        finally:
            if error and not self._vanished:
                with contextlib.suppress(Exception):
                    self.set_tags({"error": error[:MAX_TAG_LEN]})
            final = RunStatus.to_string(RunStatus.from_string(status))
            try:
                if self._heartbeat is not None:
                    self._heartbeat.stop()
                if not self._vanished:  # else nothing can close it: `close` says so
                    self._with_retry(lambda: self.client.set_terminated(self.run_id, status=final))
                if final == "FINISHED" and not self._vanished:
                    liveness.revive(self.client, self.run_id)
            finally:
                self._writer.shutdown(wait=True)
                if self._sql is not None:
                    self._sql.close()
