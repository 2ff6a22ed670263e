"""Built-in losses: values against hand-written formulas, input validation, config defaults.

Every reference value is written out independently here, per element, with numpy or plain
torch ops, never by calling the loss under test a second way.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from losslab import CONF_DIR
from losslab.data import corruption
from losslab.losses import (
    MSE,
    BCEWithLogits,
    Focal,
    Hinge,
    Huber,
    LogCosh,
    LossInputError,
    SigmoidWeightedL1,
    SquaredHinge,
    WeightedMSE,
)

SEED_WEIGHTS = [1, 2, 1, 1, 3, 1, 1, 2, 1, 1]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reg(n: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1) predictions and targets, as the seed's regression examples produce."""
    g = _gen(seed)
    return torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g)


def _pm1(n: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    scores = 2.0 * torch.randn(n, generator=g)
    y = torch.tensor([1.0, -1.0] * (n // 2))  # both classes present
    return scores, y


def _zo(n: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    scores, y = _pm1(n, seed)
    return scores, (y + 1.0) / 2.0


def _close(value: torch.Tensor, expected: float, tol: float = 1e-6) -> None:
    assert value.dim() == 0
    assert float(value.detach()) == pytest.approx(expected, rel=tol, abs=tol)


# ============================================================================ values vs formulas


def test_weighted_mse_matches_per_sample_formula_and_not_the_seed_broadcast():
    y_pred, y_true = _reg(10)
    p, t = y_pred.numpy()[:, 0].astype(np.float64), y_true.numpy()[:, 0].astype(np.float64)
    expected = sum(w * (p[i] - t[i]) ** 2 for i, w in enumerate(SEED_WEIGHTS)) / 10

    loss = WeightedMSE(weights=SEED_WEIGHTS)(y_pred, y_true)
    _close(loss, expected, 1e-5)

    # The seed's own expression: (10,) weights times (10, 1) errors broadcasts to (10, 10).
    w = torch.tensor(SEED_WEIGHTS)
    seed_terms = w * (y_pred - y_true) ** 2
    assert seed_terms.shape == (10, 10)
    seed_value = float(torch.mean(seed_terms))
    # What it actually computes: mean(w) * mean(e^2), every error times every weight.
    assert seed_value == pytest.approx(np.mean(SEED_WEIGHTS) * np.mean((p - t) ** 2), rel=1e-5)
    assert abs(seed_value - float(loss)) > 1e-3
    assert seed_value != pytest.approx(expected, rel=1e-3)


def test_weighted_mse_normalize_divides_by_sum_of_weights():
    y_pred, y_true = _reg(10)
    p, t = y_pred.numpy()[:, 0].astype(np.float64), y_true.numpy()[:, 0].astype(np.float64)
    num = sum(w * (p[i] - t[i]) ** 2 for i, w in enumerate(SEED_WEIGHTS))
    loss = WeightedMSE(weights=SEED_WEIGHTS, normalize=True)(y_pred, y_true)
    _close(loss, num / sum(SEED_WEIGHTS), 1e-5)


def test_weighted_mse_without_any_weights_is_mse():
    y_pred, y_true = _reg(10)
    e = (y_pred - y_true).numpy().astype(np.float64)
    _close(WeightedMSE()(y_pred, y_true), float(np.mean(e**2)), 1e-5)
    _close(WeightedMSE(normalize=True)(y_pred, y_true), float(np.mean(e**2)), 1e-5)


def test_weighted_mse_weights_from_the_data_for_minibatches():
    y_pred, y_true = _reg(12, seed=3)
    w = torch.rand(12, generator=_gen(4)) * 3
    loss_fn = WeightedMSE()
    for start in range(0, 12, 4):  # minibatches of 4 carry their own weights
        sl = slice(start, start + 4)
        p, t, wb = y_pred[sl, 0].double(), y_true[sl, 0].double(), w[sl].double()
        expected = sum(float(wb[i]) * float(p[i] - t[i]) ** 2 for i in range(4)) / 4
        _close(loss_fn(y_pred[sl], y_true[sl], w[sl]), expected, 1e-5)
        # (N, 1) data weights are accepted too
        _close(loss_fn(y_pred[sl], y_true[sl], w[sl].reshape(-1, 1)), expected, 1e-5)
        norm = sum(float(wb[i]) * float(p[i] - t[i]) ** 2 for i in range(4)) / float(wb.sum())
        _close(WeightedMSE(normalize=True)(y_pred[sl], y_true[sl], w[sl]), norm, 1e-5)


def test_weighted_mse_config_and_data_weights_multiply():
    y_pred, y_true = _reg(10)
    dw = torch.linspace(0.5, 2.0, 10)
    p, t = y_pred[:, 0].double(), y_true[:, 0].double()
    expected = sum(SEED_WEIGHTS[i] * float(dw[i]) * float(p[i] - t[i]) ** 2 for i in range(10)) / 10
    _close(WeightedMSE(weights=SEED_WEIGHTS)(y_pred, y_true, dw), expected, 1e-5)


def test_weighted_mse_gradient_is_per_sample():
    y_pred, y_true = _reg(10)
    y_pred.requires_grad_(True)
    WeightedMSE(weights=SEED_WEIGHTS)(y_pred, y_true).backward()
    expected = 2 * torch.tensor(SEED_WEIGHTS, dtype=torch.float32) * (y_pred - y_true).detach()[:, 0] / 10
    torch.testing.assert_close(y_pred.grad[:, 0], expected)


@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_hinge_matches_seed_formula(margin):
    scores, y = _pm1(10)
    s, t = scores.numpy().astype(np.float64), y.numpy().astype(np.float64)
    expected = np.mean([max(0.0, 1.0 - t[i] * s[i] + margin) for i in range(10)])
    loss = Hinge(margin=margin)(scores, y) if margin != 1.0 else Hinge()(scores, y)
    _close(loss, float(expected), 1e-5)
    # the seed's own expression, with view(-1) as its training loop does
    seed = torch.mean(torch.max(torch.tensor(0.0), 1 - y.view(-1) * scores.view(-1) + margin))
    _close(loss, float(seed), 1e-6)


def test_hinge_default_margin_is_one():
    assert Hinge().margin == 1.0
    # at y*f = 2 (= 1 + margin) the hinge is exactly zero; at y*f = 1 it is 1
    _close(Hinge()(torch.tensor([2.0, -1.0]), torch.tensor([1.0, -1.0])), 0.5)


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_squared_hinge_matches_formula(margin):
    scores, y = _pm1(10, seed=1)
    s, t = scores.numpy().astype(np.float64), y.numpy().astype(np.float64)
    expected = np.mean([max(0.0, 1.0 - t[i] * s[i] + margin) ** 2 for i in range(10)])
    loss = SquaredHinge(margin=margin)(scores, y) if margin else SquaredHinge()(scores, y)
    _close(loss, float(expected), 1e-5)


def test_sigmoid_weighted_l1_matches_seed_formula():
    y_pred, y_true = _reg(100, seed=2)
    e = np.abs((y_pred - y_true).numpy().astype(np.float64))
    expected = np.mean(1.0 / (1.0 + np.exp(-e)) * e)
    loss = SigmoidWeightedL1()(y_pred, y_true)
    _close(loss, float(expected), 1e-5)
    diff = torch.abs(y_pred - y_true)  # the seed's CustomLoss
    _close(loss, float(torch.mean(torch.sigmoid(diff) * diff)), 1e-6)


def test_mse_matches_formula():
    y_pred, y_true = _reg(10)
    p, t = y_pred.numpy()[:, 0].astype(np.float64), y_true.numpy()[:, 0].astype(np.float64)
    _close(MSE()(y_pred, y_true), sum((p[i] - t[i]) ** 2 for i in range(10)) / 10, 1e-5)


@pytest.mark.parametrize("delta", [1.0, 0.3, 2.5])
def test_huber_matches_formula(delta):
    y_pred = torch.linspace(-4, 4, 17).reshape(-1, 1)
    y_true = torch.zeros_like(y_pred)
    e = y_pred.numpy()[:, 0].astype(np.float64)
    per = [0.5 * v * v if abs(v) <= delta else delta * (abs(v) - 0.5 * delta) for v in e]
    _close(Huber(delta=delta)(y_pred, y_true), float(np.mean(per)), 1e-6)


def test_log_cosh_matches_formula_and_does_not_overflow():
    e = torch.linspace(-5, 5, 21)
    expected = np.mean([math.log(math.cosh(v)) for v in e.tolist()])
    _close(LogCosh()(e, torch.zeros(21)), float(expected), 1e-5)

    for big in (1000.0, -1000.0):
        y_pred = torch.tensor([big], requires_grad=True)
        value = LogCosh()(y_pred, torch.zeros(1))
        assert torch.isfinite(value)
        # log cosh(e) = |e| - log 2 up to exp(-2|e|)
        _close(value, abs(big) - math.log(2.0), 1e-6)
        value.backward()
        assert torch.isfinite(y_pred.grad).all()
        assert float(y_pred.grad) == pytest.approx(math.copysign(1.0, big))
    # the naive form overflows: the reason for the softplus rewrite
    assert not torch.isfinite(torch.log(torch.cosh(torch.tensor(1000.0))))


@pytest.mark.parametrize("pos_weight", [1.0, 3.0])
def test_bce_with_logits_matches_formula(pos_weight):
    z, y = _zo(10, seed=5)
    zs, ys = z.numpy().astype(np.float64), y.numpy().astype(np.float64)

    def sig(v):
        return 1.0 / (1.0 + math.exp(-v))

    per = [
        -(pos_weight * ys[i] * math.log(sig(zs[i])) + (1 - ys[i]) * math.log(1 - sig(zs[i])))
        for i in range(10)
    ]
    loss = BCEWithLogits(pos_weight=pos_weight)(z, y)
    _close(loss, float(np.mean(per)), 1e-5)


def _focal_reference(z: float, y: float, gamma: float, alpha: float | None) -> float:
    p = 1.0 / (1.0 + math.exp(-z))
    p_t = p if y == 1 else 1 - p
    a_t = 1.0 if alpha is None else (alpha if y == 1 else 1 - alpha)
    return -a_t * (1 - p_t) ** gamma * math.log(p_t)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_focal_matches_formula(gamma, alpha):
    z, y = _zo(10, seed=6)
    expected = np.mean([_focal_reference(float(z[i]), float(y[i]), gamma, alpha) for i in range(10)])
    _close(Focal(gamma=gamma, alpha=alpha)(z, y), float(expected), 1e-5)


def test_focal_gamma_zero_equals_bce():
    z, y = _zo(10, seed=7)
    torch.testing.assert_close(Focal(gamma=0.0)(z, y), BCEWithLogits()(z, y))
    # and alpha=0.5 is half of it
    torch.testing.assert_close(Focal(gamma=0.0, alpha=0.5)(z, y), 0.5 * BCEWithLogits()(z, y))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_focal_values_and_gradients_finite_at_extreme_logits(gamma, alpha):
    logits = [-100.0, -10.0, 0.0, 10.0, 100.0]
    z = torch.tensor(logits * 2, requires_grad=True)
    y = torch.tensor([0.0] * 5 + [1.0] * 5)
    loss_fn = Focal(gamma=gamma, alpha=alpha)
    value = loss_fn(z, y)
    assert torch.isfinite(value)
    value.backward()
    assert torch.isfinite(z.grad).all(), z.grad
    # each element alone, too (no averaging that could hide an inf/NaN in a sum)
    for zi, yi in zip(logits * 2, y.tolist(), strict=True):
        zt = torch.tensor([zi], requires_grad=True)
        v = loss_fn(zt, torch.tensor([yi]))
        v.backward()
        assert torch.isfinite(v) and torch.isfinite(zt.grad).all(), (zi, yi, float(v.detach()), zt.grad)
        assert float(v.detach()) >= 0.0


# ============================================================================ shapes


@pytest.mark.parametrize(
    ("pred_shape", "true_shape"), [((10, 1), (10, 2)), ((10,), (5,)), ((10, 1), (5, 1)), ((10, 2), (10,))]
)
def test_shape_mismatch_raises(pred_shape, true_shape):
    with pytest.raises(LossInputError) as exc:
        MSE()(torch.zeros(pred_shape), torch.zeros(true_shape))
    msg = str(exc.value)
    assert str(pred_shape) in msg and str(true_shape) in msg
    assert "(N, 1) against (N,)" in msg


def _all_losses_with_data():
    reg, pm1, zo = _reg(8, seed=9), _pm1(8, seed=9), _zo(8, seed=9)
    return [
        (MSE(), reg),
        (WeightedMSE(), reg),
        (WeightedMSE(weights=[1, 2, 1, 1, 3, 1, 1, 2]), reg),
        (SigmoidWeightedL1(), reg),
        (Huber(), reg),
        (LogCosh(), reg),
        (Hinge(), pm1),
        (SquaredHinge(), pm1),
        (BCEWithLogits(), zo),
        (Focal(), zo),
    ]


@pytest.mark.parametrize(("loss_fn", "data"), _all_losses_with_data(), ids=lambda v: type(v).__name__)
def test_squeeze_n1_against_n_gives_same_value_and_scalar(loss_fn, data):
    y_pred, y_true = (t.reshape(-1) for t in data)
    col_p, col_t = y_pred.reshape(-1, 1), y_true.reshape(-1, 1)
    ref = loss_fn(y_pred, y_true)
    assert ref.dim() == 0 and torch.isfinite(ref)
    for p, t in ((col_p, y_true), (y_pred, col_t), (col_p, col_t)):
        out = loss_fn(p, t)
        assert out.shape == ()
        torch.testing.assert_close(out, ref)


@pytest.mark.parametrize(("loss_fn", "data"), _all_losses_with_data(), ids=lambda v: type(v).__name__)
def test_every_loss_returns_zero_dim_tensor_with_gradient(loss_fn, data):
    y_pred, y_true = data
    y_pred = y_pred.clone().requires_grad_(True)
    out = loss_fn(y_pred, y_true)
    assert isinstance(out, torch.Tensor) and out.dim() == 0
    out.backward()
    assert y_pred.grad is not None and torch.isfinite(y_pred.grad).all()


# ============================================================================ label domains


@pytest.mark.parametrize("cls", [Hinge, SquaredHinge])
def test_margin_losses_reject_01_labels(cls):
    z, y = _zo(10)
    with pytest.raises(LossInputError) as exc:
        cls()(z, y)
    msg = str(exc.value)
    assert "labels {0, 1}" in msg and "accepted: {-1, +1}" in msg and "map_labels" in msg


def test_hinge_rejects_half_label():
    with pytest.raises(LossInputError) as exc:
        Hinge()(torch.zeros(3), torch.tensor([1.0, -1.0, 0.5]))
    assert "0.5" in str(exc.value) and "{-1, +1}" in str(exc.value)
    # map_labels does not turn 0.5 into anything valid
    with pytest.raises(LossInputError, match=r"0\.5"):
        Hinge(map_labels=True)(torch.zeros(3), torch.tensor([1.0, -1.0, 0.5]))


@pytest.mark.parametrize("cls", [BCEWithLogits, Focal])
def test_logit_losses_reject_pm1_labels(cls):
    z, y = _pm1(10)
    with pytest.raises(LossInputError) as exc:
        cls()(z, y)
    msg = str(exc.value)
    assert "labels {-1, 1}" in msg and "accepted: {0, 1}" in msg and "map_labels" in msg


@pytest.mark.parametrize("cls", [Hinge, SquaredHinge])
def test_map_labels_01_to_pm1(cls):
    z, y_pm1 = _pm1(10, seed=11)
    y01 = (y_pm1 + 1) / 2
    torch.testing.assert_close(cls(map_labels=True)(z, y01), cls()(z, y_pm1))
    # pm1 labels pass through unchanged
    torch.testing.assert_close(cls(map_labels=True)(z, y_pm1), cls()(z, y_pm1))


@pytest.mark.parametrize("cls", [BCEWithLogits, Focal])
def test_map_labels_pm1_to_01(cls):
    z, y01 = _zo(10, seed=12)
    y_pm1 = y01 * 2 - 1
    torch.testing.assert_close(cls(map_labels=True)(z, y_pm1), cls()(z, y01))
    torch.testing.assert_close(cls(map_labels=True)(z, y01), cls()(z, y01))


def test_map_labels_value_equals_hand_computed_mapped_hinge():
    z = torch.tensor([0.3, -1.2, 2.0, 0.0])
    y01 = torch.tensor([1.0, 0.0, 0.0, 1.0])
    mapped = [1.0, -1.0, -1.0, 1.0]
    expected = np.mean([max(0.0, 2.0 - mapped[i] * float(z[i])) for i in range(4)])
    _close(Hinge(map_labels=True)(z, y01), float(expected), 1e-6)


@pytest.mark.parametrize("cls", [MSE, WeightedMSE, SigmoidWeightedL1, Huber, LogCosh])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_targets_rejected_by_real_domain_losses(cls, bad):
    y_true = torch.tensor([0.0, bad, 1.0])
    with pytest.raises(LossInputError) as exc:
        cls()(torch.zeros(3), y_true)
    msg = str(exc.value)
    assert ("nan" if math.isnan(bad) else "inf") in msg.lower() and "any finite real number" in msg
    assert "1 of 3 labels is" in msg  # counted, not hidden in a list of values (issue 26, item 13)


# ============================================================================ weights


def test_config_weights_wrong_length_vs_batch():
    y_pred, y_true = _reg(5)
    with pytest.raises(LossInputError) as exc:
        WeightedMSE(weights=SEED_WEIGHTS)(y_pred, y_true)
    msg = str(exc.value)
    assert "10 entries" in msg and "5 samples" in msg and "one weight per sample" in msg


@pytest.mark.parametrize("loss_fn", [MSE(), WeightedMSE(), Huber()], ids=lambda v: type(v).__name__)
def test_data_weights_wrong_length_vs_batch(loss_fn):
    y_pred, y_true = _reg(10)
    with pytest.raises(LossInputError) as exc:
        loss_fn(y_pred, y_true, torch.ones(3))
    msg = str(exc.value)
    assert "got 3 weights" in msg and "batch of 10 samples" in msg and "shape (10,)" in msg


@pytest.mark.parametrize(("bad", "shown"), [(-1.0, "-1"), (float("nan"), "nan"), (float("inf"), "inf")])
def test_bad_weight_values_rejected(bad, shown):
    w = list(SEED_WEIGHTS)
    w[4] = bad
    with pytest.raises(LossInputError) as exc:  # in the config
        WeightedMSE(weights=w)
    assert shown in str(exc.value) and "finite and >= 0" in str(exc.value)
    y_pred, y_true = _reg(10)
    for loss_fn in (WeightedMSE(), MSE()):  # with the data
        with pytest.raises(LossInputError) as exc:
            loss_fn(y_pred, y_true, torch.tensor(w, dtype=torch.float32))
        assert shown in str(exc.value) and "finite and >= 0" in str(exc.value)


@pytest.mark.parametrize("bad", [["a"], [1, "x", 2], [None], 3, "123"])
def test_non_numeric_weights_rejected(bad):
    with pytest.raises(LossInputError) as exc:
        WeightedMSE(weights=bad)
    msg = str(exc.value)
    assert repr(bad) in msg and "list of numbers" in msg


def test_zero_weights_are_allowed():
    y_pred, y_true = _reg(10)
    w = [0.0] * 9 + [1.0]
    expected = float((y_pred[9, 0] - y_true[9, 0]) ** 2) / 10
    _close(WeightedMSE(weights=w)(y_pred, y_true), expected, 1e-5)


# ============================================================================ hyperparameters


@pytest.mark.parametrize("cls", [Hinge, SquaredHinge])
@pytest.mark.parametrize(("bad", "shown"), [("abc", "'abc'"), (float("nan"), "nan"), (float("inf"), "inf")])
def test_bad_margin_rejected(cls, bad, shown):
    with pytest.raises(LossInputError) as exc:
        cls(margin=bad)
    msg = str(exc.value)
    assert "margin" in msg and shown in msg and "finite number" in msg


@pytest.mark.parametrize("bad", [0, 0.0, -1.0, float("nan"), "abc"])
def test_bad_huber_delta_rejected(bad):
    with pytest.raises(LossInputError) as exc:
        Huber(delta=bad)
    msg = str(exc.value)
    assert "delta" in msg and repr(bad) in msg and "> 0" in msg


@pytest.mark.parametrize("bad", [-0.5, -1, float("nan"), "two"])
def test_bad_focal_gamma_rejected(bad):
    with pytest.raises(LossInputError) as exc:
        Focal(gamma=bad)
    msg = str(exc.value)
    assert "gamma" in msg and repr(bad) in msg and ">= 0" in msg


@pytest.mark.parametrize("bad", [1.5, -0.1])
def test_bad_focal_alpha_rejected(bad):
    with pytest.raises(LossInputError) as exc:
        Focal(alpha=bad)
    msg = str(exc.value)
    assert "alpha" in msg and repr(bad) in msg


def test_focal_alpha_bounds_accepted():
    for a in (0.0, 1.0, None):
        assert Focal(alpha=a).alpha == a


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "x"])
def test_bad_pos_weight_rejected(bad):
    with pytest.raises(LossInputError) as exc:
        BCEWithLogits(pos_weight=bad)
    assert "pos_weight" in str(exc.value) and repr(bad) in str(exc.value)


# ============================================================================ check_values=False


def test_check_values_false_skips_value_checks():
    z, y01 = _zo(10)
    # labels outside the domain: computed, not rejected (the caller validated up front)
    out = Hinge(check_values=False)(z, y01)
    assert out.dim() == 0 and torch.isfinite(out)
    expected = np.mean([max(0.0, 2.0 - float(y01[i]) * float(z[i])) for i in range(10)])
    _close(out, float(expected), 1e-5)
    assert BCEWithLogits(check_values=False)(z, y01 * 2 - 1).dim() == 0
    # NaN target propagates instead of raising
    assert torch.isnan(MSE(check_values=False)(torch.zeros(2), torch.tensor([0.0, float("nan")])))
    # data weights are not validated
    y_pred, y_true = _reg(10)
    neg = -torch.ones(10)
    assert MSE(check_values=False)(y_pred, y_true, neg).dim() == 0
    assert WeightedMSE(check_values=False)(y_pred, y_true, neg).dim() == 0
    # prepare_targets passes values through (but still maps them when asked)
    torch.testing.assert_close(Hinge(check_values=False).prepare_targets(y01), y01)
    torch.testing.assert_close(Hinge(map_labels=True, check_values=False).prepare_targets(y01), y01 * 2 - 1)


@pytest.mark.parametrize(
    "loss_fn",
    [MSE(check_values=False), Hinge(check_values=False), Focal(check_values=False)],
    ids=lambda v: type(v).__name__,
)
def test_check_values_false_still_checks_shapes(loss_fn):
    with pytest.raises(LossInputError, match=r"\(10, 1\).*\(10, 2\)"):
        loss_fn(torch.zeros(10, 1), torch.zeros(10, 2))
    with pytest.raises(LossInputError, match=r"\(10,\).*\(5,\)"):
        loss_fn(torch.zeros(10), torch.zeros(5))


def test_prepare_targets_validates_a_whole_dataset():
    with pytest.raises(LossInputError, match="accepted: \\{-1, \\+1\\}"):
        Hinge().prepare_targets(torch.tensor([[0.0], [1.0]]))
    torch.testing.assert_close(
        Hinge(map_labels=True).prepare_targets(torch.tensor([[0.0], [1.0]])), torch.tensor([[-1.0], [1.0]])
    )


# ============================================================================ configs


LOSS_NAMES = sorted(p.stem for p in (CONF_DIR / "loss").glob("*.yaml"))


def test_loss_configs_found():
    assert {"mse", "weighted_mse", "hinge", "focal", "bce_with_logits", "huber"} <= set(LOSS_NAMES)


def _compose(overrides):
    with initialize_config_dir(version_base=None, config_dir=str(CONF_DIR)):
        return compose(config_name="train", overrides=overrides)


def _data(cfg):
    """The data a config builds, without the label corruption build applies afterwards."""
    node, _ = corruption.split_data_config(cfg.data)
    return instantiate(node)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_loss_config_default_data_is_in_its_domain(name):
    cfg = _compose([f"loss={name}"])
    torch.manual_seed(0)
    data = _data(cfg)
    loss_fn = instantiate(cfg.loss)
    assert loss_fn.__class__.__module__.startswith("losslab.losses")
    # the whole training set passes the loss's own label check
    loss_fn.prepare_targets(data.y_train)
    if data.task == "multiclass":  # (N, K) logits against (N,) class indices
        y_pred = torch.zeros(data.n_train, data.out_features, requires_grad=True)
    else:
        y_pred = torch.zeros_like(data.y_train, requires_grad=True)
    out = loss_fn(y_pred, data.y_train, data.w_train)
    assert out.dim() == 0 and torch.isfinite(out)
    out.backward()
    assert torch.isfinite(y_pred.grad).all()
    # and a first minibatch, as training sees it
    xb, yb, wb = next(iter(data.train_batches()))
    assert torch.isfinite(loss_fn(torch.zeros(xb.shape[0], data.out_features), yb, wb))


def test_incompatible_data_raises_on_prepare_targets():
    cfg = _compose(["loss=hinge", "data=binary01"])
    torch.manual_seed(0)
    data = _data(cfg)
    loss_fn = instantiate(cfg.loss)
    with pytest.raises(LossInputError) as exc:
        loss_fn.prepare_targets(data.y_train)
    assert "labels {0, 1}" in str(exc.value) and "map_labels" in str(exc.value)
    # the hint works
    cfg = _compose(["loss=hinge", "data=binary01", "loss.map_labels=true"])
    loss_fn = instantiate(cfg.loss)
    assert set(loss_fn.prepare_targets(data.y_train).unique().tolist()) == {-1.0, 1.0}


def test_weighted_mse_config_seed_weights_via_hydra():
    cfg = _compose(
        ["loss=weighted_mse", "data=seed_10x1", f"loss.weights=[{','.join(map(str, SEED_WEIGHTS))}]"]
    )
    torch.manual_seed(0)
    data = _data(cfg)
    loss_fn = instantiate(cfg.loss)
    y_pred = torch.zeros_like(data.y_train)
    t = data.y_train[:, 0].double()
    expected = sum(SEED_WEIGHTS[i] * float(t[i]) ** 2 for i in range(10)) / 10
    _close(loss_fn(y_pred, data.y_train, data.w_train), expected, 1e-5)
