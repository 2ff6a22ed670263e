"""Label corruption as data config (`data.label_noise`, losslab.data.corruption) and the memorisation
metrics it enables (`train/fit_noisy`, `train/fit_clean`)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from conftest import compose
from losslab.config.build import build
from losslab.data.corruption import MNIST_MAP, apply, corrupt_labels
from losslab.data.datasets import DataConfigError, TensorData
from losslab.data.multiclass import digits
from losslab.train.module import LossLabModule
from losslab.vocab import FIT_CLEAN, FIT_NOISY


def _noise(kind: str, rate: float, seed: int = 0, **extra) -> dict:
    return {
        "label_noise": {"kind": kind, "rate": rate, "clean_val": False, "map": None, "seed": seed, **extra}
    }


def _synthetic(n: int = 20000, k: int = 10, task: str = "multiclass", name: str = "synthetic") -> TensorData:
    """Balanced labels 0..K-1 in every split (binary: {-1,+1} as (N, 1) floats)."""
    y = torch.arange(n) % k
    if task == "binary":
        y = (y * 2 - 1).float().reshape(-1, 1)
    x = torch.zeros(n, 1)
    return TensorData(
        name=name,
        x_train=x,
        y_train=y,
        x_val=x[: n // 4],
        y_val=y[: n // 4],
        x_test=x[: n // 4],
        y_test=y[: n // 4].clone(),
        task=task,
        labels="pm1" if task == "binary" else "classes",
        num_classes=None if task == "binary" else k,
    )


def _within_binomial(hits: int, n: int, p: float, z: float = 4.5) -> bool:
    return abs(hits - n * p) <= z * math.sqrt(n * p * (1 - p)) + 1


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.8])
def test_symmetric_rate_is_realised_within_binomial_noise_and_replacements_are_other_classes(rate):
    data = _synthetic()
    out = apply(data, _noise("symmetric", rate))
    flipped = out.y_train != data.y_train
    assert _within_binomial(int(flipped.sum()), data.n_train, rate)
    assert out.data_metrics["data/noise_rate"] == pytest.approx(float(flipped.float().mean()))
    assert torch.equal(out.y_train_clean, data.y_train)  # the clean labels are kept
    if rate:
        # a different class, uniform over the K - 1 others: each (from, to) pair ~ rate / (K - 1) of its class
        to = out.y_train[flipped]
        counts = torch.bincount((to - data.y_train[flipped]) % 10, minlength=10)
        assert counts[0] == 0
        per = int(flipped.sum()) / 9
        assert all(_within_binomial(int(c), int(flipped.sum()), 1 / 9) for c in counts[1:]), (counts, per)


def test_only_train_and_val_are_corrupted_test_never_and_clean_val_keeps_val():
    data = _synthetic()
    out = apply(data, _noise("symmetric", 0.4))
    assert torch.equal(out.y_test, data.y_test) and out.x_test is data.x_test
    assert not torch.equal(out.y_val, data.y_val) and torch.equal(out.y_val_clean, data.y_val)
    assert _within_binomial(int((out.y_val != data.y_val).sum()), data.y_val.numel(), 0.4)
    assert "data/noise_rate_val" in out.data_metrics
    kept = apply(data, _noise("symmetric", 0.4, clean_val=True))
    assert torch.equal(kept.y_val, data.y_val) and kept.y_val_clean is None
    assert torch.equal(kept.y_test, data.y_test)
    assert torch.equal(kept.y_train, out.y_train)  # train's draw does not depend on val's treatment
    assert "data/noise_rate_val" not in kept.data_metrics


def test_the_same_seed_gives_the_same_corruption_and_lower_rates_corrupt_a_subset():
    data = _synthetic()
    a, b = apply(data, _noise("symmetric", 0.4, seed=3)), apply(data, _noise("symmetric", 0.4, seed=3))
    assert torch.equal(a.y_train, b.y_train) and torch.equal(a.y_val, b.y_val)
    other = apply(data, _noise("symmetric", 0.4, seed=4))
    assert not torch.equal(a.y_train, other.y_train)
    low = apply(data, _noise("symmetric", 0.2, seed=3))
    low_rows, high_rows = low.y_train != data.y_train, a.y_train != data.y_train
    assert bool((low_rows & ~high_rows).sum() == 0)  # coupled draws: 20% is inside 40%
    assert torch.equal(low.y_train[low_rows], a.y_train[low_rows])


def test_the_corruption_follows_the_split_seed_not_the_model_seed():
    common = ["data=digits", "model=mlp", "loss=cross_entropy", "data.label_noise.kind=symmetric"]
    common += ["data.label_noise.rate=0.3", "data.split_seed=5"]
    a = build(compose([*common, "seed=0"])).data
    b = build(compose([*common, "seed=1"])).data
    assert torch.equal(a.y_train, b.y_train) and torch.equal(a.y_val, b.y_val)
    assert not torch.equal(a.y_train, a.y_train_clean)
    c = build(compose([*common[:-1], "data.split_seed=6", "seed=0"])).data
    assert not torch.equal(c.y_train_clean[: a.n_train], a.y_train_clean)  # another split, another draw
    # the default seed of the corruption is the split seed, which defaults to the run's seed
    d = build(compose([*common[:-1], "seed=5"])).data
    assert torch.equal(d.y_train, a.y_train)


def test_asymmetric_flips_follow_the_mnist_map_exactly_on_digit_data():
    data = digits(split_seed=0)
    out = apply(data, _noise("asymmetric", 0.4))
    clean, noisy = data.y_train, out.y_train
    flipped = clean != noisy
    assert flipped.any()
    for src in range(10):
        rows = clean == src
        if src in MNIST_MAP:
            assert set(noisy[rows & flipped].tolist()) <= {MNIST_MAP[src]}
            assert _within_binomial(int((rows & flipped).sum()), int(rows.sum()), 0.4)
        else:
            assert not bool((rows & flipped).any()), f"class {src} has no flip in the map"
    share = sum(int((clean == c).sum()) for c in MNIST_MAP) / clean.numel()
    assert _within_binomial(int(flipped.sum()), clean.numel(), 0.4 * share)


def test_a_users_map_is_applied_as_written():
    data = _synthetic(k=4)
    out = apply(data, _noise("asymmetric", 0.5, map={0: 3, "2": 1}))
    flipped = out.y_train != data.y_train
    assert set(data.y_train[flipped].tolist()) == {0, 2}
    assert set(out.y_train[flipped & (data.y_train == 0)].tolist()) == {3}
    assert set(out.y_train[flipped & (data.y_train == 2)].tolist()) == {1}
    pairs = apply(data, _noise("asymmetric", 0.5, map=[[0, 3], [2, 1]]))
    assert torch.equal(pairs.y_train, out.y_train)


def test_binary_data_symmetric_flips_both_ways_asymmetric_flips_the_positive_class_in_its_encoding():
    data = _synthetic(n=8000, k=2, task="binary")
    sym = apply(data, _noise("symmetric", 0.3))
    assert set(sym.y_train.unique().tolist()) == {-1.0, 1.0} and sym.y_train.shape == data.y_train.shape
    flipped = sym.y_train != data.y_train
    for label in (-1.0, 1.0):
        rows = data.y_train == label
        assert _within_binomial(int((rows & flipped).sum()), int(rows.sum()), 0.3)
    asym = apply(data, _noise("asymmetric", 0.3))
    flipped = asym.y_train != data.y_train
    assert set(data.y_train[flipped].tolist()) == {1.0} and set(asym.y_train[flipped].tolist()) == {-1.0}
    assert _within_binomial(int(flipped.sum()), int((data.y_train == 1).sum()), 0.3)
    enc = sym.with_labels("01")  # a {0,1} loss gets its labels, and the clean ones, re-encoded alike
    assert torch.equal(enc.y_train != enc.y_train_clean, sym.y_train != sym.y_train_clean)
    assert set(enc.y_train_clean.unique().tolist()) == {0.0, 1.0}


def test_corrupt_labels_draws_the_same_numbers_whatever_the_rate():
    import numpy as np

    y = torch.arange(1000) % 5
    a = corrupt_labels(y, 5, "symmetric", 0.0, None, np.random.default_rng(0))
    assert torch.equal(a, y)


@pytest.mark.parametrize(
    ("settings", "data", "says"),
    [
        (_noise("symmetric", 1.0), "synthetic", "rate=1.0"),
        (_noise("symmetric", -0.1), "synthetic", "rate=-0.1"),
        (_noise("symmetric", float("nan")), "synthetic", "rate=nan"),
        (_noise("flip", 0.2), "synthetic", "none | symmetric | asymmetric"),
        (_noise("none", 0.2), "synthetic", "kind=none"),
        (_noise("asymmetric", 0.2), "synthetic", "no standard asymmetric map"),
        (_noise("asymmetric", 0.2, map={3: 12}), "synthetic", "[0, 10)"),
        (_noise("asymmetric", 0.2, map={3: 3}), "synthetic", "two different class indices"),
        (_noise("symmetric", 0.2), "regression", "needs classification data"),
        ({"imbalance_ratio": 0.5}, "synthetic", "imbalance_ratio=0.5"),
        ({"imbalance_ratio": 10}, "regression", "needs classification data"),
    ],
)
def test_bad_settings_raise_data_config_error_with_what_is_accepted(settings, data, says):
    d = _synthetic()
    if data == "regression":
        d = TensorData("regression", d.x_train, d.x_train, d.x_val, d.x_val, d.x_test, d.x_test)
    with pytest.raises(DataConfigError) as exc:
        apply(d, settings)
    assert says in str(exc.value) and "accepted" in str(exc.value)


# ----------------------------------------------------------------------------- memorisation


def _module(data: TensorData) -> LossLabModule:
    k = data.num_classes or 2
    model = nn.Linear(k, k, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(k))  # predicts the class whose one-hot is the input
    from losslab.losses.multiclass import CrossEntropy

    return LossLabModule(model, CrossEntropy(), data, optimizer=torch.optim.SGD)


def test_fit_metrics_on_a_known_answer():
    base = _synthetic(n=2000, k=4)
    noisy = apply(base, _noise("symmetric", 0.5))
    eye = torch.eye(4)
    # a model that predicts the clean label fits no corrupted row and every clean one
    clean_model = _module(noisy)
    clean_model._data = replace(noisy, x_train=eye[noisy.y_train_clean])
    fit = {k: float(v) for k, v in clean_model._memorisation().items()}
    assert fit == {FIT_NOISY: 0.0, FIT_CLEAN: 1.0}
    # a model that predicts the (noisy) training label has memorised them all
    memo = _module(noisy)
    memo._data = replace(noisy, x_train=eye[noisy.y_train])
    fit = {k: float(v) for k, v in memo._memorisation().items()}
    assert fit == {FIT_NOISY: 1.0, FIT_CLEAN: 1.0}
    # no corruption: no memorisation metric at all; rate 0: only fit_clean
    assert _module(base)._memorisation() == {}
    zero = apply(base, _noise("symmetric", 0.0))
    zero = replace(zero, x_train=eye[zero.y_train])
    assert set(_module(zero)._memorisation()) == {FIT_CLEAN}
