"""Class imbalance as data config (`data.imbalance_ratio`) and inverse-frequency class weights."""

from __future__ import annotations

import pytest
import torch

from conftest import compose
from losslab.config.build import build
from losslab.data.corruption import (
    apply,
    class_counts,
    inverse_frequency,
    long_tail_counts,
    resolve_class_weights,
)
from losslab.data.datasets import DataConfigError
from losslab.data.multiclass import digits


def _counts(y: torch.Tensor, k: int = 10) -> list[int]:
    return torch.bincount(y.reshape(-1).long(), minlength=k).tolist()


@pytest.mark.parametrize("ratio", [1.0, 10.0, 100.0])
def test_training_class_counts_follow_the_long_tail_and_val_test_stay_as_split(ratio):
    data = digits(split_seed=0)
    out = apply(data, {"imbalance_ratio": ratio})
    available = _counts(data.y_train)
    n_max = min(available)
    want = [round(n_max * ratio ** (-k / 9)) for k in range(10)] if ratio > 1 else available
    assert _counts(out.y_train) == want
    if ratio > 1:
        assert want == long_tail_counts(available, ratio)
        assert want[0] / want[-1] == pytest.approx(out.data_metrics["data/imbalance_ratio"])
        assert abs(want[0] / want[-1] - ratio) <= ratio * 0.15  # rounding of the smallest class only
    # val and test untouched: balanced (stratified) as split
    assert torch.equal(out.y_val, data.y_val) and torch.equal(out.y_test, data.y_test)
    assert max(_counts(out.y_val)) - min(_counts(out.y_val)) <= 2
    # the kept training rows are rows of the split, features with their labels
    rows = {tuple(r.tolist()): int(y) for r, y in zip(data.x_train, data.y_train, strict=True)}
    assert all(rows[tuple(r.tolist())] == int(y) for r, y in zip(out.x_train, out.y_train, strict=True))


def test_the_subsample_is_deterministic_per_seed_and_noise_comes_after_it():
    data = digits(split_seed=0)
    a = apply(data, {"imbalance_ratio": 10, "label_noise": {"kind": "none", "rate": 0.0, "seed": 1}})
    b = apply(data, {"imbalance_ratio": 10, "label_noise": {"kind": "none", "rate": 0.0, "seed": 1}})
    c = apply(data, {"imbalance_ratio": 10, "label_noise": {"kind": "none", "rate": 0.0, "seed": 2}})
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    noisy = apply(data, {"imbalance_ratio": 10, "label_noise": {"kind": "symmetric", "rate": 0.3, "seed": 1}})
    assert torch.equal(noisy.y_train_clean, a.y_train) and torch.equal(noisy.x_train, a.x_train)


def test_binary_data_keeps_the_negative_class_and_thins_the_positive_one():
    from losslab.data.datasets import sklearn_dataset

    data = sklearn_dataset("breast_cancer", split_seed=0)
    out = apply(data, {"imbalance_ratio": 5})
    neg, pos = int((data.y_train == -1).sum()), int((data.y_train == 1).sum())
    n = min(neg, pos)
    assert int((out.y_train == -1).sum()) == n and int((out.y_train == 1).sum()) == round(n / 5)


def test_a_ratio_that_empties_a_class_is_refused_before_anything_runs():
    data = digits(split_seed=0)
    with pytest.raises(
        DataConfigError, match=r"leaves classes 7, 8, 9 with no training sample.*accepted: a ratio below 208"
    ):
        apply(data, {"imbalance_ratio": 1000})
    with pytest.raises(DataConfigError, match=r"imbalance_ratio=0.5.*accepted: a finite number >= 1"):
        apply(data, {"imbalance_ratio": 0.5})


def test_inverse_frequency_weights_have_mean_one_and_come_from_the_training_counts():
    assert inverse_frequency([100, 10]) == pytest.approx([2 / 11, 20 / 11])
    cfg = compose(
        [
            "data=digits",
            "model=mlp",
            "loss=cross_entropy",
            "data.imbalance_ratio=10",
            "loss.class_weights=inverse_frequency",
        ]
    )
    job = build(cfg)
    counts = class_counts(job.data)
    w = job.loss.class_weights
    assert w is not None and w.shape == (10,)
    assert float(w.mean()) == pytest.approx(1.0, rel=1e-5)
    assert w.tolist() == pytest.approx(inverse_frequency(counts), rel=1e-5)
    assert w[9] > w[0]  # the rare class weighs most
    node = resolve_class_weights(cfg.loss, job.data)
    assert list(node.class_weights) == pytest.approx(inverse_frequency(counts))


def test_an_unknown_class_weight_scheme_is_refused():
    data = digits(split_seed=0)
    cfg = compose(["data=digits", "model=mlp", "loss=cross_entropy", "loss.class_weights=inverse_freq"])
    with pytest.raises(DataConfigError, match="inverse_frequency"):
        resolve_class_weights(cfg.loss, data)
