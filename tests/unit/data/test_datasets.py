"""Datasets (conf/data/*.yaml), minibatching and the model builders."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from losslab import CONF_DIR
from losslab.data.datasets import (
    DataConfigError,
    TensorBatches,
    TensorData,
    seed_noise,
    sklearn_dataset,
    teacher_binary,
    teacher_regression,
)
from losslab.models import dense as models

#: multiclass sets (labels are class indices, K outputs) are covered in test_multiclass_data.py
MULTICLASS_NAMES = {"digits", "mnist1d"}
DATA_NAMES = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml") if p.stem not in MULTICLASS_NAMES)

# name -> (n_train + n_val + n_test, n_features, label encoding)
EXPECTED = {
    "seed_10x1": (10, 1, "real"),
    "seed_binary_10x10": (10, 10, "pm1"),
    "seed_100x10": (100, 10, "real"),
    "breast_cancer": (569, 30, "pm1"),
    "diabetes": (442, 10, "real"),
    "regression": (1000, 10, "real"),
    "regression_hetero": (1000, 10, "real"),
    "regression_nonlinear": (1000, 10, "real"),
    "regression_outliers": (1000, 10, "real"),
    "binary": (1000, 10, "pm1"),
    "binary01": (1000, 10, "01"),
}
SEED_SETS = {"seed_10x1", "seed_binary_10x10", "seed_100x10"}


def _build(name: str, seed: int = 0, **overrides) -> TensorData:
    """The data config as the task builds it: `${seed}` (the split seed's default) resolved."""
    cfg = OmegaConf.load(CONF_DIR / "data" / f"{name}.yaml")
    cfg.pop("defaults", None)  # conf/data/classification (label noise, imbalance): applied by the task
    root = OmegaConf.create({"seed": seed, "data": OmegaConf.merge(cfg, overrides)})
    torch.manual_seed(seed)
    return instantiate(root.data)


def _tensors(d: TensorData) -> list[torch.Tensor | None]:
    return [d.x_train, d.y_train, d.x_val, d.y_val, d.x_test, d.y_test, d.w_train]


def test_every_data_config_is_covered():
    assert set(DATA_NAMES) == set(EXPECTED), "add the new data config to EXPECTED"


# ============================================================================ shapes and labels


@pytest.mark.parametrize("name", DATA_NAMES)
def test_data_config_builds_with_right_shapes(name):
    d = _build(name)
    n_total, n_feat, labels = EXPECTED[name]
    assert isinstance(d, TensorData)
    assert d.name == name
    assert d.labels == labels
    assert d.in_features == n_feat and d.out_features == 1
    assert d.x_train.shape[1] == d.x_val.shape[1] == d.x_test.shape[1] == n_feat
    assert d.y_train.shape == (d.n_train, 1) and d.y_val.shape == (d.x_val.shape[0], 1)
    assert d.y_test.shape == (d.x_test.shape[0], 1)
    assert d.task == ("regression" if labels == "real" else "binary")
    for t in _tensors(d):
        assert t is None or (t.dtype == torch.float32 and torch.isfinite(t).all())
    if name in SEED_SETS:
        # full batch, no split: validation reports the training set
        assert d.n_train == n_total and d.batch_size is None and not d.heldout
        assert torch.equal(d.x_val, d.x_train) and torch.equal(d.y_val, d.y_train)
        assert torch.equal(d.x_test, d.x_train) and torch.equal(d.y_test, d.y_train)
    else:
        assert d.heldout
        assert d.n_train + d.x_val.shape[0] + d.x_test.shape[0] == n_total
        assert abs(d.x_val.shape[0] - 0.2 * n_total) <= 2 and abs(d.x_test.shape[0] - 0.2 * n_total) <= 2
    y = torch.cat([d.y_train, d.y_val, d.y_test])
    if labels == "pm1":
        assert set(y.unique().tolist()) == {-1.0, 1.0}
    elif labels == "01":
        assert set(y.unique().tolist()) == {0.0, 1.0}
    else:
        assert y.unique().numel() > 2


def test_seed_sets_exact_shapes():
    d = _build("seed_10x1")
    assert d.x_train.shape == (10, 1) and d.y_train.shape == (10, 1)
    d = _build("seed_binary_10x10")
    assert d.x_train.shape == (10, 10) and d.y_train.shape == (10, 1)
    assert set(d.y_train.unique().tolist()) == {-1.0, 1.0}
    d = _build("seed_100x10")
    assert d.x_train.shape == (100, 10) and d.y_train.shape == (100, 1)


def test_seed_set_reproduces_the_seed_recipe():
    """Same global seed, same draws in the same order as the seed document's script."""
    d = _build("seed_10x1", seed=123)
    torch.manual_seed(123)
    x, y = torch.randn(10, 1), torch.randn(10, 1)
    assert torch.equal(d.x_train, x) and torch.equal(d.y_train, y)
    d = _build("seed_binary_10x10", seed=123)
    torch.manual_seed(123)
    x = torch.randn(10, 10)
    y = torch.randint(0, 2, (10, 1)).float() * 2 - 1
    assert torch.equal(d.x_train, x) and torch.equal(d.y_train, y)


def test_sklearn_sets():
    bc = _build("breast_cancer")
    assert bc.n_train + bc.x_val.shape[0] + bc.x_test.shape[0] == 569 and bc.in_features == 30
    assert (bc.n_train, bc.x_val.shape[0], bc.x_test.shape[0]) == (343, 113, 113)  # stratified: per class
    dia = _build("diabetes")
    assert dia.n_train + dia.x_val.shape[0] + dia.x_test.shape[0] == 442 and dia.in_features == 10
    # the target is standardised with train statistics only
    assert abs(float(dia.y_train.mean())) < 1e-4 and float(dia.y_train.std()) == pytest.approx(1.0, abs=1e-4)
    assert abs(float(dia.y_val.mean())) > 1e-4
    raw = _build("diabetes", standardize_target=False)
    assert float(torch.cat([raw.y_train, raw.y_val]).mean()) > 100  # disease progression scale
    bc01 = _build("breast_cancer", labels="01")
    assert set(bc01.y_train.unique().tolist()) == {0.0, 1.0}


# ============================================================================ determinism


@pytest.mark.parametrize("name", DATA_NAMES)
def test_same_seed_same_tensors_different_seed_different(name):
    a, b, c = _build(name, seed=7), _build(name, seed=7), _build(name, seed=8)
    for ta, tb in zip(_tensors(a), _tensors(b), strict=True):
        assert (ta is None and tb is None) or torch.equal(ta, tb)
    assert not torch.equal(a.x_train, c.x_train)


# ============================================================================ split and standardisation


@pytest.mark.parametrize(
    ("builder", "n"),
    [(teacher_regression, 1000), (seed_noise, 100), (teacher_regression, 37)],
)
def test_split_sizes(builder, n):
    torch.manual_seed(0)
    d = builder(n_samples=n, val_fraction=0.2, test_fraction=0.1)
    n_val, n_test = round(0.2 * n), round(0.1 * n)
    assert d.x_val.shape[0] == n_val and d.x_test.shape[0] == n_test and d.n_train == n - n_val - n_test
    assert d.y_train.shape[0] == d.n_train and d.y_val.shape[0] == n_val and d.y_test.shape[0] == n_test


def test_split_is_a_partition():
    torch.manual_seed(0)
    # no standardisation: rows comparable
    d = seed_noise(n_samples=50, n_features=3, val_fraction=0.2, test_fraction=0.2)
    torch.manual_seed(0)
    x = torch.randn(50, 3)
    rows = torch.cat([d.x_train, d.x_val, d.x_test])
    # every original row appears exactly once
    match = (rows[:, None, :] == x[None, :, :]).all(-1)
    assert torch.equal(match.sum(0), torch.ones(50, dtype=torch.long))
    assert torch.equal(match.sum(1), torch.ones(50, dtype=torch.long))


@pytest.mark.parametrize(
    "name",
    ["regression", "regression_nonlinear", "binary", "binary01", "breast_cancer", "diabetes"],
)
def test_features_standardised_with_training_statistics(name):
    d = _build(name)
    mu, sd = d.x_train.mean(0), d.x_train.std(0)
    assert mu.abs().max() < 1e-4
    assert (sd - 1).abs().max() < 1e-4
    # validation is transformed with the training statistics: close to 0, not exactly 0
    val_mu = d.x_val.mean(0)
    assert val_mu.abs().max() < 1.0 and val_mu.abs().max() > 1e-3


# ============================================================================ TensorBatches


def _ids(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.arange(n, dtype=torch.float32).reshape(n, 1).repeat(1, 3)
    return x, x[:, :1] * 10, x[:, 0] * 100


@pytest.mark.parametrize(("n", "bs"), [(100, 32), (64, 32), (10, 3), (7, 1)])
def test_batches_cover_every_sample_once_per_epoch(n, bs):
    x, y, w = _ids(n)
    batches = TensorBatches(x, y, w, bs, shuffle=True)
    assert len(batches) == -(-n // bs)
    torch.manual_seed(0)
    orders = []
    for _ in range(3):
        seen = []
        count = 0
        for xb, yb, wb in batches:
            count += 1
            assert xb.shape[0] <= bs and yb.shape == (xb.shape[0], 1) and wb.shape == (xb.shape[0],)
            # x, y and w stay aligned through the shuffle
            assert torch.equal(yb[:, 0], xb[:, 0] * 10) and torch.equal(wb, xb[:, 0] * 100)
            seen.append(xb[:, 0])
        assert count == len(batches)
        order = torch.cat(seen)
        assert torch.equal(order.sort().values, torch.arange(n, dtype=torch.float32))
        orders.append(order)
    # reshuffled every epoch (seeded above, so this is deterministic)
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])


def test_batches_reshuffled_between_epochs():
    x, y, _ = _ids(100)
    batches = TensorBatches(x, y, None, 10, shuffle=True)
    torch.manual_seed(0)
    first = [xb[:, 0].clone() for xb, _, _ in batches]
    second = [xb[:, 0].clone() for xb, _, _ in batches]
    assert not torch.equal(torch.cat(first), torch.cat(second))
    for _, _, wb in batches:
        assert wb is None


def test_batches_len_and_last_partial_batch():
    x, y, _ = _ids(10)
    sizes = [xb.shape[0] for xb, _, _ in TensorBatches(x, y, None, 4, shuffle=False)]
    assert sizes == [4, 4, 2] and len(TensorBatches(x, y, None, 4, shuffle=False)) == 3


def test_unshuffled_batches_are_in_order():
    x, y, w = _ids(10)
    order = torch.cat([xb[:, 0] for xb, _, _ in TensorBatches(x, y, w, 3, shuffle=False)])
    assert torch.equal(order, torch.arange(10, dtype=torch.float32))


@pytest.mark.parametrize("bs", [None, 10, 50])
def test_full_batch_yields_whole_set_in_order(bs):
    x, y, w = _ids(10)
    batches = TensorBatches(x, y, w, bs, shuffle=True)
    assert len(batches) == 1 and batches.batch_size == 10 and not batches.shuffle
    for _ in range(2):
        (xb, yb, wb), *rest = list(batches)
        assert not rest
        assert torch.equal(xb, x) and torch.equal(yb, y) and torch.equal(wb, w)


def test_tensor_data_batches():
    d = _build("regression", weights="uniform")
    train, val, test = d.train_batches(), d.val_batches(), d.test_batches()
    # validation and test are one batch each (one forward pass), unweighted
    assert len(train) == -(-600 // 64) and len(val) == 1 and len(test) == 1
    assert train.shuffle and not val.shuffle and not test.shuffle
    assert sum(xb.shape[0] for xb, _, _ in train) == 600
    (val_x, _, val_w), (test_x, _, test_w) = next(iter(val)), next(iter(test))
    assert torch.equal(val_x, d.x_val) and torch.equal(test_x, d.x_test)
    assert val_w is None and test_w is None
    seed = _build("seed_10x1")
    (xb, _, wb), *rest = list(seed.train_batches())
    assert not rest and torch.equal(xb, seed.x_train) and wb is None


def test_tensor_data_to_device_keeps_everything():
    d = _build("regression_hetero")
    moved = d.to("cpu")
    for a, b in zip(_tensors(d), _tensors(moved), strict=True):
        assert torch.equal(a, b)
    assert moved.batch_size == d.batch_size and moved.labels == d.labels


# ============================================================================ weights and outliers


def _ols_residuals(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xa = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1).double()
    coef = torch.linalg.lstsq(xa, y.double()).solution
    return (y.double() - xa @ coef)[:, 0]


def test_noise_inverse_weights():
    d = _build("regression_hetero")
    assert d.w_train is not None and d.w_train.shape == (d.n_train,)
    w_all = d.w_train
    assert float(w_all.mean()) == pytest.approx(1.0, rel=1e-4)
    assert (w_all > 0).all() and w_all.std() > 0.5  # heteroscedastic: far from uniform
    # larger weights go with less noisy samples: residuals of a linear fit are smaller there
    r2 = _ols_residuals(d.x_train, d.y_train) ** 2
    high = d.w_train >= d.w_train.median()
    assert float(r2[high].mean()) * 3 < float(r2[~high].mean())
    # and w_i * r_i^2 is roughly constant (w = c / sigma^2): its spread by weight is small
    wr2 = d.w_train.double() * r2
    assert 0.5 < float(wr2[high].mean() / wr2[~high].mean()) < 2.0


def test_uniform_and_no_weights():
    d = _build("regression", weights="uniform")
    assert torch.equal(d.w_train, torch.ones(d.n_train))
    assert _build("regression").w_train is None
    # homoscedastic noise_inverse is uniform too
    d = _build("regression", weights="noise_inverse")
    torch.testing.assert_close(d.w_train, torch.ones(d.n_train))


def test_outlier_fraction_adds_outliers():
    clean = _build("regression", val_fraction=0.0, test_fraction=0.0)
    dirty = _build("regression_outliers", val_fraction=0.0, test_fraction=0.0)
    r_clean = _ols_residuals(clean.x_train, clean.y_train).abs()
    r_dirty = _ols_residuals(dirty.x_train, dirty.y_train).abs()
    # noise 0.1: no clean residual is anywhere near 0.6; outliers have sigma 2
    assert int((r_clean > 0.6).sum()) == 0
    frac = float((r_dirty > 0.6).float().mean())
    assert 0.05 < frac <= 0.1
    assert float(r_dirty.max()) > 10 * float(r_clean.max())


# ============================================================================ bad options


@pytest.mark.parametrize(
    ("builder", "kwargs", "shown"),
    [
        (teacher_regression, {"teacher": "cubic"}, "teacher='cubic'"),
        (teacher_regression, {"noise": -1.0}, "noise=-1.0"),
        (teacher_regression, {"noise": float("inf")}, "noise=inf"),
        (teacher_regression, {"outlier_fraction": 1.5}, "outlier_fraction=1.5"),
        (teacher_regression, {"weights": "inverse"}, "weights='inverse'"),
        (teacher_regression, {"val_fraction": 1.5}, "val_fraction=1.5"),
        (teacher_regression, {"val_fraction": 1.0}, "val_fraction=1.0"),
        (teacher_regression, {"val_fraction": -0.1}, "val_fraction=-0.1"),
        (teacher_regression, {"test_fraction": 1.0}, "test_fraction=1.0"),
        (teacher_regression, {"test_fraction": 0.0}, "test_fraction=0.0"),
        (teacher_regression, {"val_fraction": 0.0}, "test_fraction=0.2"),
        (teacher_regression, {"val_fraction": 0.6, "test_fraction": 0.5}, "val_fraction + test_fraction=1.1"),
        (teacher_regression, {"split_seed": "a"}, "split_seed='a'"),
        (teacher_regression, {"n_samples": 2}, "leave an empty split"),
        (teacher_regression, {"task": "binary"}, "task='binary'"),
        (sklearn_dataset, {"dataset": "diabetes", "task": "binary"}, "task='binary'"),
        (teacher_regression, {"batch_size": 0}, "batch_size=0"),
        (teacher_binary, {"labels": "yes"}, "labels='yes'"),
        (teacher_binary, {"flip_rate": 0.9}, "flip_rate=0.9"),
        (teacher_binary, {"batch_size": 0}, "batch_size=0"),
        (seed_noise, {"task": "multiclass"}, "task='multiclass'"),
        (seed_noise, {"task": "binary", "labels": "yes"}, "labels='yes'"),
        (sklearn_dataset, {"dataset": "iris"}, "dataset='iris'"),
        (sklearn_dataset, {"dataset": "breast_cancer", "labels": "yes"}, "labels='yes'"),
    ],
)
def test_bad_options_raise_data_config_error(builder, kwargs, shown):
    with pytest.raises(DataConfigError) as exc:
        builder(**kwargs)
    msg = str(exc.value)
    assert shown in msg and "accepted:" in msg


@pytest.mark.parametrize(
    ("name", "override", "shown"),
    [
        ("regression", {"teacher": "cubic"}, "teacher='cubic'"),
        ("binary", {"labels": "yes"}, "labels='yes'"),
        ("regression", {"val_fraction": 1.5}, "val_fraction=1.5"),
        ("binary01", {"batch_size": 0}, "batch_size=0"),
        ("binary", {"flip_rate": 0.9}, "flip_rate=0.9"),
    ],
)
def test_bad_options_from_config(name, override, shown):
    with pytest.raises(Exception) as exc:  # hydra wraps errors raised by _target_
        _build(name, **override)
    err = exc.value
    while not isinstance(err, DataConfigError) and err.__cause__ is not None:
        err = err.__cause__
    assert isinstance(err, DataConfigError)
    assert shown in str(err) and f"data={name}" in str(err)


# ============================================================================ models


@pytest.mark.parametrize(("n_in", "n_out"), [(1, 1), (10, 1), (30, 2)])
def test_linear_model(n_in, n_out):
    m = models.linear(n_in, n_out)
    assert isinstance(m, nn.Linear) and m.in_features == n_in and m.out_features == n_out
    assert m(torch.zeros(4, n_in)).shape == (4, n_out)
    assert models.linear(n_in, n_out, bias=False).bias is None


@pytest.mark.parametrize("activation", sorted(models.ACTIVATIONS))
def test_mlp_model(activation):
    m = models.mlp(10, 1, hidden=[16, 8], activation=activation, dropout=0.1)
    assert m(torch.zeros(5, 10)).shape == (5, 1)
    names = [n for n, _ in m.named_children()]
    assert names == ["fc0", "act0", "drop0", "fc1", "act1", "drop1", "out"]
    assert m.fc0.in_features == 10 and m.fc0.out_features == 16 and m.out.out_features == 1
    assert isinstance(m.act0, models.ACTIVATIONS[activation])


def test_mlp_defaults_and_no_dropout_layers():
    m = models.mlp(3, 2)
    assert [n for n, _ in m.named_children()] == ["fc0", "act0", "fc1", "act1", "out"]
    assert m.fc0.out_features == 64 and m.fc1.out_features == 64 and m.out.out_features == 2


@pytest.mark.parametrize("name", ["linear", "mlp"])
def test_model_configs_instantiate_with_data_sizes(name):
    cfg = OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml")
    d = _build("breast_cancer")
    m = instantiate(cfg, in_features=d.in_features, out_features=d.out_features)
    assert m(d.x_train[:4]).shape == (4, 1)


def test_mlp_rejects_bad_activation():
    with pytest.raises(models.ModelConfigError) as exc:
        models.mlp(10, 1, activation="swish")
    assert "'swish'" in str(exc.value) and "relu" in str(exc.value) and "accepted" in str(exc.value)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_mlp_rejects_bad_dropout(bad):
    with pytest.raises(models.ModelConfigError) as exc:
        models.mlp(10, 1, dropout=bad)
    assert repr(bad) in str(exc.value) and "[0, 1)" in str(exc.value)


@pytest.mark.parametrize("bad", [[0], [16, -1]])
def test_mlp_rejects_bad_hidden(bad):
    with pytest.raises(models.ModelConfigError, match="hidden"):
        models.mlp(10, 1, hidden=bad)


# ============================================================================ train / val / test splits


def _rows(x: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(r) for r in x.tolist()}


@pytest.mark.parametrize("name", ["binary", "breast_cancer"])
def test_binary_splits_are_stratified(name):
    d = _build(name)
    share = float((torch.cat([d.y_train, d.y_val, d.y_test]) == 1).float().mean())
    for y in (d.y_train, d.y_val, d.y_test):
        assert abs(float((y == 1).float().mean()) - share) < 0.01  # each class split in the same proportions


def test_split_seed_defaults_to_seed_and_fixes_the_split():
    """Real data: the rows are fixed, so the split alone decides which rows are held out."""
    a, b, c = _build("diabetes", seed=3), _build("diabetes", seed=3), _build("diabetes", seed=4)
    assert torch.equal(a.y_val, b.y_val) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_val, c.y_val)
    # an explicit split_seed wins over the run's seed: another seed, the same rows held out
    d = _build("diabetes", seed=4, split_seed=3)
    assert torch.equal(a.y_val, d.y_val) and torch.equal(a.y_test, d.y_test)
    # and the split does not depend on what the global RNG drew before
    torch.manual_seed(123)
    torch.randn(100)
    e = sklearn_dataset("diabetes", split_seed=3)
    assert torch.equal(a.x_test, e.x_test)


def test_splits_are_disjoint():
    d = _build("breast_cancer")
    tr, va, te = _rows(d.x_train), _rows(d.x_val), _rows(d.x_test)
    assert len(tr) + len(va) + len(te) == 569
    assert not (tr & va) and not (tr & te) and not (va & te)


def test_data_weights_are_estimated_on_the_train_split_only():
    """Changing every val/test target changes no training weight (real data, estimated noise)."""
    from losslab.data.splits import sample_weights

    d = _build("diabetes", weights="noise_inverse")
    assert d.w_train is not None and d.w_train.shape == (d.n_train,)
    # the weights are exactly those estimated from the train rows alone
    torch.testing.assert_close(d.w_train, sample_weights("noise_inverse", d.x_train, d.y_train, "diabetes"))
    # and val/test batches carry no weights at all
    assert all(w is None for _, _, w in d.val_batches()) and all(w is None for _, _, w in d.test_batches())


def test_with_labels_gives_each_binary_loss_its_domain():
    d = _build("breast_cancer")  # stored as {-1,+1}
    z = d.with_labels("01")
    assert z.labels == "01"
    for a, b in ((d.y_train, z.y_train), (d.y_val, z.y_val), (d.y_test, z.y_test)):
        assert set(b.unique().tolist()) == {0.0, 1.0}
        assert torch.equal(b == 1, a == 1)  # same positives
    back = z.with_labels("pm1")
    assert torch.equal(back.y_test, d.y_test) and back.labels == "pm1"
    assert d.with_labels("real") is d and d.with_labels("pm1") is d
    reg = _build("regression")
    assert reg.with_labels("01") is reg  # regression targets are never touched
