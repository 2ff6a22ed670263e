"""Everything MLflow: store set-up, run lifecycle, batched metric writes, params flattening.

Library code uses `MlflowClient` with explicit run ids, never the fluent active run:
sweep workers are reused across jobs, and a fluent run leaks from one job into the next.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import math
import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from .steplog import StepBuffer

PROJECT_ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("losslab.tracking")
DEFAULT_EXPERIMENT = "losslab"
PARENT_ENV = "LOSSLAB_PARENT_RUN_ID"
MAX_METRICS, MAX_PARAMS_TAGS, MAX_PARAM_LEN, MAX_TAG_LEN = 1000, 100, 6000, 8000


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, unwritable or foreign file)."""


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
        self.con = sqlite3.connect(path, timeout=60)

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


# ----------------------------------------------------------------------------- store


def default_tracking_uri() -> str:
    """mlflow.db in the checkout LossLab runs from (any cwd), else in the current directory (pip install)."""
    checkout = (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "src" / "losslab").is_dir()
    return f"sqlite:///{(PROJECT_ROOT if checkout else Path.cwd()) / 'mlflow.db'}"


def resolve_tracking_uri(configured: str | None) -> str:
    """`MLFLOW_TRACKING_URI` wins over the config, as MLflow users expect; then the project's sqlite file."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or configured or default_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # make relative sqlite paths absolute so every job (whatever its cwd) hits the same file
        uri = f"sqlite:///{Path(uri[len('sqlite:///') :]).resolve()}"
    return uri


def resolve_experiment_name(configured: str | None) -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or configured or DEFAULT_EXPERIMENT


def redact_uri(uri: str) -> str:
    """Drop a password from a URI before it is printed or recorded."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:***@{host}" if parts.username else host
    return urlunsplit(parts._replace(netloc=netloc))


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise first-time schema creation of a sqlite store across processes.

    MLflow creates its tables without a lock: several processes opening a brand-new file
    at once crash ('duplicate column name'). A file lock beside the database fixes that.
    """
    path = _sqlite_path(uri)
    if path is None:
        yield
        return
    lock_path = path.with_name(path.name + ".lock")
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _refuse_foreign_sqlite(path: Path) -> None:
    """Never let MLflow create its tables inside somebody else's database, or read a corrupt file."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb") as fh:
        header = fh.read(16)
    if header != b"SQLite format 3\x00":
        raise TrackingError(
            f"{path} is not a SQLite database, so it cannot be an MLflow store. Accepted: an MLflow "
            "sqlite store, or a path where a new one can be created."
        )
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
            tables = {row[0] for row in con.execute("select name from sqlite_master where type='table'")}
    except sqlite3.DatabaseError as exc:
        msg = f"{path} is a corrupt SQLite file ({exc}); it cannot be an MLflow store."
        raise TrackingError(msg) from None
    if tables and "experiments" not in tables:
        shown = ", ".join(sorted(tables)[:5])
        raise TrackingError(
            f"{path} is a SQLite database of something else (tables: {shown}), not an MLflow store; "
            "LossLab will not add MLflow's tables to it. Accepted: an MLflow sqlite store or a new path."
        )


def check_store_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (seconds, not MLflow's minutes of retries) when a tracking server is down."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            resp.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TrackingError(
            f"The MLflow tracking server at {redact_uri(uri)} is not reachable ({exc}). "
            "Start it (e.g. `make ui` "
            "or `make server`), fix MLFLOW_TRACKING_URI / tracking.uri, or unset them to use the local "
            "sqlite store."
        ) from None


def open_store(uri: str) -> MlflowClient:
    """Return a client on a store whose schema exists; create it once, under a lock."""
    path = _sqlite_path(uri)
    if path is not None:
        if not path.parent.is_dir():
            raise TrackingError(
                f"Cannot create the MLflow store {uri}: folder {path.parent} does not exist. "
                "Accepted: a sqlite:///ABSOLUTE/PATH.db in an existing, writable folder."
            )
        _refuse_foreign_sqlite(path)
    check_store_reachable(uri)
    # Large timeouts would hang on a dead server; MLflow's HTTP retries are bounded by these.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run" per job
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # LossLab queues and retries itself
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # schema-migration chatter on every job
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        with _store_lock(uri):
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # creates / migrates the schema
    except Exception as exc:  # sqlalchemy, sqlite3, HTTP errors all mean "this store is unusable"
        msg = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise TrackingError(
            f"Cannot open the MLflow store {redact_uri(uri)}: {msg}. Accepted: a writable sqlite file "
            "(sqlite:///ABSOLUTE/PATH.db), or an http(s) URI of a running MLflow server."
        ) from None
    return client


def _artifact_location(client: MlflowClient, name: str) -> str | None:
    """Artifacts of a sqlite store live beside the database file, not under whatever cwd a job had."""
    path = _sqlite_path(client.tracking_uri)
    if path is None:
        return None  # a tracking server decides
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return (path.parent / "mlartifacts" / safe).as_uri()


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """Experiment id for `name`, creating it; safe when parallel jobs race to create it."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_artifact_location(client, name))
    except MlflowException:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


@dataclass(frozen=True)
class FinishedRun:
    run_id: str
    outcome: str | None
    val_loss: float | None


def find_finished(client: MlflowClient, experiment_id: str, config_hash: str) -> FinishedRun | None:
    """The newest FINISHED run of this exact config in the experiment, for resumable sweeps."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`losslab.config_hash` = '{config_hash}' and attributes.status = 'FINISHED'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    if not runs:
        return None
    run = runs[0]
    return FinishedRun(run.info.run_id, run.data.tags.get("outcome"), run.data.metrics.get("final/val_loss"))


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


# ----------------------------------------------------------------------------- params


_SECRET_KEY = re.compile(r"(password|passwd|secret|token|api[_-]?key|credential)", re.IGNORECASE)


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> {"loss.margin": "0.5", ...}; secrets masked, URIs without passwords."""
    out: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
            continue
        if _SECRET_KEY.search(str(key)):
            text = "***"
        elif isinstance(value, str) and "://" in value:
            text = redact_uri(value)
        else:
            text = str(value)
        out[name] = text[:MAX_PARAM_LEN]
    return out


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
        self, client: MlflowClient, run_id: str, retry_seconds: float = 60.0, flush_every: int = 256
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.retry_seconds = retry_seconds
        self.buffer = StepBuffer(capacity=flush_every)
        self.history: dict[str, list[tuple[int, float]]] = {k: [] for k in self.KEEP}
        self._pending: list[Metric] = []
        self._outage_since: float | None = None
        self.closed = False
        self._sql = SqliteMetricWriter.open(client.tracking_uri)
        remote = client.tracking_uri.startswith(("http://", "https://"))
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="losslab-metrics") if remote else None
        self._writing: Future[None] | None = None

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
    ) -> RunRecorder:
        all_tags = {k: str(v)[:MAX_TAG_LEN] for k, v in {**standard_tags(), **tags}.items()}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(experiment_id, run_name=run_name, tags=all_tags)
        rec = cls(client, run.info.run_id, retry_seconds=retry_seconds, flush_every=flush_every)
        param_list = [Param(k, v) for k, v in params.items()]
        for chunk in _chunks(param_list, MAX_PARAMS_TAGS):
            rec._with_retry(lambda c=chunk: client.log_batch(rec.run_id, params=c))
        return rec

    @staticmethod
    def _transient(exc: Exception) -> bool:
        """Errors worth retrying: the server is away or busy (connection refused, 5xx, locked sqlite)."""
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
        tag_list = [RunTag(k, str(v)[:MAX_TAG_LEN]) for k, v in tags.items()]
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

        A tracking server answers each log_batch in tens of milliseconds: there the writes run
        on one background thread (the training thread only drains the buffer and hands the
        points over), and an error it meets is raised here at the next flush.
        """
        ts = int(time.time() * 1000)
        for name, step, value in self.buffer.drain():
            self._pending.append(Metric(name, value, ts, step))
            if name in self.history:
                self.history[name].append((step, value))
        if self._writer is None:
            self._write(self._pending, block)
            return
        if self._writing is not None:
            if not self._writing.done() and not block:
                return  # still writing the last hand-over: these points go with the next one
            writing, self._writing = self._writing, None
            writing.result()  # re-raises the writer's error (TrackingError after a long outage)
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
                if not self._transient(exc):
                    raise
                self._outage(exc, len(points))
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

    def close(self, status: str = "FINISHED", error: str | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.flush(block=True)
        except TrackingError as exc:  # the store stayed away: say so on the run if it comes back
            status, error = "FAILED", str(exc)
            raise
        finally:
            if error:
                with contextlib.suppress(Exception):
                    self.set_tags({"error": error[:MAX_TAG_LEN]})
            final = RunStatus.to_string(RunStatus.from_string(status))
            try:
                self._with_retry(lambda: self.client.set_terminated(self.run_id, status=final))
            finally:
                if self._sql is not None:
                    self._sql.close()
                if self._writer is not None:
                    self._writer.shutdown(wait=True)
