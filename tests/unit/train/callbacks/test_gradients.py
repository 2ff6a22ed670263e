"""Gradient statistics, outcomes and the pre-training gradient check, end to end into MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT, all_runs, compose, run_train
from losslab.train import job as task


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
        # a probe of 64: at 16 rows of the 60% train split the signal is below the estimator's noise (nan)
        compose(["loss=mse", "trainer.max_steps=20", "grad_stats.noise_every=5", "grad_stats.probe_size=64"])
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
    bad = [
        "loss._target_=tests.helpers.custom_losses.DoubledGradMSE",
        "check_grads=true",
        "trainer.max_steps=5",
    ]
    proc = run_train(bad, cwd=ROOT, env={"MLFLOW_EXPERIMENT_NAME": "gc"})
    assert proc.returncode == 2
    assert "gradient check failed" in proc.stderr and "Traceback" not in proc.stderr
    assert all_runs(client, "gc") == []  # refused before any run was created
    go_on = run_train([*bad, "check_grads_continue=true"], cwd=ROOT, env={"MLFLOW_EXPERIMENT_NAME": "gc"})
    assert go_on.returncode == 0, go_on.stderr[-2000:]
    (run,) = all_runs(client, "gc")
    assert run.data.tags["gradcheck"] == "failed"


def test_noise_scale_is_unbiased_on_gradients_with_a_known_noise_scale():
    """Per-sample gradients G + N(0, sigma^2 I) in d dims: B = d sigma^2 / |G|^2, here 320 = 10x the probe."""
    import torch

    from losslab.train.callbacks.gradients import unbiased_noise_scale

    gen = torch.Generator().manual_seed(0)
    d, probe, sigma = 400, 32, 1.0
    g = torch.full((d,), (d * sigma**2 / 320) ** 0.5 / d**0.5)  # |G|^2 = d sigma^2 / 320
    true_b = d * sigma**2 / float(g @ g)
    estimates, biased = [], []
    for _ in range(400):
        flat = g + sigma * torch.randn(probe, d, generator=gen)
        b, snr = unbiased_noise_scale(flat)
        estimates.append((float(b), float(snr)))
        mean = flat.mean(0)
        biased.append(float(((flat - mean) ** 2).sum(1).mean() / (mean**2).sum()))
    finite = [b for b, _ in estimates if b == b]
    assert len(finite) > 300
    median_b = sorted(finite)[len(finite) // 2]
    assert abs(median_b - true_b) / true_b < 0.25, (median_b, true_b)
    assert max(biased) < 1.2 * probe < true_b  # the old estimator could not exceed about the probe size
    snr = sum(s for _, s in estimates) / len(estimates)
    assert abs(snr - probe / true_b) < 0.05  # SNR = |G|^2 / (tr Sigma / P) = P / B, unbiased numerator


def test_pred_gradient_is_per_sample_so_the_short_batch_does_not_double_it(store, client):
    # regression data: 800 train rows, batches of 64: every 13th step is a short batch of 32
    result = task.train(compose(["loss=mse", "trainer.max_steps=40", "optimizer.lr=1e-9"]))
    mean_abs = [m.value for m in client.get_metric_history(result.run_id, "grad/pred/mean_abs")]
    short = [mean_abs[i] for i in (12, 25, 38)]
    full = [v for i, v in enumerate(mean_abs) if i not in (12, 25, 38)]
    # lr 1e-9: the model barely moves, so every batch shows the same per-sample |dL/dy_hat| up to sampling
    assert max(short) < 1.5 * max(full) and min(short) > 0.5 * min(full)
    assert 0.5 < (sum(short) / 3) / (sum(full) / len(full)) < 1.5
