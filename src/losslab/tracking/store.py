"""The MLflow store: where it is, whether it can be used, and creating it safely.

- A brand-new sqlite store is created atomically: MLflow's schema migrations run on a temporary
  file beside the target, which is renamed into place only once complete. MLflow migrates in
  place, one step at a time; an interruption part-way leaves a file every later open refuses
  ("table ... already exists"). Creation also holds a file lock, since MLflow creates its tables
  without one (parallel jobs on a new file crash with "duplicate column name").
- Problems a user can fix (server down, read-only file, full disk, a file that is not an MLflow
  store) are a `TrackingError` with one paragraph, raised before any run exists.
- `SqliteRunsReader`: read-only SQL over a sqlite store at MLflow's current schema, for a sweep
  that only needs to know whether it has anything to do (importing MLflow costs seconds).

MLflow itself is imported only where a client is made (this module is imported by the sweep
driver's nothing-to-do check, which needs none).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import functools
import importlib.util
import logging
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from losslab.tracking.params import redact_uri

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_EXPERIMENT = "losslab"


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, unwritable or foreign file)."""


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


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


_sqlite_path = sqlite_path  # the name other modules used before the split


def disk_full(exc: BaseException) -> bool:
    """sqlite's SQLITE_FULL or the OS's ENOSPC, however MLflow/SQLAlchemy wrapped it."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(seen).lower()
        if "database or disk is full" in text or "no space left on device" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def disk_full_error(uri: str, what: str) -> TrackingError:
    where = sqlite_path(uri)
    place = f"the disk holding {where.parent}" if where is not None else f"the disk of {redact_uri(uri)}"
    return TrackingError(
        f"No space left: {place} is full, so {what}. Free some space (or point MLFLOW_TRACKING_URI / "
        "tracking.uri at a store on another disk) and run again; a sweep resumes where it stopped."
    )


def store_locked(exc: BaseException) -> bool:
    """sqlite's "database is locked": another connection held the write lock past the busy wait."""
    seen: BaseException | None = exc
    while seen is not None:
        if "database is locked" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def locked_error(uri: str, what: str, waited: float | None = None) -> TrackingError:
    wait = f" LossLab waited {waited:.0f}s for it." if waited is not None else ""
    return TrackingError(
        f"The MLflow store {redact_uri(uri)} is locked: another process holds its write lock (an open "
        f"write transaction, e.g. a `sqlite3` shell or a notebook after BEGIN or an INSERT), so {what}."
        f"{wait} End that transaction (commit, roll back or close that program) and run again; no run "
        "was left RUNNING, and a sweep resumes where it stopped."
    )


def run_vanished(exc: BaseException, run_id: str) -> bool:
    """The store answered that it does not know `run_id` (RESOURCE_DOES_NOT_EXIST naming it): a server
    that came back with another backend store (a restarted container without its volume)."""
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "error_code", None) == "RESOURCE_DOES_NOT_EXIST" and run_id in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def vanished_error(uri: str, run_id: str, unwritten: str) -> TrackingError:
    """One paragraph for a run the tracking server no longer knows (see `run_vanished`)."""
    return TrackingError(
        f"The tracking server at {redact_uri(uri)} no longer knows run {run_id} (RESOURCE_DOES_NOT_EXIST): "
        "it was restarted with another backend store? (e.g. a container restarted without its volume, or "
        f"another --backend-store-uri). {unwritten} The run cannot be closed in the backend store that "
        "held it, since the server no longer reads that store: there it stays RUNNING with the points "
        "written before. Restart the server on its original backend store and run `python -m "
        "losslab.doctor` to mark the run KILLED, then run this config again (a sweep resumes where it "
        "stopped); or, if that store is lost, just run again against the new one."
    )


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise first-time schema creation of a sqlite store across processes (a lock file beside it)."""
    path = sqlite_path(uri)
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


def _refuse_read_only(path: Path) -> None:
    """A store LossLab cannot write would fail at the first run write, after the run exists."""
    folder_ok = os.access(path.parent, os.W_OK | os.X_OK)
    if path.exists() and not (os.access(path, os.W_OK) and folder_ok):
        what = "file" if not os.access(path, os.W_OK) else f"folder {path.parent}"
        raise TrackingError(
            f"The MLflow store {path} is read-only (its {what} is not writable by this user), so no run "
            "can be recorded. Accepted: a sqlite file in a folder this user can write (fix the "
            "permissions, or point MLFLOW_TRACKING_URI / tracking.uri elsewhere)."
        )


def split_basic_auth(uri: str) -> tuple[str, dict[str, str]]:
    """`http://user:pass@host` -> (`http://host`, Authorization header): urllib cannot take userinfo."""
    parts = urlsplit(uri)
    if parts.username is None:
        return uri, {}
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    token = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
    return urlunsplit(parts._replace(netloc=host)), {"Authorization": f"Basic {token}"}


def check_store_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (seconds, not MLflow's minutes of retries) when a tracking server is down."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    base, headers = split_basic_auth(uri)
    request = urllib.request.Request(base.rstrip("/") + "/health", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise TrackingError(
                f"The MLflow tracking server at {redact_uri(uri)} refused LossLab's credentials "
                f"(HTTP {exc.code}). Accepted: http(s)://USER:PASSWORD@HOST:PORT, or "
                "MLFLOW_TRACKING_USERNAME "
                "and MLFLOW_TRACKING_PASSWORD in the environment."
            ) from None
        if exc.code >= 500:
            raise _unreachable(uri, exc) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _unreachable(uri, exc) from None


def _unreachable(uri: str, exc: BaseException) -> TrackingError:
    return TrackingError(
        f"The MLflow tracking server at {redact_uri(uri)} is not reachable ({exc}). Start it (e.g. `make ui` "
        "or `make server`), fix MLFLOW_TRACKING_URI / tracking.uri, or unset them to use the local "
        "sqlite store."
    )


def _dispose(client: MlflowClient) -> None:
    """Close the SQLAlchemy engine behind a client, so its file can be renamed safely."""
    store: Any = getattr(getattr(client, "_tracking_client", None), "store", None)
    engine = getattr(store, "engine", None)
    if engine is not None:
        engine.dispose()


def _create_sqlite_store(path: Path) -> None:
    """Run MLflow's migrations on a temporary file, then rename it into place (atomic on POSIX)."""
    for stale in path.parent.glob(f".{path.name}.creating-*"):  # left by an interrupted creation
        with contextlib.suppress(OSError):
            stale.unlink()
    from mlflow.tracking import MlflowClient

    tmp = path.with_name(f".{path.name}.creating-{os.getpid()}")
    try:
        client = MlflowClient(tracking_uri=f"sqlite:///{tmp}")
        client.search_experiments(max_results=1)
        _dispose(client)
        if path.exists() and path.stat().st_size == 0:
            path.unlink()
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            with contextlib.suppress(OSError):
                leftover.unlink()


_TMP_PREFIX = "_alembic_tmp_"  # alembic's table copies while it alters a sqlite table


def _copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy of `source` (sqlite's backup API: a read transaction), written to `target`."""
    with (
        contextlib.closing(sqlite3.connect(source, timeout=60)) as con,
        contextlib.closing(sqlite3.connect(target)) as out,
    ):
        con.backup(out)


def _migrate_old_sqlite(path: Path) -> None:
    """Bring an older-schema sqlite store to MLflow's current schema without risking it.

    MLflow upgrades a store in place, step by step; a kill part-way leaves `_alembic_tmp_*` tables and
    a store every later open refuses. Here a copy of the store is kept first (`<db>.pre-<revision>.bak`),
    the migration runs on a second copy that is renamed over the store only once complete, and the
    store's write lock is held meanwhile. A store an earlier interruption left with `_alembic_tmp_*`
    tables is repaired on that copy when each table it copies still exists (the copy was partial)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
        tables = {row[0] for row in con.execute("select name from sqlite_master where type='table'")}
        if "alembic_version" not in tables:
            return  # MLflow creates the schema itself (under the creation lock)
        row = con.execute("select version_num from alembic_version").fetchone()
    revision = row[0] if row else None
    leftovers = sorted(t for t in tables if t.startswith(_TMP_PREFIX))
    from mlflow.store.db.utils import _get_latest_schema_revision

    if revision == _get_latest_schema_revision() and not leftovers:
        return
    log = logging.getLogger("losslab.tracking.store")
    for stale in path.parent.glob(f".{path.name}.migrating-*"):  # left by a killed migration
        with contextlib.suppress(OSError):
            stale.unlink()
    backup = path.with_name(f"{path.name}.pre-{revision}.bak")
    n = 1
    while backup.exists():
        backup, n = path.with_name(f"{path.name}.pre-{revision}.{n}.bak"), n + 1
    work = path.with_name(f".{path.name}.migrating-{os.getpid()}")
    con = sqlite3.connect(path, timeout=60, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")  # no other writer until the migrated copy replaces the file
        _copy_sqlite(path, backup)  # readers may read beside the write lock
        _copy_sqlite(path, work)
        missing = [t for t in leftovers if t[len(_TMP_PREFIX) :] not in tables]
        if missing:
            raise TrackingError(
                f"The MLflow store {path} was left half-migrated by an interrupted schema upgrade: "
                f"table {missing[0]} holds rows whose original table is gone, and LossLab cannot tell "
                f"which state is right, so it changed nothing (a copy is at {backup}). Restore a copy "
                f"taken before the upgrade (`cp {path}.pre-<revision>.bak {path}`, if one exists), or "
                "finish by hand: `sqlite3 DB '.tables'`."
            )
        log.warning(
            "note: upgrading the MLflow store %s from schema %s; a copy from before is kept at %s",
            path,
            revision,
            backup,
        )
        with contextlib.closing(sqlite3.connect(work)) as fix:
            for table in leftovers:  # partial copies of tables that are still whole
                fix.execute(f'DROP TABLE "{table}"')
            fix.commit()
        import sqlalchemy
        from mlflow.store.db.utils import _upgrade_db

        engine = sqlalchemy.create_engine(f"sqlite:///{work}")
        try:
            _upgrade_db(engine)
        finally:
            engine.dispose()
        os.replace(work, path)
    except TrackingError:
        raise
    except Exception as exc:
        if disk_full(exc):
            raise disk_full_error(f"sqlite:///{path}", "its schema could not be upgraded") from None
        msg = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise TrackingError(
            f"Could not upgrade the MLflow store {path} from schema {revision} ({msg}); the store is "
            f"unchanged and a copy is at {backup}. Upgrade a copy by hand with `mlflow db upgrade "
            f"sqlite:///{path}` (after `cp {path} {path}.bak`), or point MLFLOW_TRACKING_URI elsewhere."
        ) from None
    finally:
        con.close()  # after the rename: the lock was on the old file
        for leftover in (work, work.with_name(work.name + "-journal")):
            with contextlib.suppress(OSError):
                leftover.unlink()


def open_store(uri: str) -> MlflowClient:
    """Return a client on a store whose schema exists; create it once, atomically, under a lock."""
    from mlflow.tracking import MlflowClient

    path = sqlite_path(uri)
    if path is not None:
        if not path.parent.is_dir():
            raise TrackingError(
                f"Cannot create the MLflow store {uri}: folder {path.parent} does not exist. "
                "Accepted: a sqlite:///ABSOLUTE/PATH.db in an existing, writable folder."
            )
        _refuse_foreign_sqlite(path)
        _refuse_read_only(path)
    check_store_reachable(uri)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run" per job
    # Large timeouts would hang on a dead server; MLflow's HTTP retries are bounded by these.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # LossLab queues and retries itself
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # schema-migration chatter on every job
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        with _store_lock(uri):
            if path is not None and (not path.exists() or path.stat().st_size == 0):
                _create_sqlite_store(path)
            elif path is not None:
                _migrate_old_sqlite(path)  # a copy first, never in place
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # migrates an older schema
    except TrackingError:
        raise
    except Exception as exc:  # sqlalchemy, sqlite3, HTTP errors all mean "this store is unusable"
        if disk_full(exc):
            raise disk_full_error(uri, "the store cannot be created or opened") from None
        msg = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise TrackingError(
            f"Cannot open the MLflow store {redact_uri(uri)}: {msg}. Accepted: a writable sqlite file "
            "(sqlite:///ABSOLUTE/PATH.db), or an http(s) URI of a running MLflow server."
        ) from None
    return client


def _artifact_location(client: MlflowClient, name: str) -> str | None:
    """Artifacts of a sqlite store live beside the database file, not under whatever cwd a job had."""
    path = sqlite_path(client.tracking_uri)
    if path is None:
        return None  # a tracking server decides
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    return (path.parent / "mlartifacts" / safe).as_uri()


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """Experiment id for `name`, creating it; safe when parallel jobs race to create it."""
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=_artifact_location(client, name))
    except MlflowException as exc:
        if store_locked(exc):
            raise locked_error(client.tracking_uri, f"experiment {name!r} could not be created") from None
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


@functools.cache
def mlflow_head_revision() -> str | None:
    """The schema revision this MLflow's migrations end at, read from its migration scripts as text
    (each names its `revision` and `down_revision`; the head is the one no other script follows),
    so MLflow is not imported. None when it cannot be told (then ask MLflow)."""
    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        return None
    versions = Path(next(iter(spec.submodule_search_locations))) / "store" / "db_migrations" / "versions"
    revisions: set[str] = set()
    followed: set[str] = set()
    try:
        for script in versions.glob("*.py"):
            text = script.read_text()
            own = re.search(r"^revision\s*=\s*['\"]([0-9a-z_]+)['\"]", text, re.M)
            down = re.search(r"^down_revision\s*=\s*(.+)$", text, re.M)
            if own is None or down is None:  # __init__.py: no migration
                continue
            revisions.add(own.group(1))
            followed.update(re.findall(r"['\"]([0-9a-z_]+)['\"]", down.group(1)))
    except OSError:
        return None
    heads = revisions - followed
    return heads.pop() if len(heads) == 1 else None


class SqliteRunsReader:
    """Read-only SQL over an MLflow sqlite store, answering what `MlflowClient.search_runs` would for
    a sweep's nothing-to-do check, without importing MLflow (seconds at every sweep start).

    `open` gives one only for a store whose schema is this MLflow's current one (an older store is
    upgraded by `open_store`, a newer one refused by it: both go that way) and when MLflow workspaces
    are off; any SQL error means "cannot tell", and the caller takes MLflow's path. Runs are read as
    MLflow's search reads them: active ones only, newest first (start time, then run id)."""

    def __init__(self, con: sqlite3.Connection) -> None:
        self.con = con

    @classmethod
    def open(cls, uri: str) -> SqliteRunsReader | None:
        path = sqlite_path(uri)
        if path is None or not path.is_file() or path.stat().st_size == 0:
            return None
        if any(os.environ.get(k) for k in ("MLFLOW_ENABLE_WORKSPACES", "MLFLOW_WORKSPACE_STORE_URI")):
            return None
        head = mlflow_head_revision()
        if head is None:
            return None
        try:
            _refuse_foreign_sqlite(path)
            _refuse_read_only(path)  # open_store refuses it: the same error, by that path
            con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        except (TrackingError, sqlite3.Error, OSError):
            return None
        try:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
            if row is None or row[0] != head:
                con.close()
                return None
        except sqlite3.Error:
            con.close()
            return None
        return cls(con)

    def __enter__(self) -> SqliteRunsReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.con.close()

    def experiment_id(self, name: str) -> str | None:
        """The id of the active experiment `name`; None when there is none (or it is deleted)."""
        rows = self.con.execute(
            "SELECT experiment_id, lifecycle_stage FROM experiments WHERE name = ?", (name,)
        ).fetchall()
        if len(rows) != 1 or rows[0][1] != "active":
            return None
        return str(rows[0][0])

    def count_runs(self, experiment_id: str, status: str) -> int:
        (n,) = self.con.execute(
            "SELECT count(*) FROM runs WHERE experiment_id = ? AND status = ? AND lifecycle_stage = 'active'",
            (int(experiment_id), status),
        ).fetchone()
        return int(n)

    def tags_of_runs(
        self, experiment_id: str, status: str, keys: Iterable[str]
    ) -> list[tuple[str, dict[str, str]]]:
        """(run id, its tags among `keys`) for the experiment's active runs of `status`, newest first:
        `search_runs([id], "attributes.status = '<status>'")` in one query."""
        keys = list(keys)
        marks = ", ".join("?" * len(keys))
        query = (
            "SELECT r.run_uuid, t.key, t.value FROM runs r LEFT JOIN tags t "
            f"ON t.run_uuid = r.run_uuid AND t.key IN ({marks}) "
            "WHERE r.experiment_id = ? AND r.status = ? AND r.lifecycle_stage = 'active' "
            "ORDER BY r.start_time IS NULL, r.start_time DESC, r.run_uuid"
        )
        out: dict[str, dict[str, str]] = {}
        for run_id, key, value in self.con.execute(query, (*keys, int(experiment_id), status)):
            tags = out.setdefault(run_id, {})
            if key is not None:
                tags[key] = value
        return list(out.items())

    def parent_runs(self, run_ids: list[str]) -> list[tuple[str, str | None, int | None]]:
        """(run id, name, start time) of the runs that are `mlflow.parentRunId` of these runs."""
        found: dict[str, tuple[str, str | None, int | None]] = {}
        for i in range(0, len(run_ids), 500):
            chunk = run_ids[i : i + 500]
            marks = ", ".join("?" * len(chunk))
            query = (
                "SELECT p.run_uuid, p.name, p.start_time FROM runs p WHERE p.run_uuid IN ("
                "SELECT t.value FROM tags t JOIN runs c ON c.run_uuid = t.run_uuid "
                f"WHERE t.key = 'mlflow.parentRunId' AND c.run_uuid IN ({marks}) "
                "AND c.lifecycle_stage = 'active')"
            )
            for run_id, name, start in self.con.execute(query, chunk):
                found[run_id] = (run_id, name, start)
        return list(found.values())
