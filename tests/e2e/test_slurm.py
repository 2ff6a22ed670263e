"""Sweeps on a real one-node SLURM cluster (scripts/slurm_local.sh: munged, slurmctld, slurmd),
marked slow; and, in the default suite, how job states are read from squeue.

The cluster is started for this module unless one is up already (`make slurm-local`), and
stopped after if this module started it. Tests skip only when SLURM cannot be installed here
(not root, no apt-get, no registry): the script says so with exit status 3.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT, all_runs, free_port, run_train, train_cmd, wait_for

SCRIPT = ROOT / "scripts" / "slurm_local.sh"
PG_SCRIPT = ROOT / "scripts" / "pg_server.sh"
#: one CPU and 1 GB a job, so two jobs share this 2-core node
SMALL = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


def script(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[dict[str, str]]:
    """Environment for sweeps on the local cluster (SLURM_CONF), starting it if needed."""
    status = script("status").stdout
    was_up = "slurmctld: running" in status and "slurmd: running" in status
    if not was_up:
        started = script("start")
        if started.returncode == 3:
            pytest.skip(f"SLURM cannot be installed here: {started.stderr.strip()[-500:]}")
        assert started.returncode == 0, started.stderr[-3000:]
    conf = re.search(r"SLURM_CONF=(\S+)", script("status").stdout)
    assert conf is not None
    try:
        yield {"SLURM_CONF": conf.group(1)}
    finally:
        if not was_up:
            stopped = script("stop", timeout=120)
            after = script("status").stdout
            assert stopped.returncode == 0, stopped.stderr
            assert all(f"{d}: stopped" in after for d in ("munged", "slurmctld", "slurmd")), after


def test_queue_watcher_reads_squeue_and_ends_jobs_that_left_it() -> None:
    """Without accounting, states come from `squeue --array --states=all -o %i|%T|%N` (this layout)."""
    from losslab.sweep.slurm import QueueWatcher, run_status

    watcher = QueueWatcher()
    watcher.use_sacct = False
    for job_id in ("7_0", "7_1", "7_2"):
        watcher.register_job(job_id)
    assert watcher._make_command()[:5] == ["squeue", "--array", "--states=all", "-o", "%i|%T|%N"]
    first = watcher.read_info("JOBID|STATE|NODELIST\n7_0|RUNNING|vm\n7_1|CANCELLED|vm\n7_[2]|PENDING|\n")
    states = {k: v["State"] for k, v in first.items()}
    assert states == {"7_0": "RUNNING", "7_1": "CANCELLED", "7_2": "PENDING"}
    # later, 7_0 has left squeue (MinJobAge passed): it is over; 7_2 still shows
    later = watcher.read_info("JOBID|STATE|NODELIST\n7_2|RUNNING|vm\n")
    assert later["7_0"]["State"] == "ENDED" and later["7_2"]["State"] == "RUNNING"
    watcher._info_dict.update(later)
    assert watcher.is_done("7_0", mode="cache") and not watcher.is_done("7_2", mode="cache")
    assert [run_status(s) for s in ("CANCELLED by 0", "FAILED", "NODE_FAIL", "ENDED")] == [
        "KILLED",
        "FAILED",
        "FAILED",
        "FAILED",
    ]


@pytest.fixture
def slurm(slurm_cluster: dict[str, str]) -> dict[str, str]:
    """The cluster, its node idle: `start` again is quick, and resumes a node a test left drained."""
    again = script("start", timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    return slurm_cluster


def children_of(client, parent_id: str) -> list:
    return [r for r in all_runs(client) if r.data.tags.get("mlflow.parentRunId") == parent_id]


def only_parent(client):
    (parent,) = [r for r in all_runs(client) if r.data.tags.get("losslab.sweep") == "parent"]
    return parent


def curve_steps(client, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "train/loss"))


def assert_whole_curve(client, run_id: str, steps: int | None = None) -> None:
    """One train/loss point per step from the first: nothing dropped, nothing twice."""
    got = curve_steps(client, run_id)
    assert got, f"run {run_id} has no train/loss points"
    assert got == list(range(got[0], got[0] + len(got))), f"gaps or duplicates in {run_id}'s curve"
    if steps is not None:
        assert len(got) == steps


@pytest.mark.slow
def test_sweep_finishes_under_one_parent_with_summary_report_and_compare(
    slurm: dict[str, str], store: str, client, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    res = run_train(
        ["-m", *SMALL, "seed=0,1,2", "trainer.max_steps=50", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
        env=slurm,
        timeout=240,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    parent = only_parent(client)
    children = children_of(client, parent.info.run_id)
    assert sorted(r.data.params["seed"] for r in children) == ["0", "1", "2"]
    for run in children:
        assert run.info.status == "FINISHED" and run.data.tags.get("outcome"), run.data.tags
        assert_whole_curve(client, run.info.run_id, steps=50)
    assert parent.info.status == "FINISHED" and parent.data.tags["jobs_done"] == "3"
    # each job ran as a SLURM array task, logged in .submitit/, result.json where the summary reads it
    assert re.search(r"SLURM array job \d+: 3 jobs", out)
    assert len(list((sweep / ".submitit").glob("*_*/*_log.out"))) == 3
    results = [json.loads((sweep / str(i) / "result.json").read_text()) for i in range(3)]
    assert {r["run_id"] for r in results} == {r.info.run_id for r in children}
    assert "Sweep summary" in res.stdout and res.stdout.count("FINISHED") >= 3
    # no accounting database: states come from squeue, without a warning per poll
    assert "Bypassing sacct error" not in out and out.count("job states come from squeue") == 1
    html = re.search(r"report: (\S+index\.html)", res.stdout)
    assert html and (tmp_path / html.group(1)).is_file()
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "losslab.compare",
            "--sweep",
            parent.info.run_id,
            "--out",
            str(tmp_path / "r2"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert list((tmp_path / "r2").glob("*/index.html"))


@pytest.fixture
def team_server() -> Iterator[str]:
    """PostgreSQL + mlflow server (`make server`'s script) on free loopback ports; always stopped."""
    state = Path(tempfile.mkdtemp(prefix="losslab-server-"))
    state.chmod(0o755)  # as root, PostgreSQL runs as `postgres`, which must enter this folder
    env = {
        **os.environ,
        "SERVER_DIR": str(state),
        "SERVER_PORT": str(free_port()),
        "PG_PORT": str(free_port()),
        "VENV": str(Path(sys.executable).parent.parent),
        "DB_URI": "",
    }
    try:
        started = subprocess.run(
            ["bash", str(PG_SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=600
        )
        assert started.returncode == 0, started.stderr[-3000:]
        yield f"http://127.0.0.1:{env['SERVER_PORT']}"
    finally:
        subprocess.run(["bash", str(PG_SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.slow
def test_sweep_into_the_postgres_team_server(
    slurm: dict[str, str], team_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", team_server)
    monkeypatch.delenv("LOSSLAB_PARENT_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    res = run_train(
        [
            "-m",
            *SMALL,
            "loss=hinge",
            "grid=none",  # these margins only, not hinge\'s grid (x 3 seeds)
            "loss.margin=0,1",
            "trainer.max_steps=40",
            f"hydra.sweep.dir={tmp_path / 's'}",
        ],
        cwd=tmp_path,
        env=slurm,
        timeout=240,
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    server = MlflowClient(team_server)
    parent = only_parent(server)
    children = children_of(server, parent.info.run_id)
    assert sorted(r.data.params["loss.margin"] for r in children) == ["0", "1"]
    for run in children:
        assert run.info.status == "FINISHED"
        assert_whole_curve(server, run.info.run_id, steps=40)
        assert "config.yaml" in {a.path for a in server.list_artifacts(run.info.run_id)}
    assert parent.info.status == "FINISHED"


@pytest.mark.slow
def test_ddp_job_starts_its_ranks_inside_one_slurm_task(
    slurm: dict[str, str], store: str, client, tmp_path: Path
) -> None:
    """Lightning refused devices=2 in a 1-task job, and would have re-run submitit's entry point."""
    args = ["-m", *SMALL, "hydra.launcher.cpus_per_task=2", "trainer.devices=2", "trainer.strategy=ddp"]
    res = run_train(
        [*args, "trainer.max_steps=20", "seed=0", f"hydra.sweep.dir={tmp_path}/s"],
        cwd=tmp_path,
        env=slurm,
        timeout=240,
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    parent = only_parent(client)
    (run,) = children_of(client, parent.info.run_id)  # rank 1 records nothing
    assert run.info.status == "FINISHED" and run.data.params["trainer.devices"] == "2"
    assert curve_steps(client, run.info.run_id) == list(range(20))
    assert "grad/global_norm" in run.data.metrics
    logs = "".join(p.read_text() for p in (tmp_path / "s" / ".submitit").glob("*/*_log.err"))
    assert "srun` command is available" not in logs  # Lightning's hint, for every rank, filtered


@pytest.mark.slow
def test_time_limit_ends_the_run_killed_with_its_curve(
    slurm: dict[str, str], store: str, client, tmp_path: Path
) -> None:
    """--time=2 min, SIGUSR2 30 s before it: the run stops, KILLED, curve kept, not requeued.

    SLURM sends the signal up to 60 s early (its event resolution), so here between 30 and 90 s
    after the start: after the run exists, even on a loaded machine."""
    sweep = tmp_path / "sweep"
    res = run_train(
        [
            "-m",
            *SMALL,
            "hydra.launcher.timeout_min=2",
            "hydra.launcher.signal_delay_s=30",
            "trainer.max_steps=10000000",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env=slurm,
        timeout=240,
    )
    assert res.returncode == 1, (res.stdout + res.stderr)[-4000:]
    parent = only_parent(client)
    (run,) = children_of(client, parent.info.run_id)  # one run: the job was not requeued
    assert run.info.status == "KILLED"
    assert_whole_curve(client, run.info.run_id)
    result = json.loads((sweep / "0" / "result.json").read_text())
    assert result["status"] == "KILLED" and "time limit" in result["error"]
    assert re.search(r"^0\s+KILLED\s.*SLURM sent SIGUSR2", res.stdout, re.M), res.stdout[-3000:]
    assert "1 of 1 jobs failed" in res.stderr and parent.info.status == "FAILED"


def _steps_override(run) -> str | None:
    found = [o for o in run.data.tags.get("overrides", "").split() if o.startswith("trainer.max_steps=")]
    return found[0] if found else None


def _running_with_points(client, steps: str, min_points: int = 20) -> str | None:
    """The run id of the sweep child with this max_steps, once it is RUNNING with a few points."""
    for run in all_runs(client):
        running = _steps_override(run) == steps and run.info.status == "RUNNING"
        if running and len(client.get_metric_history(run.info.run_id, "train/loss")) >= min_points:
            return run.info.run_id
    return None


@pytest.mark.slow
def test_scancel_and_a_killed_task_end_their_runs_and_the_sweep_goes_on(
    slurm: dict[str, str], store: str, client, tmp_path: Path
) -> None:
    """scancel of task 1 (SIGTERM): KILLED. kill -9 of task 2's python (nothing written, as when a
    node dies): the driver sees the job end through squeue and closes its run FAILED. Task 0
    finishes; the sweep exits 1."""
    sweep = tmp_path / "sweep"
    steps = ["trainer.max_steps=40", "trainer.max_steps=10000000", "trainer.max_steps=10000001"]
    env = {**os.environ, **slurm, "PYTHONUNBUFFERED": "1"}
    args = ["-m", *SMALL, "tracking.flush_every=8", "trainer.max_steps=40,10000000,10000001"]
    driver = subprocess.Popen(
        train_cmd(*args, f"hydra.sweep.dir={sweep}"),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        job1 = wait_for(lambda: _running_with_points(client, steps[1]), timeout=120)
        array = _array_id(env, sweep)
        subprocess.run(["scancel", f"{array}_1"], env=env, check=True, timeout=30)
        job2 = wait_for(lambda: _running_with_points(client, steps[2]), timeout=120)
        _kill_training_process(f"{array}_2", env)
        out, err = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
            with contextlib.suppress(AssertionError):
                subprocess.run(["scancel", _array_id(env, sweep)], env=env, timeout=30)
    assert driver.returncode == 1, (out + err)[-4000:]
    status = {_steps_override(r): r.info.status for r in all_runs(client)}
    assert status[steps[0]] == "FINISHED"
    assert status[steps[1]] == "KILLED" and status[steps[2]] == "FAILED", (out + err)[-4000:]
    for run_id in (job1, job2):
        assert_whole_curve(client, run_id)
    rows = {i: json.loads((sweep / str(i) / "result.json").read_text()) for i in range(3)}
    assert [rows[i]["status"] for i in range(3)] == ["FINISHED", "KILLED", "FAILED"]
    assert "scancel" in rows[1]["error"]
    assert rows[2]["run_id"] == job2 and "ended FAILED without a result" in rows[2]["error"]
    assert "2 of 3 jobs failed" in err
    parent = only_parent(client)
    assert parent.info.status == "FAILED" and parent.data.tags["jobs_failed"] == "2"


def _array_id(env: dict[str, str], sweep: Path) -> str:
    """The id of this sweep's array job: the one whose submission script is in its .submitit/."""
    listed = subprocess.run(
        ["squeue", "-h", "-o", "%F|%o"], env=env, capture_output=True, text=True, timeout=30
    )
    ids = {line.split("|")[0] for line in listed.stdout.splitlines() if str(sweep) in line}
    assert len(ids) == 1, listed.stdout + listed.stderr
    return ids.pop()


def _kill_training_process(task: str, env: dict[str, str]) -> None:
    """SIGKILL the python of one array task, found through `scontrol listpids` (proctrack/linuxproc)."""
    job = subprocess.run(["squeue", "-h", "-o", "%A", "-j", task], env=env, capture_output=True, text=True)
    listed = subprocess.run(
        ["scontrol", "listpids", job.stdout.strip()], env=env, capture_output=True, text=True, timeout=30
    )
    killed = 0
    for line in listed.stdout.splitlines()[1:]:
        pid, _, step = line.split()[:3]
        if step != "0":  # the batch script and srun: leave them, as a crash would
            continue
        with contextlib.suppress(OSError):
            if b"submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
    assert killed == 1, listed.stdout + listed.stderr
