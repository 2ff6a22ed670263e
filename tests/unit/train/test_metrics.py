"""Task metrics (losslab.train.metrics) against scikit-learn on fixed arrays, and the decision thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from losslab import losses
from losslab.train.metrics import FORMULAS, better, decision_threshold, direction, task_metrics
from losslab.vocab import HIGHER_IS_BETTER, TASK_METRICS, primary_metric

SCORES = np.array([-3.2, -1.0, -0.2, 0.0, 0.3, 0.8, 2.5, 40.0, -25.0, 1.1, -0.7, 19.0, 23.0, 0.05])
POSITIVE = np.array([0, 0, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1], dtype=bool)


def test_every_declared_metric_has_a_formula_and_every_formula_is_declared():
    """A metric is one entry in vocab.TASK_METRICS plus its formula: neither may exist alone."""
    assert set(FORMULAS) == set(TASK_METRICS)
    for task, names in TASK_METRICS.items():
        missing = [n for n in names if n not in FORMULAS[task]]
        undeclared = [n for n in FORMULAS[task] if n not in names]
        assert not missing, f"{task} metrics declared in vocab without a formula in FORMULAS: {missing}"
        assert not undeclared, f"{task} formulas without a declaration in vocab.TASK_METRICS: {undeclared}"


def test_a_metric_shared_by_tasks_has_one_direction():
    for task, names in TASK_METRICS.items():
        for name, up in names.items():
            said = "higher" if up else "lower"
            assert HIGHER_IS_BETTER[name] is up, f"{name}: {task} says {said} is better"


def test_task_metrics_come_in_the_declared_order():
    y = torch.tensor(np.where(POSITIVE, 1.0, -1.0))
    assert list(task_metrics("binary", torch.tensor(SCORES), y)) == list(TASK_METRICS["binary"])
    pred = torch.linspace(0, 1, 20)
    assert list(task_metrics("regression", pred, pred.flip(0))) == list(TASK_METRICS["regression"])


@pytest.mark.parametrize(("labels", "threshold"), [("pm1", 0.0), ("01", 0.0), ("01", 0.5), ("pm1", -0.5)])
def test_binary_metrics_match_sklearn(labels, threshold):
    y = np.where(POSITIVE, 1.0, -1.0 if labels == "pm1" else 0.0)
    got = task_metrics("binary", torch.tensor(SCORES, dtype=torch.float32), torch.tensor(y), threshold)
    assert set(got) == set(TASK_METRICS["binary"])
    assert float(got["accuracy"]) == pytest.approx(skm.accuracy_score(POSITIVE, threshold < SCORES))
    # ROC AUC on the raw scores: large scores (19, 23, 40) keep their order, no sigmoid ties
    assert float(got["auc"]) == pytest.approx(skm.roc_auc_score(POSITIVE, SCORES), abs=1e-6)


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    pred = y + rng.normal(scale=0.5, size=200) + 0.1
    got = task_metrics("regression", torch.tensor(pred).float().reshape(-1, 1), torch.tensor(y).float())
    assert set(got) == set(TASK_METRICS["regression"])
    assert float(got["rmse"]) == pytest.approx(math.sqrt(skm.mean_squared_error(y, pred)), rel=1e-5)
    assert float(got["mae"]) == pytest.approx(skm.mean_absolute_error(y, pred), rel=1e-5)
    assert float(got["r2"]) == pytest.approx(skm.r2_score(y, pred), rel=1e-5)


def test_metrics_stay_on_the_device_as_tensors():
    got = task_metrics("binary", torch.tensor(SCORES).float(), torch.tensor(POSITIVE).float())
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in got.values())


def test_non_finite_scores_give_nan_not_a_plausible_number():
    s = torch.tensor(SCORES).float()
    s[3] = float("nan")
    got = task_metrics("binary", s, torch.tensor(POSITIVE).float())
    assert all(math.isnan(float(v)) for v in got.values())
    s[3] = float("inf")
    reg = task_metrics("regression", s, torch.zeros_like(s))
    assert not math.isfinite(float(reg["rmse"]))


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="unknown task 'ranking'"):
        task_metrics("ranking", torch.zeros(3), torch.zeros(3))


@pytest.mark.parametrize(
    ("loss", "labels", "expected"),
    [
        (losses.Hinge(), "pm1", 0.0),  # sign of the margin
        (losses.SquaredHinge(), "pm1", 0.0),
        (losses.BCEWithLogits(), "01", 0.0),  # logit 0 = probability 0.5
        (losses.Focal(), "01", 0.0),
        (losses.MSE(), "pm1", 0.0),  # no declaration: midpoint of the labels
        (losses.MSE(), "01", 0.5),
        (torch.nn.L1Loss(), "01", 0.5),  # a user's loss on raw scores in {0,1}
    ],
)
def test_decision_threshold_follows_the_label_domain(loss, labels, expected):
    assert decision_threshold(loss, labels) == expected


def test_primary_metric_direction_and_selection_order():
    assert primary_metric("binary") == "accuracy" and direction("accuracy") == "maximize"
    assert primary_metric("regression") == "rmse" and direction("rmse") == "minimize"
    assert better("accuracy", 0.9, 0.8) and not better("accuracy", 0.8, 0.8)  # strict: ties keep the first
    assert better("rmse", 0.1, 0.2) and not better("rmse", 0.3, 0.2)
    assert better("rmse", 5.0, None) and not better("rmse", math.nan, None)
    assert better("accuracy", 0.5, math.nan)
