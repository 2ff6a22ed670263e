"""`hydra/launcher=stacked` from the command line: a real multirun in a subprocess, a temp sqlite store."""

from __future__ import annotations

import math
import os
import signal
import subprocess

import pytest

from conftest import ROOT, all_runs, compose, run_train, train_cmd, wait_for
from losslab.train import job as task

ARGS = ["seed=0,1", "trainer.max_steps=30", "model.hidden=[16,16]", "data.n_samples=400"]
QUIET = ["tracking.report_on_sweep_end=false"]


def test_stacked_multirun_gives_each_seed_the_run_it_would_get_alone(tmp_path, store, client):
    proc = run_train(["hydra/launcher=stacked", *ARGS, *QUIET, "-m"], cwd=tmp_path, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "seeds stacked: 1 groups" in out
    runs = all_runs(client)
    parents = [r for r in runs if r.data.tags.get("losslab.sweep") == "parent"]
    children = sorted((r for r in runs if r not in parents), key=lambda r: r.data.params["seed"])
    assert len(parents) == 1 and len(children) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert all(r.info.status == "FINISHED" and r.data.tags["stacked_replicas"] == "2" for r in children)
    assert all(r.data.tags["outcome"] and r.data.metrics["final/steps"] == 30 for r in children)
    # the solo path sees the stacked run as this config's run: same config hash and source fingerprints
    again = task.train(compose(["seed=0", *ARGS[1:]]))
    assert again.status == "SKIPPED" and again.run_id == children[0].info.run_id
    # and trained alone, seed 0 records the same curves, statistics and task metrics
    alone = client.get_run(task.train(compose(["seed=0", *ARGS[1:], "rerun=true"])).run_id)
    stacked = children[0]
    assert set(alone.data.metrics) == set(stacked.data.metrics)
    for key in set(alone.data.metrics) - {"final/wall_seconds", "final/steps_per_second"}:
        a = [(m.step, m.value) for m in client.get_metric_history(alone.info.run_id, key)]
        b = [(m.step, m.value) for m in client.get_metric_history(stacked.info.run_id, key)]
        assert [s for s, _ in a] == [s for s, _ in b], key
        for (_, x), (_, y) in zip(sorted(a), sorted(b), strict=True):
            assert math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-6) or (math.isnan(x) and math.isnan(y)), key
    assert alone.data.tags["outcome"] == stacked.data.tags["outcome"]
    for job in (0, 1):  # every job keeps its folder: result.json, train.log, .hydra/
        folder = next((tmp_path / "multirun").glob(f"*/*/{job}"))
        assert (folder / "result.json").is_file() and "done:" in (folder / "train.log").read_text()


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["hydra.launcher.max_replicas=0"], "hydra.launcher.max_replicas=0 is not valid"),
        (
            ["loss._target_=helpers.stacked_losses.ValueBranchMSE"],
            "loss ValueBranchMSE cannot be trained stacked",
        ),
    ],
)
def test_bad_stacked_input_is_one_error_paragraph_exit_2_and_no_running_run(
    tmp_path, store, client, extra, said
):
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    proc = run_train(
        ["hydra/launcher=stacked", "seed=0,1", "trainer.max_steps=5", *extra, "-m"], tmp_path, env
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    errors = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and said in errors[0], out
    assert "Traceback" not in out
    runs = all_runs(client)
    assert all(r.info.status != "RUNNING" for r in runs)
    assert not [r for r in runs if r.data.tags.get("losslab.sweep") != "parent"]  # no job's run


@pytest.mark.slow
def test_ctrl_c_closes_every_replica_killed_with_its_points(tmp_path, store, client):
    cmd = train_cmd(
        "hydra/launcher=stacked", "seed=0,1,2", "trainer.max_steps=200000", "tracking.flush_every=16", "-m"
    )
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def training() -> bool:
            runs = [r for r in all_runs(client) if r.data.tags.get("losslab.sweep") != "parent"]
            return len(runs) == 3 and all(
                client.get_metric_history(r.info.run_id, "train/loss") for r in runs
            )

        wait_for(training, timeout=240)
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out
    children = [r for r in all_runs(client) if r.data.tags.get("losslab.sweep") != "parent"]
    assert len(children) == 3 and all(r.info.status == "KILLED" for r in children), out
    for run in children:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert steps == list(range(len(steps))) and len(steps) > 16  # every point up to the stop
    assert all(r.info.status != "RUNNING" for r in all_runs(client))
