"""Scaling out: store-to-store migration, submitit sweeps, the PostgreSQL-backed team server.

The migration test is fast (two sqlite files). The others start real processes:
- a 4-job `submitit_local` sweep, the same submission path as SLURM, jobs as separate processes;
- scripts/pg_server.sh (private PostgreSQL + `mlflow server` on free loopback ports), a parallel
  joblib sweep and a migration over HTTP into it; both servers are stopped whatever happens.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, all_runs, run_train
from losslab import CONF_DIR, migrate

SCRIPT = ROOT / "scripts" / "pg_server.sh"


# ----------------------------------------------------------------------------- a small real store


def make_source(uri: str, tmp: Path) -> dict[str, str]:
    """A store shaped like a LossLab one: a sweep parent with two children, a failed run with a
    NaN in its curve and >1000 points (several log_batch chunks), artifacts, a second experiment,
    and a run still RUNNING. Returns the run ids by role."""
    from mlflow.entities import Metric, Param

    from losslab.tracking.store import ensure_experiment, open_store

    client = open_store(uri)
    exp = ensure_experiment(client, "losslab")
    other = ensure_experiment(client, "other")
    t0 = 1_700_000_000_000
    parent = client.create_run(exp, start_time=t0, run_name="hinge-sweep", tags={"losslab.sweep": "parent"})
    ids = {"parent": parent.info.run_id}
    art = tmp / "art"
    (art / "sub").mkdir(parents=True)
    (art / "config.yaml").write_text("loss: hinge\n")
    (art / "sub" / "curve.csv").write_text("step,loss\n0,1.0\n")
    for i, margin in enumerate((0.5, 1.0)):
        run = client.create_run(
            exp,
            start_time=t0 + 1000 * (i + 1),
            run_name=f"hinge-m{margin}",
            tags={
                "mlflow.parentRunId": ids["parent"],
                "outcome": "converged",
                "losslab.config_hash": f"h{i}",
            },
        )
        rid = run.info.run_id
        client.log_batch(
            rid,
            metrics=[Metric("train/loss", 1.0 / (s + 1), t0 + s, s) for s in range(30)],
            params=[Param("loss.margin", str(margin)), Param("seed", "0")],
        )
        client.log_artifacts(rid, str(art))
        client.set_terminated(rid, "FINISHED", end_time=t0 + 50_000 + i)
        ids[f"child{i}"] = rid
    client.set_terminated(ids["parent"], "FINISHED", end_time=t0 + 60_000)
    failed = client.create_run(exp, start_time=t0 + 5000, run_name="diverged", tags={"outcome": "diverged"})
    points = [Metric("train/loss", float(s), t0 + s, s) for s in range(1200)]
    points.append(Metric("train/loss", math.nan, t0 + 1200, 1200))
    points += [Metric("grad/global_norm", 2.0 * s, t0 + s, s) for s in range(5)]
    for i in range(0, len(points), 1000):
        client.log_batch(failed.info.run_id, metrics=points[i : i + 1000])
    client.set_terminated(failed.info.run_id, "FAILED", end_time=t0 + 70_000)
    ids["failed"] = failed.info.run_id
    lone = client.create_run(other, start_time=t0, run_name="lone", tags={"note": "other experiment"})
    client.log_param(lone.info.run_id, "optimizer.lr", "0.01")
    client.set_terminated(lone.info.run_id, "KILLED", end_time=t0 + 10)
    ids["lone"] = lone.info.run_id
    ids["running"] = client.create_run(exp, start_time=t0 + 9000, run_name="still-going").info.run_id
    return ids


def histories(client, run_id: str) -> dict[str, list[tuple[int, int, str]]]:
    run = client.get_run(run_id)
    return {
        k: sorted((m.step, m.timestamp, repr(m.value)) for m in client.get_metric_history(run_id, k))
        for k in run.data.metrics
    }


def artifact_files(client, run_id: str, dst: Path) -> dict[str, str]:
    local = Path(client.download_artifacts(run_id, "", str(dst)))
    return {str(p.relative_to(local)): p.read_text() for p in sorted(local.rglob("*")) if p.is_file()}


def check_copies(src, dst, ids: dict[str, str], tmp: Path) -> dict[str, str]:
    """Every non-RUNNING source run has exactly one faithful copy; return source id -> copy id."""
    copies: dict[str, str] = {}
    for name in ("losslab", "other"):
        for run in all_runs(dst, name):
            copies.setdefault(run.data.tags[migrate.FROM_TAG], run.info.run_id)
            assert run.data.tags[migrate.STATE_TAG] == "done"
    expected = {v for k, v in ids.items() if k != "running"}
    assert set(copies) == expected, "one copy per finished source run, none of the RUNNING one"
    assert len(all_runs(dst, "losslab")) + len(all_runs(dst, "other")) == len(expected)
    for sid, cid in copies.items():
        s, c = src.get_run(sid), dst.get_run(cid)
        assert c.info.run_name == s.info.run_name
        assert (c.info.status, c.info.start_time, c.info.end_time) == (
            s.info.status,
            s.info.start_time,
            s.info.end_time,
        )
        assert c.data.params == s.data.params
        own = {k: v for k, v in c.data.tags.items() if not k.startswith(("losslab.migrat", "mlflow."))}
        theirs = {k: v for k, v in s.data.tags.items() if not k.startswith("mlflow.")}
        assert own == theirs
        assert histories(dst, cid) == histories(src, sid)
        parent = s.data.tags.get("mlflow.parentRunId")
        assert c.data.tags.get("mlflow.parentRunId") == (copies[parent] if parent else None)
    assert len(dst.get_metric_history(copies[ids["failed"]], "train/loss")) == 1201
    for key in ("child0", "child1"):
        assert artifact_files(dst, copies[ids[key]], tmp / f"c-{key}") == artifact_files(
            src, ids[key], tmp / f"s-{key}"
        )
    return copies


def test_migrate_sqlite_to_sqlite_is_faithful_and_idempotent(tmp_path: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    src_uri, dst_uri = f"sqlite:///{tmp_path / 'alone.db'}", f"sqlite:///{tmp_path / 'team.db'}"
    ids = make_source(src_uri, tmp_path)
    src, dst = MlflowClient(src_uri), MlflowClient(dst_uri)

    reports = migrate.migrate(src_uri, dst_uri)
    assert (reports["losslab"].copied, reports["losslab"].running_left, reports["other"].copied) == (4, 1, 1)
    assert reports["losslab"].points == 2 * 30 + 1201 + 5
    copies = check_copies(src, dst, ids, tmp_path / "a")

    # again: nothing copied twice
    again = migrate.migrate(src_uri, dst_uri)
    assert (again["losslab"].copied, again["losslab"].skipped, again["other"].skipped) == (0, 4, 1)
    assert check_copies(src, dst, ids, tmp_path / "b") == copies

    # an interrupted copy (no `done` mark) is deleted and redone; the children follow the new parent
    dst.set_tag(copies[ids["parent"]], migrate.STATE_TAG, "copying")
    third = migrate.migrate(src_uri, dst_uri, ["losslab"])
    assert (third["losslab"].copied, third["losslab"].redone, third["losslab"].skipped) == (1, 1, 3)
    assert "other" not in third
    assert dst.get_run(copies[ids["parent"]]).info.lifecycle_stage == "deleted"
    check_copies(src, dst, ids, tmp_path / "c")

    # the command line: a missing source store is a one-line error, exit 2
    assert migrate.main(["--from", str(tmp_path / "none.db"), "--to", dst_uri]) == 2
    assert migrate.main(["--from", str(tmp_path / "alone.db"), "--to", dst_uri, "--experiment", "other"]) == 0


# ----------------------------------------------------------------------------- submitit


def test_cluster_launcher_configs_compose() -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        slurm = compose(
            "train", ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True
        ).hydra.launcher
        local = compose("train", ["hydra/launcher=slurm_local"], return_hydra_config=True).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher") and local._target_.endswith("LocalLauncher")
    assert (slurm.partition, slurm.timeout_min, slurm.cpus_per_task, slurm.max_num_timeout) == (
        "gpu",
        60,
        2,
        0,
    )
    assert local.gpus_per_node == 0


def test_slurm_sweep_submits_one_array_job(store: str, client, tmp_path: Path) -> None:
    """No SLURM here: stand-in `sbatch`/`srun` keep the script submitit hands to sbatch, then refuse."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/job.sh\necho no cluster >&2\nexit 1\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    sweep = tmp_path / "sweep"
    res = run_train(
        [
            "-m",
            "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.gpus_per_node=1",
            "loss.margin=0,1",
            "loss=hinge",
            "grid=none",  # the margins above only, not hinge's own grid (margins x 3 seeds)
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    assert res.returncode != 0 and "no cluster" in res.stderr
    script = (tmp_path / "job.sh").read_text()
    for option in (
        "--array=0-1%2",
        "--partition=gpu",
        "--gpus-per-node=1",
        "--cpus-per-task=2",
        "--time=60",
    ):
        assert f"#SBATCH {option}\n" in script
    assert f"{sweep}/.submitit/" in script and "--export" not in script  # sbatch's default: --export=ALL
    (parent,) = all_runs(client)  # the sweep's parent run, closed although no job ran
    assert parent.data.tags["losslab.sweep"] == "parent" and parent.info.status != "RUNNING"


@pytest.mark.slow
def test_submitit_local_sweep_lands_under_one_parent(store: str, client, tmp_path: Path) -> None:
    """The SLURM submission path (pickled jobs, separate processes) with the local executor."""
    sweep = tmp_path / "sweep"
    res = run_train(
        [
            "-m",
            "hydra/launcher=submitit_local",
            "loss=hinge",
            "grid=none",  # these margins only, not hinge\'s grid (x 3 seeds)
            "loss.margin=0,0.5,1,2",
            "trainer.max_steps=20",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    runs = all_runs(client)
    parents = [r for r in runs if r.data.tags.get("losslab.sweep") == "parent"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and len(runs) == 5
    assert sorted(r.data.params["loss.margin"] for r in children) == ["0", "0.5", "1", "2"]
    assert all(r.info.status == "FINISHED" and r.data.tags.get("outcome") for r in children)
    assert parent.info.status == "FINISHED" and parent.data.tags["jobs_done"] == "4"
    assert parent.data.tags["sweep_dir"] == str(sweep)
    # each job ran in its own submitit process and wrote result.json where the summary reads it
    assert len(list((sweep / ".submitit").glob("*/*_log.out"))) == 4
    results = [json.loads((sweep / str(i) / "result.json").read_text()) for i in range(4)]
    assert {r["run_id"] for r in results} == {r.info.run_id for r in children}
    assert res.stdout.count("FINISHED") >= 4 and "Sweep summary" in res.stdout


# ----------------------------------------------------------------------------- team server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def team_server() -> Iterator[str]:
    """PostgreSQL + mlflow server via scripts/pg_server.sh on free loopback ports; always stopped.

    The state folder is a world-traversable one under /tmp: as root, PostgreSQL runs as the
    `postgres` user, which cannot enter pytest's private tmp folders.
    """
    state = Path(tempfile.mkdtemp(prefix="losslab-server-"))
    state.chmod(0o755)
    env = {
        **os.environ,
        "SERVER_DIR": str(state),
        "SERVER_PORT": str(free_port()),
        "PG_PORT": str(free_port()),
        "VENV": str(ROOT / ".venv"),
        "DB_URI": "",
    }
    try:
        started = subprocess.run(
            ["bash", str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=600
        )
        assert started.returncode == 0, started.stderr[-3000:]
        yield f"http://127.0.0.1:{env['SERVER_PORT']}"
    finally:
        stopped = subprocess.run(
            ["bash", str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=120
        )
        status = subprocess.run(["bash", str(SCRIPT), "status"], env=env, capture_output=True, text=True)
        shutil.rmtree(state, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
    assert "mlflow server: stopped" in status.stdout and "PostgreSQL: stopped" in status.stdout


@pytest.mark.slow
def test_parallel_sweep_and_migration_into_postgres_server(
    team_server: str, tmp_path: Path, monkeypatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_server)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("LOSSLAB_PARENT_RUN_ID", raising=False)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    steps = 25
    started = time.monotonic()
    res = run_train(
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "loss=hinge",
            "grid=none",  # these margins only, not hinge\'s grid (x 3 seeds)
            "loss.margin=0,0.5,1,2",
            f"trainer.max_steps={steps}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    server = MlflowClient(team_server)
    runs = all_runs(server)
    parent = next(r for r in runs if r.data.tags.get("losslab.sweep") == "parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and parent.info.status == "FINISHED"
    counts = {}
    for run in children:
        hist = server.get_metric_history(run.info.run_id, "train/loss")
        counts[run.info.run_name] = len(hist)
        assert sorted(m.step for m in hist) == list(range(steps)), "exactly one point per step"
        assert run.data.tags.get("outcome") and run.info.status == "FINISHED"
        assert {a.path for a in server.list_artifacts(run.info.run_id)} >= {"config.yaml"}
    print(f"train/loss points per run: {counts} (sweep {time.monotonic() - started:.0f}s)")

    # a user who worked alone joins: migrate a sqlite store into the PostgreSQL-backed server
    src_uri = f"sqlite:///{tmp_path / 'alone.db'}"
    ids = make_source(src_uri, tmp_path)
    reports = migrate.migrate(src_uri, team_server)
    assert reports["losslab"].copied == 4 and reports["other"].copied == 1
    before = {r.info.run_id for r in runs}
    copies = {
        r.data.tags[migrate.FROM_TAG]: r.info.run_id for r in all_runs(server) if r.info.run_id not in before
    }
    assert len(copies) == 4
    src = MlflowClient(src_uri)
    for sid, cid in copies.items():
        assert histories(server, cid) == histories(src, sid)
        parent_id = src.get_run(sid).data.tags.get("mlflow.parentRunId")
        assert server.get_run(cid).data.tags.get("mlflow.parentRunId") == (
            copies[parent_id] if parent_id else None
        )
    assert artifact_files(server, copies[ids["child0"]], tmp_path / "c") == artifact_files(
        src, ids["child0"], tmp_path / "s"
    )
    again = migrate.migrate(src_uri, team_server)
    assert (again["losslab"].copied, again["losslab"].skipped, again["other"].skipped) == (0, 4, 1)
