"""Task metrics in real runs, selection on val only, test on the selected weights, the objective.

Every run is a real Lightning fit into a real sqlite MLflow store (the `store` fixture).
"""

from __future__ import annotations

import math

import pytest

from conftest import compose
from losslab.train import job as task

BINARY = ("val/accuracy", "val/auc")
REGRESSION = ("val/rmse", "val/mae", "val/r2")


def _values(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


@pytest.mark.parametrize("loss", ["hinge", "squared_hinge", "bce_with_logits", "focal"])
@pytest.mark.parametrize("data", ["binary", "breast_cancer"])
def test_one_binary_data_set_serves_every_binary_loss(store, client, loss, data):
    """No flag: each loss gets the labels in its own domain, and the task metrics are the same."""
    result = task.train(
        compose([f"loss={loss}", f"data={data}", "trainer.max_steps=40", "optimizer.lr=0.01"])
    )
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["task"] == "binary" and run.data.tags["heldout"] == "true"
    val_steps = [s for s, _ in _values(client, result.run_id, "val/loss")]
    for key in BINARY:  # at every validation, step = global step, beside val/loss
        points = _values(client, result.run_id, key)
        assert [s for s, _ in points] == val_steps and len(points) >= 2
        assert all(0.0 <= v <= 1.0 for _, v in points)
    m = run.data.metrics
    for key in ("test/accuracy", "test/auc", "best/val_accuracy", "best/val_auc", "best/step"):
        assert key in m and math.isfinite(m[key])
    assert m["best/val_accuracy"] > 0.75  # learnable data: better than chance after 40 steps
    assert result.metric == "accuracy" and result.objective == m["best/val_accuracy"]


def test_selection_is_the_first_validation_with_the_best_val_metric(store, client):
    result = task.train(compose(["loss=hinge", "data=breast_cancer", "trainer.max_steps=120"]))
    m = client.get_run(result.run_id).data.metrics
    acc = _values(client, result.run_id, "val/accuracy")
    auc = dict(_values(client, result.run_id, "val/auc"))
    best = max(v for _, v in acc)
    first = next(s for s, v in acc if v == best)
    assert m["best/val_accuracy"] == pytest.approx(best) and m["best/step"] == first
    assert m["best/val_auc"] == pytest.approx(auc[first])  # the other metrics at the same validation


def test_changing_the_test_labels_changes_no_selection(store, client):
    """Test labels all flipped: the same val curves, best step and objective; only test/* move."""
    base = ["loss=hinge", "data=breast_cancer", "trainer.max_steps=90", "optimizer.lr=0.01"]
    a = task.train(compose(base))
    b = task.train(compose([*base, "data._target_=helpers.custom_data.breast_cancer_test_flipped"]))
    ma, mb = client.get_run(a.run_id).data.metrics, client.get_run(b.run_id).data.metrics
    for key in ("val/loss", *BINARY):
        assert _values(client, a.run_id, key) == _values(client, b.run_id, key)
    for key in ("best/step", "best/val_accuracy", "best/val_auc"):
        assert ma[key] == mb[key]
    assert a.objective == b.objective
    assert mb["test/accuracy"] == pytest.approx(1.0 - ma["test/accuracy"], abs=1e-6)
    assert mb["test/auc"] == pytest.approx(1.0 - ma["test/auc"], abs=1e-6)


def test_regression_runs_log_rmse_mae_r2(store, client):
    result = task.train(compose(["loss=huber", "trainer.max_steps=40", "optimizer.lr=0.01"]))
    run = client.get_run(result.run_id)
    assert run.data.tags["task"] == "regression" and run.data.params["data.name"] == "regression_outliers"
    for key in REGRESSION:
        assert len(_values(client, result.run_id, key)) >= 2
    m = run.data.metrics
    rmse = _values(client, result.run_id, "val/rmse")
    assert m["best/val_rmse"] == pytest.approx(min(v for _, v in rmse))
    assert {"test/rmse", "test/mae", "test/r2"} <= set(m)
    assert m["test/mae"] <= m["test/rmse"]
    assert result.metric == "rmse" and result.objective == m["best/val_rmse"]


def test_a_set_without_held_out_data_says_so(store, client):
    result = task.train(compose(["recipe=seed_hinge"]))
    run = client.get_run(result.run_id)
    assert run.data.tags["heldout"] == "false" and run.data.tags["task"] == "binary"
    m = run.data.metrics
    # val = test = train: the test score of the selected weights is its val score
    assert m["test/accuracy"] == pytest.approx(m["best/val_accuracy"])


def test_split_seed_defaults_to_seed_so_designs_share_the_split(store, client):
    a = task.train(compose(["loss=hinge", "data=breast_cancer", "trainer.max_steps=6", "seed=3"]))
    b = task.train(compose(["loss=focal", "data=breast_cancer", "trainer.max_steps=6", "seed=3"]))
    pa, pb = client.get_run(a.run_id).data.params, client.get_run(b.run_id).data.params
    assert pa["data.split_seed"] == pb["data.split_seed"] == "3"


def test_a_diverged_binary_run_returns_the_bad_extreme(store, client):
    result = task.train(
        compose(["data=binary", "loss._target_=tests.helpers.custom_losses.FailAt", "+loss.nan_at=30"])
    )
    assert result.outcome == "diverged"
    assert result.metric == "accuracy" and result.objective == -task.PENALTY  # maximised: bad is very low


def test_objective_direction_follows_the_metric():
    ok = task.Result("FINISHED", "r", outcome="converged", metric="rmse", metric_value=0.3)
    assert ok.objective == 0.3
    assert task.Result("FAILED", "r", metric="rmse").objective == task.PENALTY
    assert task.Result("FAILED", "r", metric="accuracy").objective == -task.PENALTY
    diverged = task.Result("FINISHED", "r", outcome="diverged", metric="accuracy", metric_value=0.9)
    assert diverged.objective == -task.PENALTY
    nan = task.Result("FINISHED", "r", outcome="converged", metric="accuracy", metric_value=math.nan)
    assert nan.objective == -task.PENALTY and math.isfinite(nan.objective)


def test_a_job_that_never_scored_hands_the_sweeper_its_tasks_bad_extreme():
    """The error path of a multirun job and SLURM's lost jobs use the config's task, like Result."""
    from losslab.sweep import slurm

    assert task.config_penalty(compose(["data=breast_cancer"])) == -task.PENALTY  # accuracy: max
    assert task.config_penalty(compose(["loss=hinge"])) == -task.PENALTY  # hinge picks binary data
    assert task.config_penalty(compose(["data=diabetes"])) == task.PENALTY  # rmse: min
    lost = slurm.penalty_return(["seed=1"], compose(["loss=focal"]))
    assert lost.return_value == -task.PENALTY and lost.overrides == ["seed=1"]
