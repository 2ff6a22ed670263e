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
from pathlib import Path

import pytest

from conftest import all_runs, run_train, train_cmd, wait_for
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
