"""Faults and concurrency: NaN losses, interrupts during sweeps, racing writers, a server that goes away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import all_runs, compose, free_port, run_train, stop_group, train_cmd, wait_for
from losslab.tracking.params import flatten
from losslab.tracking.store import TrackingError, check_store_reachable
from losslab.train import job as task


def test_nan_loss_is_a_diverged_finished_run_with_a_finite_objective(store, client):
    result = task.train(compose(["loss._target_=tests.helpers.custom_losses.FailAt", "+loss.nan_at=6"]))
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["outcome"] == "diverged"
    assert int(run.data.tags["first_bad_step"]) == 6  # step 0 is call 1 (the dry-run check calls a copy)
    assert run.data.metrics["final/steps"] < 20  # stopped early
    assert result.objective == task.PENALTY and result.objective < float("inf")


def test_ctrl_c_during_a_sweep_closes_the_job_and_the_parent(store, client, tmp_path: Path, popen_cleanup):
    proc = subprocess.Popen(
        train_cmd("seed=0,1", "trainer.max_steps=1000000", "tracking.flush_every=50", "-m"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    popen_cleanup.append(proc)

    def child_with_points():
        runs = [r for r in all_runs(client) if "mlflow.parentRunId" in r.data.tags]
        return runs and len(client.get_metric_history(runs[0].info.run_id, "train/loss")) >= 100

    wait_for(child_with_points, timeout=120)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    runs = all_runs(client)
    statuses = {r.info.run_name: r.info.status for r in runs}
    assert "RUNNING" not in statuses.values(), statuses
    parent = next(r for r in runs if r.data.tags.get("losslab.sweep") == "parent")
    assert parent.info.status == "KILLED"
    child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    assert child.info.status == "KILLED"
    assert len(client.get_metric_history(child.info.run_id, "train/loss")) >= 100


@pytest.mark.slow
def test_eight_processes_opening_a_brand_new_store_at_once(tmp_path: Path):
    """MLflow alone crashes most of them ('duplicate column name'); the store lock serialises creation."""
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    code = (
        "import sys; from losslab.tracking.store import ensure_experiment, open_store\n"
        "c = open_store(sys.argv[1]); e = ensure_experiment(c, 'race')\n"
        "r = c.create_run(e); c.set_terminated(r.info.run_id)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, uri], stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, errors
    from mlflow.tracking import MlflowClient

    runs = all_runs(MlflowClient(uri), "race")
    assert len(runs) == 8 and all(r.info.status == "FINISHED" for r in runs)


def test_secrets_never_reach_params():
    flat = flatten(
        {
            "tracking": {"uri": "postgresql://alice:hunter2@db.example:5432/mlflow"},
            "extra": {"api_token": "abc123", "password": "pw", "note": "http://host/x"},
        }
    )
    assert flat["tracking.uri"] == "postgresql://alice:***@db.example:5432/mlflow"
    assert flat["extra.api_token"] == "***" and flat["extra.password"] == "***"
    assert flat["extra.note"] == "http://host/x"
    assert "hunter2" not in str(flat)


def test_a_run_records_no_environment_and_no_password(store, client, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    result = task.train(compose(["trainer.max_steps=3", "+extra.db_password=hunter2"]))
    run = client.get_run(result.run_id)
    recorded = str(run.data.params) + str(run.data.tags)
    assert "very-secret-value" not in recorded and "hunter2" not in recorded
    assert run.data.params["extra.db_password"] == "***"


# ----------------------------------------------------------------------------- real mlflow server


def _start_server(db: Path, port: int, artifacts: Path) -> subprocess.Popen:
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--backend-store-uri",
            f"sqlite:///{db}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--artifacts-destination",
            str(artifacts),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        start_new_session=True,
    )

    def healthy() -> bool:
        try:
            check_store_reachable(f"http://127.0.0.1:{port}", timeout=1)
            return True
        except TrackingError:
            return False

    wait_for(healthy, timeout=120, every=0.5)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        stop_group(proc)


@pytest.fixture
def server(tmp_path: Path):
    """A real `mlflow server` on a free loopback port; (uri, restart, stop) for outage tests."""
    port, db, arts = free_port(), tmp_path / "server.db", tmp_path / "artifacts"
    procs = [_start_server(db, port, arts)]

    def stop() -> None:
        _stop(procs[-1])

    def restart() -> None:
        procs.append(_start_server(db, port, arts))

    yield f"http://127.0.0.1:{port}", restart, stop
    for p in procs:
        _stop(p)


@pytest.mark.slow
def test_eight_parallel_jobs_into_a_real_server_keep_every_point(server, tmp_path: Path):
    uri, _, _ = server
    args = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=8", "seed=range(8)", "trainer.max_steps=60", "-m"]
    proc = run_train(args, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri}, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    children = [r for r in all_runs(client) if "mlflow.parentRunId" in r.data.tags]
    counts = {r.info.run_name: len(client.get_metric_history(r.info.run_id, "train/loss")) for r in children}
    print("points per run:", counts)
    assert len(children) == 8 and all(r.info.status == "FINISHED" for r in children)
    assert set(counts.values()) == {60}


def _train_with_points(uri: str, cwd: Path, procs: list, n_points: int, *args: str):
    """Start `train.py ARGS` against `uri`; return (process, client, run) once n_points are stored."""
    from mlflow.tracking import MlflowClient

    proc = subprocess.Popen(
        train_cmd("tracking.flush_every=20", *args),
        cwd=cwd,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    procs.append(proc)
    client = MlflowClient(uri)
    run = wait_for(lambda: (all_runs(client) or [None])[0], timeout=120)
    wait_for(lambda: len(client.get_metric_history(run.info.run_id, "train/loss")) >= n_points, timeout=120)
    return proc, client, run


@pytest.mark.slow
def test_the_server_going_away_mid_run_loses_nothing(server, tmp_path: Path, popen_cleanup):
    uri, restart, stop = server
    steps = 3000
    args = (f"trainer.max_steps={steps}", "tracking.retry_seconds=120", "model.hidden=[256,256]")
    proc, client, run = _train_with_points(uri, tmp_path, popen_cleanup, 40, *args)
    stop()
    time.sleep(4)
    restart()
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert "tracking store unreachable" in out and "tracking store back" in out
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    points = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert points == list(range(steps))  # nothing dropped, nothing doubled


@pytest.mark.slow
def test_a_server_that_stays_away_fails_the_run_clearly(server, tmp_path: Path, popen_cleanup):
    uri, _, stop = server
    args = ("trainer.max_steps=100000", "tracking.retry_seconds=3")
    proc, _, _ = _train_with_points(uri, tmp_path, popen_cleanup, 20, *args)
    stop()
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "unreachable for over 3s" in out and "points could not be written" in out
    assert "Traceback" not in out


@pytest.mark.slow
def test_a_server_back_with_another_backend_is_one_error_paragraph(server, tmp_path: Path, popen_cleanup):
    """Issue 26, item 3: the server restarted on a fresh, empty backend store (a container without its
    volume) no longer knows the run: one `Error:` paragraph naming the server, the run and the points
    not written, exit 2, no traceback."""
    from mlflow.tracking import MlflowClient

    uri, _, stop = server
    port = int(uri.rsplit(":", 1)[1])
    proc = subprocess.Popen(
        train_cmd(
            "trainer.max_steps=3000",
            "tracking.flush_every=20",
            "tracking.retry_seconds=120",
            "model.hidden=[256,256]",
        ),
        cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    popen_cleanup.append(proc)
    client = MlflowClient(uri)
    run = wait_for(lambda: (all_runs(client) or [None])[0], timeout=120)
    wait_for(lambda: len(client.get_metric_history(run.info.run_id, "train/loss")) >= 40, timeout=120)
    stop()
    fresh = _start_server(tmp_path / "fresh.db", port, tmp_path / "fresh-artifacts")
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        _stop(fresh)
    assert proc.returncode == 2, out[-3000:] + err[-3000:]
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    errors = [line for line in err.splitlines() if "Error:" in line]
    assert len(errors) == 1, err[-3000:]
    said = errors[0]
    assert f"no longer knows run {run.info.run_id}" in said and f"127.0.0.1:{port}" in said
    assert "another backend store" in said and "points" in said and "not written" in said
    assert "cannot be closed" in said
