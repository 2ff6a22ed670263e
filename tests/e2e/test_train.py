"""End to end: one run into a real sqlite store, the CLI, a real Hydra multirun, Ctrl-C."""

from __future__ import annotations

import math
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, all_runs, compose, run_train, train_cmd, wait_for
from losslab.train import job as task


def _history(client, run_id: str, key: str) -> list:
    return client.get_metric_history(run_id, key)


def test_one_run_records_curve_params_tags_and_artifacts(store, client):
    result = task.train(compose(["loss=hinge", "trainer.max_steps=40", "loss.margin=0.5"]))
    assert result.status == "FINISHED"
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "hinge-m0.5-adam-lr0.001-s0"
    # the full curve: one train/loss point per optimizer step, step = global step
    steps = [m.step for m in _history(client, result.run_id, "train/loss")]
    assert steps == list(range(40))
    assert _history(client, result.run_id, "val/loss")
    params = run.data.params
    assert params["loss.margin"] == "0.5"
    assert params["optimizer.lr"] == "0.001"
    assert params["loss._target_"] == "losslab.losses.Hinge"
    assert params["data.name"] == "binary"
    tags = run.data.tags
    assert tags["loss"] == "hinge"
    assert tags["outcome"] in {"converged", "diverged", "oscillating", "plateaued", "still_improving"}
    assert len(tags["losslab.config_hash"]) == 16
    for key in ("final/val_loss", "best/val_loss", "final/train_loss", "final/steps"):
        assert key in run.data.metrics
    assert run.data.metrics["final/steps"] == 40
    assert run.data.metrics["best/val_loss"] <= run.data.metrics["final/val_loss"]
    last_val = client.get_metric_history(result.run_id, "val/loss")[-1].value
    assert last_val == pytest.approx(run.data.metrics["final/val_loss"])
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "loss_curve.png"} <= artifacts


def test_same_config_and_seed_give_the_same_curve(store, client):
    overrides = ["loss=mse", "trainer.max_steps=25", "rerun=true"]
    a = task.train(compose(overrides))
    b = task.train(compose(overrides))
    curve_a = [m.value for m in _history(client, a.run_id, "train/loss")]
    curve_b = [m.value for m in _history(client, b.run_id, "train/loss")]
    assert len(curve_a) == 25 and curve_a == curve_b
    c = task.train(compose([*overrides, "seed=1"]))
    assert [m.value for m in _history(client, c.run_id, "train/loss")] != curve_a


def test_minibatch_weights_from_data_reach_weighted_mse(store, client):
    result = task.train(compose(["loss=weighted_mse", "trainer.max_steps=20"]))
    run = client.get_run(result.run_id)
    assert run.data.params["data.weights"] == "noise_inverse"
    assert math.isfinite(run.data.metrics["final/val_loss"])


def test_a_finished_config_is_skipped_unless_rerun(store, client):
    first = task.train(compose(["loss=mse", "trainer.max_steps=10"]))
    again = task.train(compose(["loss=mse", "trainer.max_steps=10"]))
    assert again.status == "SKIPPED" and again.run_id == first.run_id
    assert again.objective == first.objective and again.metric == "rmse"  # the sweeper sees the same value
    forced = task.train(compose(["loss=mse", "trainer.max_steps=10", "rerun=true"]))
    assert forced.status == "FINISHED" and forced.run_id != first.run_id
    assert len(all_runs(client)) == 2


def test_cli_single_run_and_help(store, client, tmp_path: Path):
    proc = run_train(["loss=hinge", "trainer.max_steps=30"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = all_runs(client)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["data"] == "binary"  # hinge picked {-1,+1} data by itself

    helped = run_train(["--help"], cwd=tmp_path)
    assert helped.returncode == 0
    for group in ("loss:", "model:", "data:", "optimizer:", "trainer:"):
        assert group in helped.stdout
    assert "sigmoid_weighted_l1" in helped.stdout


def test_cli_user_loss_by_target(store, client, tmp_path: Path):
    proc = run_train(
        ["loss._target_=experiments.my_loss.Pinball", "+loss.tau=0.9", "trainer.max_steps=20"],
        cwd=ROOT,
        env={"MLFLOW_EXPERIMENT_NAME": "user_loss"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run,) = all_runs(client, "user_loss")
    assert run.info.run_name.startswith("pinball-tau0.9-")
    assert run.data.params["loss.tau"] == "0.9"


def test_multirun_sweeps_the_loss_grid_under_one_parent(store, client, tmp_path: Path):
    # -m in the middle, as people extend a command; the margins narrowed on the command line, the
    # grid's 3 seeds kept (conf/grid/hinge.yaml)
    proc = run_train(["loss=hinge", "-m", "trainer.max_steps=15", "loss.margin=0,1"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "usage:" not in proc.stderr
    runs = all_runs(client)
    parents = [r for r in runs if r.data.tags.get("losslab.sweep") == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    designs = sorted((float(r.data.params["loss.margin"]), int(r.data.params["seed"])) for r in children)
    assert designs == [(m, s) for m in (0.0, 1.0) for s in (0, 1, 2)]
    assert all(r.info.status == "FINISHED" for r in children)
    assert "[1/6]" in proc.stdout and "[6/6]" in proc.stdout and "Sweep summary" in proc.stdout
    # the comparison report is written when the sweep ends, and logged on the parent run
    assert "report: " in proc.stdout
    report = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert "report/index.html" in report


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_leaves_run_killed_with_partial_curve(store, client, tmp_path: Path, popen_cleanup, sig):
    proc = subprocess.Popen(
        train_cmd("loss=mse", "trainer.max_steps=1000000", "tracking.flush_every=50"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    popen_cleanup.append(proc)

    def some_points():
        runs = all_runs(client)
        return runs and len(_history(client, runs[0].info.run_id, "train/loss")) >= 100 and runs[0]

    run = wait_for(some_points, timeout=120)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    final = client.get_run(run.info.run_id)
    assert final.info.status == "KILLED"
    steps = [m.step for m in _history(client, run.info.run_id, "train/loss")]
    assert len(steps) >= 100 and steps == list(range(len(steps)))  # flushed up to the last step


@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux `script` for a pseudo-terminal")
@pytest.mark.slow  # 19 s: a pseudo-terminal run
def test_progress_bar_only_in_a_terminal(store, tmp_path: Path):
    """Lightning's bar in a terminal (a pty via `script`), none when output goes to a pipe or a log."""
    cmd = " ".join(shlex.quote(a) for a in train_cmd("trainer.max_steps=30", "rerun=true"))
    tty = subprocess.run(
        ["script", "-qec", cmd, "/dev/null"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert tty.returncode == 0, tty.stdout[-2000:]
    assert "Epoch" in tty.stdout
    piped = run_train(["trainer.max_steps=30", "rerun=true"], cwd=tmp_path)
    assert piped.returncode == 0 and "Epoch" not in piped.stdout + piped.stderr
