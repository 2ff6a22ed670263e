"""Multiclass task metrics (losslab.train.metrics) against scikit-learn and direct formulas."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from losslab.report.ranking import METRICS
from losslab.train.metrics import task_metrics
from losslab.vocab import HIGHER_IS_BETTER, TASK_METRICS, primary_metric, task_of, tasks_of


def _case(n: int = 300, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)) * 2.0
    logits[np.arange(n), y] += rng.normal(1.0, 1.5, size=n)  # better than chance, not perfect
    return logits, y


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _ece(p: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE with equal-width bins (Guo et al. 2017), written out."""
    conf, pred = p.max(axis=1), p.argmax(axis=1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            total += inside.mean() * abs((pred[inside] == y[inside]).mean() - conf[inside].mean())
    return total


@pytest.mark.parametrize("seed", [0, 1])
def test_multiclass_metrics_match_sklearn_and_direct_formulas(seed):
    logits, y = _case(seed=seed)
    got = task_metrics("multiclass", torch.tensor(logits, dtype=torch.float32), torch.tensor(y))
    assert list(got) == list(TASK_METRICS["multiclass"])
    p, pred = _softmax(logits), logits.argmax(axis=1)
    assert float(got["accuracy"]) == pytest.approx(skm.accuracy_score(y, pred), abs=1e-6)
    assert float(got["balanced_accuracy"]) == pytest.approx(skm.balanced_accuracy_score(y, pred), abs=1e-6)
    assert float(got["macro_f1"]) == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-6)
    assert float(got["nll"]) == pytest.approx(skm.log_loss(y, p, labels=list(range(5))), rel=1e-5)
    assert float(got["ece"]) == pytest.approx(_ece(p, y), abs=1e-5)
    brier = ((p - np.eye(5)[y]) ** 2).sum(axis=1).mean()
    assert float(got["brier"]) == pytest.approx(brier, rel=1e-5)


def test_balanced_accuracy_differs_from_accuracy_on_imbalanced_classes():
    y = np.array([0] * 90 + [1] * 10)
    logits = np.zeros((100, 2))
    logits[:, 0] = 1.0  # always class 0
    got = task_metrics("multiclass", torch.tensor(logits).float(), torch.tensor(y))
    assert float(got["accuracy"]) == pytest.approx(0.9)
    assert float(got["balanced_accuracy"]) == pytest.approx(0.5)


def test_non_finite_logits_give_nan_for_every_metric():
    logits, y = _case()
    bad = torch.tensor(logits).float()
    bad[3, 1] = float("nan")
    got = task_metrics("multiclass", bad, torch.tensor(y))
    assert all(math.isnan(float(v)) for v in got.values())


def test_vocab_declares_the_task_and_directions():
    assert primary_metric("multiclass") == "accuracy"
    assert {m: HIGHER_IS_BETTER[m] for m in ("nll", "ece", "brier")} == dict.fromkeys(
        ("nll", "ece", "brier"), False
    )
    assert HIGHER_IS_BETTER["balanced_accuracy"] and HIGHER_IS_BETTER["macro_f1"]
    # accuracy belongs to two tasks: resolved per the runs' own task
    assert tasks_of("accuracy") == ("binary", "multiclass")
    assert task_of("accuracy", "multiclass") == "multiclass" and task_of("accuracy") == "binary"
    assert task_of("ece") == "multiclass" and task_of("nope") is None
    assert all(m in METRICS for m in TASK_METRICS["multiclass"])
