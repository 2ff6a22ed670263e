"""Issue 26 (third reliability round): stores, secrets, clocks, locks, interrupts and a full disk.

Real sqlite stores, real processes, real signals and real files throughout: an old-schema store
is made with MLflow's own migration scripts stopped at an older revision, the write lock is a real
`BEGIN IMMEDIATE` of another connection, a full store is sqlite's own SQLITE_FULL
(`PRAGMA max_page_count`), and interrupts are signals sent to a real process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import all_runs, run_train, train_cmd, wait_for
from losslab.tracking import liveness
from losslab.tracking import recorder as tracking
from losslab.tracking.store import TrackingError, ensure_experiment

# ----------------------------------------------------------------------------- 9: a full disk mid-run


WIDE = {f"grad/layer_{i:02d}_norm": 0.5 for i in range(60)}  # enough rows to need new pages


def _steps(client, run_id: str, key: str = "train/loss") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_a_failed_flush_leaves_no_hole_at_the_start_of_the_curve(store, client):
    """sqlite's own SQLITE_FULL on the first flush, space back later: the curve starts at step 0."""
    exp = ensure_experiment(client, "full")
    rec = tracking.RunRecorder.start(client, exp, "full", {}, {}, heartbeat_seconds=0)
    assert rec._sql is not None
    con = rec._sql.con
    pages = con.execute("PRAGMA page_count").fetchone()[0]
    con.execute(f"PRAGMA max_page_count = {pages}")  # the store's disk is full from here on
    with pytest.raises(TrackingError, match="No space left"):
        for step in range(40):  # the first hand-over fails; its error surfaces at a later flush
            rec.log_metrics({"train/loss": 1.0 / (step + 1), **WIDE}, step=step)
        rec.flush(block=True)
    for late in range(step + 1, step + 20):  # the training thread's last steps before the job stops
        rec.log_metrics({"train/loss": 0.01}, step=late)
    con.execute("PRAGMA max_page_count = 1073741823")  # space freed (another job's files removed)
    rec.close("FAILED", error="No space left")
    steps = _steps(client, rec.run_id)
    assert steps == list(range(len(steps))), steps[:5]  # no gap: the first steps are there
    assert client.get_run(rec.run_id).info.status == "FAILED"


def test_a_flush_that_stays_full_keeps_no_later_points(store, client):
    exp = ensure_experiment(client, "full")
    rec = tracking.RunRecorder.start(client, exp, "full", {}, {}, heartbeat_seconds=0)
    for step in range(10):
        rec.log_metrics({"train/loss": 1.0}, step=step)
    rec.flush(block=True)  # steps 0-9 written
    con = rec._sql.con
    con.execute(f"PRAGMA max_page_count = {con.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(TrackingError):
        for step in range(10, 300):
            rec.log_metrics({"train/loss": 1.0, **WIDE}, step=step)
        rec.flush(block=True)
    rec.close("FAILED", error="full")  # still full: nothing after the failed batch is written
    assert _steps(client, rec.run_id) == list(range(10))


# ----------------------------------------------------------------------------- 7: interrupts in-process


def _metric_rows(db: Path) -> int:
    try:
        with contextlib.closing(sqlite3.connect(db, timeout=1)) as con:
            return con.execute("select count(*) from metrics").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "sweep"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGHUP, False), (signal.SIGINT, True)],
    ids=["sigint-run", "sigterm-run", "sighup-run", "sigint-basic-sweep"],
)
def test_an_interrupted_in_process_job_exits_128_plus_the_signal_and_names_its_run(
    signum, sweep, store, client, tmp_path: Path
):
    """A single run (or a basic-launcher sweep: the job runs in the driver) gets a signal to its process
    group mid-training: its run ends KILLED with points, one `interrupted` line, exit 128 + signum, and
    result.json names the run."""
    args = ["trainer.max_steps=100000", "tracking.flush_every=20", "tracking.log_curve_png=false"]
    if sweep:
        args += ["seed=0,1", "-m"]
    proc = subprocess.Popen(
        train_cmd(*args),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_for(lambda: _metric_rows(Path(store.removeprefix("sqlite:///"))) > 60, timeout=240, every=0.5)
        os.killpg(proc.pid, signum)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    expected = 130 if sweep else 128 + signum
    assert proc.returncode == expected, out[-3000:]
    assert "interrupted" in out and "Traceback" not in out, out[-3000:]
    runs = [r for r in all_runs(client) if r.data.tags.get("losslab.sweep") != "parent"]
    assert len(runs) == 1 and runs[0].info.status == "KILLED", [r.info.status for r in runs]
    assert _steps(client, runs[0].info.run_id)
    results = [json.loads(p.read_text()) for p in tmp_path.rglob("result.json")]
    assert [r["run_id"] for r in results] == [runs[0].info.run_id]
    assert results[0]["status"] == "KILLED"
    if not sweep:
        assert f"interrupted by {signal.Signals(signum).name}" in out
        assert runs[0].info.run_id in out


# ----------------------------------------------------------------------------- 6: the sqlite write lock


@pytest.mark.slow
def test_a_store_write_locked_by_another_process_is_one_error_paragraph(store, client, tmp_path: Path):
    """A real `BEGIN IMMEDIATE` held by this process while `train.py` tries to create its run."""
    from losslab.tracking.store import open_store

    open_store(store)  # the schema exists: only the run's creation needs the write lock
    db = Path(store.removeprefix("sqlite:///"))
    ensure_experiment(client, "losslab")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        proc = run_train(["trainer.max_steps=5"], cwd=tmp_path, timeout=240)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "Traceback" not in out and "sqlalchemy" not in out.lower(), out[-3000:]
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, out[-3000:]
    assert str(db) in errors[0] and "another process holds its write lock" in errors[0]
    assert [r.info.status for r in all_runs(client)] == []  # no run at all, none RUNNING


# ----------------------------------------------------------------------------- 2: secrets, any escaping

SECRET = "SECRETcarol42"


@pytest.mark.parametrize(
    "override",
    [
        rf"+extra.db_uri=postgresql\://carol\:{SECRET}@db.example/x",  # as the sweeper escapes it
        rf"+extra.db_uri=postgresql\\://carol\\:{SECRET}@db.example/x",  # that, inside YAML or JSON
        f"+extra.db_uri='postgresql://carol:{SECRET}@db.example/x'",
        f'+extra.db_uri="postgresql://carol:{SECRET}@db.example/x"',
        f"+extra.db_uri=postgresql%3A%2F%2Fcarol%3A{SECRET}%40db.example%2Fx",
        f"+extra.next=https://ex.org/login?to=mysql%3a%2f%2fcarol%3a{SECRET}%40db",
        rf"+extra.db_password={SECRET}\,more",
        f"+extra.api_token='{SECRET}'",
    ],
)
def test_secrets_are_masked_whatever_the_escaping(override):
    from losslab.logs import Redact
    from losslab.tracking import params

    for text in (
        params.redact_override(override),
        " ".join(params.redact_overrides([override, "seed=1"])),
        params.scrub_text(f"- {override}\n"),
        params.redact_text(override.partition("=")[2]) if "db_uri" in override or "next" in override else "",
    ):
        assert SECRET not in text, text
    import logging

    record = logging.LogRecord("losslab", logging.INFO, __file__, 1, "[1/2] %s", (override,), None)
    Redact().filter(record)
    assert SECRET not in record.getMessage()


@pytest.mark.slow
def test_no_password_in_anything_a_sweep_writes_with_an_unquoted_uri(store, client, tmp_path: Path):
    """`+extra.db_uri=postgresql://carol:PW@...` unquoted in a real sweep (the sweeper escapes it)."""
    args = [
        "seed=0,1",
        "trainer.max_steps=5",
        f"+extra.db_uri=postgresql://carol:{SECRET}@db.example/x",
        f"+extra.db_password={SECRET}",
        "-m",
    ]
    proc = run_train(args, cwd=tmp_path, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert SECRET not in out
    runs = all_runs(client)
    assert len(runs) == 3
    recorded = [json.dumps(r.data.params) + json.dumps(r.data.tags) for r in runs]
    for run in runs:
        art = Path(run.info.artifact_uri.removeprefix("file://"))
        recorded += [
            p.read_text(errors="replace") for p in art.rglob("*") if p.is_file() and p.suffix != ".png"
        ]
    files = [
        p
        for p in tmp_path.rglob("*")
        if p.is_file() and p.suffix in (".json", ".log", ".yaml", ".md", ".txt", ".html")
    ]
    assert any(p.name == "result.json" for p in files) and any(p.suffix == ".log" for p in files)
    recorded += [p.read_text(errors="replace") for p in files]
    for text in recorded:
        assert SECRET not in text, text[:400]
    child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    assert "carol" in child.data.tags["overrides"] and "***" in child.data.tags["overrides"]


# ----------------------------------------------------------------------------- 4: clock skew


def test_a_live_run_on_a_host_whose_clock_is_700s_behind_is_not_called_dead(store, client):
    """Another "host" beats with a clock 700 s behind this one; a dead run's heartbeat stays put."""
    exp = ensure_experiment(client, "skew")
    skewed = tracking.RunRecorder.start(client, exp, "skewed", {}, {}, heartbeat_seconds=0)
    dead = tracking.RunRecorder.start(client, exp, "dead", {}, {}, heartbeat_seconds=0)
    for rec in (skewed, dead):
        client.set_tag(rec.run_id, liveness.HOST_TAG, "a-host-700s-behind")
        client.set_tag(rec.run_id, liveness.HEARTBEAT_TAG, f"{time.time() - 700:.0f}")
    stop = threading.Event()

    def beat() -> None:  # the other host's heartbeat thread, its clock 700 s behind
        while not stop.wait(0.3):
            client.set_tag(skewed.run_id, liveness.HEARTBEAT_TAG, f"{time.time() - 700:.3f}")

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    try:
        looks = []
        for _ in range(3):  # three looks, 1.2 s apart, with a 1 s limit
            looks.append({r.info.run_name: why for r, why in liveness.reap(client, [exp], stale_after=1.0)})
            time.sleep(1.2)
        assert looks[0] == {}, looks  # one look proves nothing either way
        assert "skewed" not in looks[1] | looks[2]
        assert "dead" in looks[1] | looks[2]
        assert client.get_run(skewed.run_id).info.status == "RUNNING"
        assert client.get_run(dead.run_id).info.status == "KILLED"
    finally:
        stop.set()
        beater.join()
    skewed.close("FINISHED")
    dead.closed = True


def test_a_run_marked_killed_by_mistake_that_finishes_carries_no_killed_reason(store, client):
    exp = ensure_experiment(client, "skew")
    rec = tracking.RunRecorder.start(client, exp, "alive", {}, {}, heartbeat_seconds=0)
    client.set_tag(rec.run_id, liveness.REASON_TAG, "no heartbeat for 708s; marked KILLED by losslab.doctor")
    client.set_terminated(rec.run_id, status="KILLED")  # what an observer trusting its clock did
    rec.log_metrics({"train/loss": 1.0}, step=0)
    rec.close("FINISHED")
    run = client.get_run(rec.run_id)
    assert run.info.status == "FINISHED" and liveness.REASON_TAG not in run.data.tags


# ----------------------------------------------------------------------------- 1: old-schema stores

OLD_REVISION = "97727af70f4d"  # an MLflow 2.x schema (experiments' creation/update times)


def _old_store(path: Path) -> None:
    """A store as an older MLflow made it: MLflow's own initial tables and migration scripts, stopped
    at OLD_REVISION, with one experiment in it."""
    import sqlalchemy
    from alembic import command
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    InitialBase.metadata.create_all(engine)
    config = _get_alembic_config(str(engine.url))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, OLD_REVISION)
    engine.dispose()
    with contextlib.closing(sqlite3.connect(path)) as con:
        columns = "name, artifact_location, lifecycle_stage"
        con.execute(f"insert into experiments ({columns}) values ('old', '/tmp/a', 'active')")
        con.commit()


def _revision(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as con:
        return con.execute("select version_num from alembic_version").fetchone()[0]


def test_an_old_store_is_upgraded_only_after_a_copy_is_kept(tmp_path: Path):
    from mlflow.store.db.utils import _get_latest_schema_revision

    from losslab.tracking.store import open_store

    db = tmp_path / "mlflow.db"
    _old_store(db)
    client = open_store(f"sqlite:///{db}")
    backup = tmp_path / f"mlflow.db.pre-{OLD_REVISION}.bak"
    assert backup.is_file() and _revision(backup) == OLD_REVISION  # the copy is the old store
    assert _revision(db) == _get_latest_schema_revision()
    assert client.get_experiment_by_name("old") is not None
    assert not list(tmp_path.glob(".mlflow.db.migrating-*"))


def test_a_store_left_half_migrated_is_repaired_on_open(tmp_path: Path):
    """The leftover of a killed upgrade (`_alembic_tmp_experiments` beside `experiments`) opens."""
    from losslab.tracking.store import open_store

    db = tmp_path / "mlflow.db"
    _old_store(db)
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute("create table _alembic_tmp_experiments as select * from experiments")
        con.commit()
    client = open_store(f"sqlite:///{db}")
    assert client.get_experiment_by_name("old") is not None
    exp = ensure_experiment(client, "after")
    client.set_terminated(client.create_run(exp).info.run_id)


def test_a_half_migrated_store_that_cannot_be_repaired_names_the_way_out(tmp_path: Path):
    from losslab.tracking.store import open_store

    db = tmp_path / "mlflow.db"
    _old_store(db)
    with contextlib.closing(sqlite3.connect(db)) as con:  # the original was dropped, not yet renamed
        con.execute("create table _alembic_tmp_tags as select * from tags")
        con.execute("drop table tags")
        con.commit()
    before = db.read_bytes()
    with pytest.raises(TrackingError) as refused:
        open_store(f"sqlite:///{db}")
    text = str(refused.value)
    assert str(db) in text and ".bak" in text and "cp " in text
    assert db.read_bytes() == before  # changed nothing


@pytest.mark.slow
def test_kill_9_during_the_upgrade_of_an_old_store_leaves_it_usable(tmp_path: Path):
    """A real SIGKILL at several moments while `open_store` upgrades a real old-schema store."""
    from losslab.tracking.store import open_store

    code = "import sys; from losslab.tracking.store import open_store; open_store(sys.argv[1])"
    for i, delay in enumerate((0.2, 0.5, 1.0, 2.0)):
        db = tmp_path / f"s{i}" / "mlflow.db"
        db.parent.mkdir()
        _old_store(db)
        proc = subprocess.Popen([sys.executable, "-c", code, f"sqlite:///{db}"], stderr=subprocess.DEVNULL)
        mtime = db.stat().st_mtime_ns

        def touched(d: Path = db, m: int = mtime, p: subprocess.Popen = proc) -> bool:
            return bool(list(d.parent.glob("*.bak"))) or d.stat().st_mtime_ns != m or p.poll() is not None

        wait_for(touched, timeout=120, every=0.01)  # the upgrade has begun
        time.sleep(delay)
        proc.kill()
        proc.wait(timeout=60)
        client = open_store(f"sqlite:///{db}")  # opens (upgrading now if the kill came first)
        assert client.get_experiment_by_name("old") is not None
        exp = ensure_experiment(client, "after")
        client.set_terminated(client.create_run(exp).info.run_id)
