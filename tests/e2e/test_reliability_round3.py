"""Issue 26 (third reliability round): stores, secrets, clocks, locks, interrupts and a full disk.

Real sqlite stores, real processes, real signals and real files throughout: an old-schema store
is made with MLflow's own migration scripts stopped at an older revision, the write lock is a real
`BEGIN IMMEDIATE` of another connection, a full store is sqlite's own SQLITE_FULL
(`PRAGMA max_page_count`), and interrupts are signals sent to a real process group.
"""

from __future__ import annotations

import pytest

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
