"""Gradient statistics, outcomes and the pre-training gradient check, end to end into MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT, all_runs, compose, run_train
from losslab import task


def _keys(client, run_id: str) -> set[str]:
    return set(client.get_run(run_id).data.metrics)


def _steps(client, run_id: str, key: str) -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def test_gradient_statistics_are_recorded_every_step(store, client):
    result = task.train(compose(["loss=hinge", "trainer.max_steps=30", "model.hidden=[8,8]"]))
    keys = _keys(client, result.run_id)
    expected = {
        "grad/global_norm",
        "grad/max_abs",
        "grad/nonfinite",
        "grad/norm/fc0",
        "grad/norm/fc1",
        "grad/norm/out",
        "grad/update_ratio/fc0",
        "grad/update_ratio/out",
        "grad/pred/mean_abs",
        "grad/pred/max_abs",
        "grad/pred/zero_frac",
    }
    assert expected <= keys, expected - keys
    for key in expected:
        assert _steps(client, result.run_id, key) == list(range(30)), key
    norms = client.get_metric_history(result.run_id, "grad/global_norm")
    per_layer = {k: client.get_metric_history(result.run_id, f"grad/norm/{k}") for k in ("fc0", "fc1", "out")}
    # the global norm is the root of the summed squared layer norms, at every step
    for i, m in enumerate(norms):
        total = sum(per_layer[k][i].value ** 2 for k in per_layer) ** 0.5
        assert m.value == pytest.approx(total, rel=1e-4)
    assert all(m.value == 0 for m in client.get_metric_history(result.run_id, "grad/nonfinite"))


def test_hinge_inactive_margin_shows_as_zero_gradient_samples(store, client):
    # margin -0.9: most samples of learnable data sit beyond the knee, so dL/dy_hat is exactly 0 there
    result = task.train(
        compose(["loss=hinge", "loss.margin=-0.9", "trainer.max_steps=200", "optimizer.lr=0.01"])
    )
    zero = [m.value for m in client.get_metric_history(result.run_id, "grad/pred/zero_frac")]
    assert zero[0] < zero[-1] and zero[-1] > 0.5
    mse = task.train(compose(["loss=mse", "trainer.max_steps=20"]))
    assert all(m.value == 0 for m in client.get_metric_history(mse.run_id, "grad/pred/zero_frac"))


def test_gradient_noise_scale_is_optional(store, client):
    result = task.train(
        compose(["loss=mse", "trainer.max_steps=20", "grad_stats.noise_every=5", "grad_stats.probe_size=16"])
    )
    assert _steps(client, result.run_id, "grad/snr") == [0, 5, 10, 15]
    assert all(m.value > 0 for m in client.get_metric_history(result.run_id, "grad/noise_scale"))
    default = task.train(compose(["loss=mse", "trainer.max_steps=5"]))
    assert "grad/snr" not in _keys(client, default.run_id)


def test_sgd_lr100_diverges_stops_early_and_finishes(store, client):
    result = task.train(compose(["loss=mse", "optimizer=sgd", "optimizer.lr=100"]))
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"  # a result, not a crash
    assert run.data.tags["outcome"] == "diverged"
    assert run.data.tags["stopped_early"] == "diverged"
    steps = run.data.metrics["final/steps"]
    assert steps < 50  # of the configured 500
    first_bad = int(run.data.tags["first_bad_step"])
    assert run.data.metrics["outcome/first_bad_step"] == first_bad < steps
    assert result.objective == task.PENALTY  # finite, for sweepers


def test_adam_on_default_data_converges(store, client):
    result = task.train(
        compose(["loss=mse", "optimizer=adam", "optimizer.lr=0.01", "trainer.max_steps=2000"])
    )
    run = client.get_run(result.run_id)
    assert run.data.tags["outcome"] == "converged", run.data.tags["outcome_reason"]
    assert run.data.metrics["final/steps"] == 2000


def test_check_grads_records_a_passing_check(store, client):
    result = task.train(compose(["loss=hinge", "trainer.max_steps=5", "check_grads=true"]))
    assert client.get_run(result.run_id).data.tags["gradcheck"] == "passed"


def test_check_grads_refuses_a_wrong_backward(store, client, tmp_path: Path):
    bad = ["loss._target_=tests.custom_losses.DoubledGradMSE", "check_grads=true", "trainer.max_steps=5"]
    proc = run_train(bad, cwd=ROOT, env={"MLFLOW_EXPERIMENT_NAME": "gc"})
    assert proc.returncode == 2
    assert "gradient check failed" in proc.stderr and "Traceback" not in proc.stderr
    assert all_runs(client, "gc") == []  # refused before any run was created
    go_on = run_train([*bad, "check_grads_continue=true"], cwd=ROOT, env={"MLFLOW_EXPERIMENT_NAME": "gc"})
    assert go_on.returncode == 0, go_on.stderr[-2000:]
    (run,) = all_runs(client, "gc")
    assert run.data.tags["gradcheck"] == "failed"
