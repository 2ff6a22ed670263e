"""Multiclass losses (losslab.losses.multiclass): values against formulas written out here, stability,
gradients, the special cases that tie them together, and the input and hyperparameter checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from losslab import CONF_DIR
from losslab.losses.base import DOMAINS, LossInputError
from losslab.losses.multiclass import (
    GCE,
    MAE,
    NCE_RCE,
    SCE,
    CrossEntropy,
    LabelSmoothing,
    MulticlassFocal,
    MulticlassLossBase,
)

F64 = torch.float64


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    """Softmax of each row, one sample at a time (an independent reference for the losses)."""
    out = np.empty_like(z)
    for i, row in enumerate(z):
        e = np.exp(row - row.max())
        out[i] = e / e.sum()
    return out


def _ref(kind: str, z: np.ndarray, y: np.ndarray, **hp: float) -> float:
    """The loss from its paper's formula, with explicit loops over samples and classes."""
    p = _softmax_rows(z)
    n, k = z.shape
    total = 0.0
    for i in range(n):
        py = p[i, y[i]]
        onehot = [1.0 if c == y[i] else 0.0 for c in range(k)]
        if kind == "ce":
            li = -math.log(py)
        elif kind == "ls":
            eps = hp["eps"]
            li = -sum(((1 - eps) * onehot[c] + eps / k) * math.log(p[i, c]) for c in range(k))
        elif kind == "focal":
            li = -((1 - py) ** hp["gamma"]) * math.log(py)
        elif kind == "mae":
            li = sum(abs(p[i, c] - onehot[c]) for c in range(k))
        elif kind == "gce":
            li = (1 - py ** hp["q"]) / hp["q"]
        else:  # sce / nce_rce: RCE = -sum_k p_k log(onehot_k) with log 0 := A
            rce = -sum(p[i, c] * (0.0 if onehot[c] else hp["A"]) for c in range(k))
            if kind == "sce":
                li = hp["alpha"] * -math.log(py) + hp["beta"] * rce
            else:
                nce = -math.log(py) / -sum(math.log(p[i, c]) for c in range(k))
                li = hp["alpha"] * nce + hp["beta"] * rce
        total += li
    return total / n


CASES = [
    ("ce", CrossEntropy, {}),
    ("ls", LabelSmoothing, {"eps": 0.1}),
    ("ls", LabelSmoothing, {"eps": 0.4}),
    ("focal", MulticlassFocal, {"gamma": 2.0}),
    ("focal", MulticlassFocal, {"gamma": 0.5}),
    ("mae", MAE, {}),
    ("gce", GCE, {"q": 0.7}),
    ("gce", GCE, {"q": 0.3}),
    ("sce", SCE, {"alpha": 0.1, "beta": 1.0, "A": -4.0}),
    ("sce", SCE, {"alpha": 0.5, "beta": 2.0, "A": -6.0}),
    ("nce_rce", NCE_RCE, {"alpha": 1.0, "beta": 10.0, "A": -4.0}),
    ("nce_rce", NCE_RCE, {"alpha": 2.0, "beta": 0.5, "A": -4.0}),
]
IDS = [f"{cls.__name__}-{'-'.join(f'{k}{v:g}' for k, v in hp.items()) or 'default'}" for _, cls, hp in CASES]
ALL = [CrossEntropy, LabelSmoothing, MulticlassFocal, MAE, GCE, SCE, NCE_RCE]


def _inputs(n: int = 7, k: int = 5, scale: float = 2.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, k, generator=gen, dtype=F64)
    labels = torch.randint(0, k, (n,), generator=gen)
    return logits, labels


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize(("kind", "cls", "hp"), CASES, ids=IDS)
def test_value_matches_formula(kind: str, cls: type, hp: dict) -> None:
    for seed in range(3):
        logits, labels = _inputs(seed=seed)
        got = cls(**hp)(logits, labels).item()
        assert got == pytest.approx(_ref(kind, logits.numpy(), labels.numpy(), **hp), rel=1e-10, abs=1e-12)


def test_defaults_are_the_papers() -> None:
    assert LabelSmoothing().eps == 0.1
    assert MulticlassFocal().gamma == 2.0
    assert GCE().q == 0.7
    sce = SCE()
    assert (sce.alpha, sce.beta, sce.A) == (0.1, 1.0, -4.0)
    nce_rce = NCE_RCE()
    assert (nce_rce.alpha, nce_rce.beta, nce_rce.A) == (1.0, 1.0, -4.0)


def test_cross_entropy_and_label_smoothing_match_torch() -> None:
    logits, labels = _inputs(n=11, k=6, seed=3)
    assert CrossEntropy()(logits, labels).item() == pytest.approx(F.cross_entropy(logits, labels).item())
    for eps in (0.0, 0.1, 0.5, 0.9):
        want = F.cross_entropy(logits, labels, label_smoothing=eps).item()
        assert LabelSmoothing(eps=eps)(logits, labels).item() == pytest.approx(want, rel=1e-12)


def test_special_cases_reduce_to_cross_entropy_or_mae() -> None:
    logits, labels = _inputs(n=9, k=4, seed=5)
    ce = CrossEntropy()(logits, labels)
    torch.testing.assert_close(LabelSmoothing(eps=0.0)(logits, labels), ce)
    torch.testing.assert_close(MulticlassFocal(gamma=0.0)(logits, labels), ce)
    # GCE -> CE as q -> 0 (the error is O(q)), and GCE(q=1) = 1 - p_y = MAE / 2
    assert abs(GCE(q=1e-6)(logits, labels).item() - ce.item()) < 1e-4
    assert abs(GCE(q=1e-3)(logits, labels).item() - ce.item()) > abs(
        GCE(q=1e-6)(logits, labels).item() - ce.item()
    )
    torch.testing.assert_close(GCE(q=1.0)(logits, labels), MAE()(logits, labels) / 2)
    # SCE with beta = 0 is alpha * CE
    torch.testing.assert_close(SCE(alpha=0.3, beta=0.0)(logits, labels), 0.3 * ce)


def test_mae_is_two_times_one_minus_p_y() -> None:
    logits, labels = _inputs(n=8, k=7, seed=2)
    p_y = torch.softmax(logits, dim=1)[torch.arange(8), labels]
    torch.testing.assert_close(MAE()(logits, labels), (2 * (1 - p_y)).mean())


def test_rce_term_is_minus_a_times_one_minus_p_y() -> None:
    logits, labels = _inputs(seed=4)
    p_y = torch.softmax(logits, dim=1)[torch.arange(7), labels]
    torch.testing.assert_close(SCE(alpha=0.0, beta=1.0, A=-4.0)(logits, labels), (4 * (1 - p_y)).mean())
    # NCE alone lies in (0, 1] per sample: -log p_y is one of the K terms of its denominator
    nce = NCE_RCE(alpha=1.0, beta=0.0)(logits, labels).item()
    assert 0.0 < nce <= 1.0


def test_per_sample_weights() -> None:
    logits, labels = _inputs(n=4, k=3, seed=6)
    w = torch.tensor([1.0, 0.0, 2.0, 0.5], dtype=F64)
    per = F.cross_entropy(logits, labels, reduction="none")
    torch.testing.assert_close(CrossEntropy()(logits, labels, weight=w), (w * per).mean())
    with pytest.raises(LossInputError, match="weights"):
        CrossEntropy()(logits, labels, weight=torch.ones(3, dtype=F64))


# ----------------------------------------------------------------------------- stability and gradients


@pytest.mark.parametrize(("kind", "cls", "hp"), CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_finite_for_extreme_logits(kind: str, cls: type, hp: dict, dtype: torch.dtype) -> None:
    # rows where the true class wins by 200, loses by 200, and ties; K = 4
    logits = torch.tensor(
        [[100.0, -100.0, -100.0, -100.0], [-100.0, 100.0, -100.0, 100.0], [100.0, 100.0, 100.0, 100.0]],
        dtype=dtype,
        requires_grad=True,
    )
    labels = torch.tensor([0, 0, 2])
    loss = cls(**hp)(logits, labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
    if dtype == F64:  # the formula, evaluated in exact-enough arithmetic, agrees
        want = _ref(kind, logits.detach().numpy(), labels.numpy(), **hp)
        assert loss.item() == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("kind", "cls", "hp"), CASES, ids=IDS)
def test_gradcheck(kind: str, cls: type, hp: dict) -> None:
    logits, labels = _inputs(n=4, k=3, seed=7)
    logits.requires_grad_(True)
    loss = cls(**hp)
    assert torch.autograd.gradcheck(lambda z: loss(z, labels), (logits,))
    assert torch.autograd.gradgradcheck(lambda z: loss(z, labels), (logits,))


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("cls", ALL)
def test_bad_inputs_raise_loss_input_error(cls: type) -> None:
    loss = cls()
    logits, labels = _inputs(n=6, k=4, seed=8)
    cases = [
        (logits[:, 0], labels, r"logits have shape \(6,\)"),  # binary-style scores
        (logits[:, :1], labels, r"logits have shape \(6, 1\)"),  # K = 1
        (logits.unsqueeze(0), labels, r"logits have shape \(1, 6, 4\)"),
        (logits, F.one_hot(labels, 4), r"shape \(6, 4\) \(a one-hot"),
        (logits, labels[:5], r"labels have shape \(5,\)"),
        (logits, torch.tensor([0, 1, 2, 3, 4, 9]), r"labels \{4, 9\} are outside \[0, 4\)"),
        (logits, torch.tensor([0, 1, -1, 3, 0, 0]), r"labels \{-1\} are outside \[0, 4\)"),
        (logits, labels.double(), r"dtype torch.float64.*y.long\(\)"),
        (logits, torch.tensor([0.0, 1.0, float("nan"), 2.0, 0.0, 1.0]), r"labels contain NaN"),
        (logits, torch.tensor([0.5, 1.0, 2.0, 3.0, 0.0, 1.0]), r"\{0, 0.5, 1, 2, 3\}"),
        (logits, labels.bool(), r"dtype torch.bool"),
        (logits, labels.reshape(2, 3), r"labels have shape \(2, 3\)"),
    ]
    for y_pred, y_true, message in cases:
        with pytest.raises(LossInputError, match=message):
            loss(y_pred, y_true)


def test_accepted_label_forms() -> None:
    logits, labels = _inputs(n=6, k=4, seed=9)
    want = CrossEntropy()(logits, labels)
    torch.testing.assert_close(CrossEntropy()(logits, labels.int()), want)  # any integer dtype
    torch.testing.assert_close(CrossEntropy()(logits, labels.unsqueeze(1)), want)  # (N, 1) like base
    logits32 = logits.float()
    torch.testing.assert_close(CrossEntropy()(logits32, labels), want.float())


def test_num_classes_pins_k_and_checks_a_dataset() -> None:
    loss = CrossEntropy(num_classes=3)
    logits, labels = _inputs(n=5, k=4, seed=10)
    with pytest.raises(LossInputError, match="4 columns but num_classes=3"):
        loss(logits, labels)
    # a whole dataset's labels, before any logits exist (as losses.domains.check_labels does)
    with pytest.raises(LossInputError, match=r"labels \{3\} are outside \[0, 3\)"):
        loss.prepare_targets(torch.tensor([0, 1, 2, 3]))
    assert loss.prepare_targets(torch.tensor([0, 1, 2], dtype=torch.int32)).dtype == torch.int64
    with pytest.raises(LossInputError, match=r"labels \{-2\} are outside \[0, K\)"):
        CrossEntropy().prepare_targets(torch.tensor([0, -2]))
    for bad in (1, 2.0, True, "10"):
        with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
            CrossEntropy(num_classes=bad)


def test_check_values_false_skips_only_the_value_check() -> None:
    logits, labels = _inputs(n=5, k=3, seed=11)
    loss = CrossEntropy(check_values=False)
    with pytest.raises(LossInputError, match="dtype"):
        loss(logits, labels.float())  # dtype and shape checks are free: always on
    with pytest.raises(LossInputError, match="one-hot"):
        loss(logits, F.one_hot(labels, 3))
    torch.testing.assert_close(loss(logits, labels), F.cross_entropy(logits, labels))


def test_per_sample_gradients_under_vmap() -> None:
    """The gradient-noise probe calls the loss per sample under torch.func.vmap with check_values=False."""
    from torch.func import grad, vmap

    logits, labels = _inputs(n=5, k=3, seed=12)
    loss = GCE(check_values=False)
    per = vmap(grad(lambda z, y: loss(z.unsqueeze(0), y.unsqueeze(0))))(logits, labels)
    for i in range(5):
        z = logits[i : i + 1].clone().requires_grad_(True)
        loss(z, labels[i : i + 1]).backward()
        torch.testing.assert_close(per[i], z.grad[0])


# ----------------------------------------------------------------------------- hyperparameters


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (LabelSmoothing, {"eps": 1.0}, r"eps must be a finite number in \[0, 1\), got 1.0"),
        (LabelSmoothing, {"eps": -0.1}, r"eps .* got -0.1"),
        (LabelSmoothing, {"eps": float("nan")}, r"eps .* got nan"),
        (MulticlassFocal, {"gamma": -1.0}, r"gamma must be a finite number in \[0, inf\), got -1.0"),
        (MulticlassFocal, {"gamma": "2"}, r"gamma .* got '2'"),
        (GCE, {"q": 0.0}, r"q must be a finite number in \(0, 1\], got 0.0"),
        (GCE, {"q": 1.5}, r"q .* got 1.5"),
        (SCE, {"alpha": -0.1}, r"alpha .* got -0.1"),
        (SCE, {"beta": float("inf")}, r"beta .* got inf"),
        (SCE, {"alpha": 0.0, "beta": 0.0}, "alpha and beta are both 0"),
        (SCE, {"A": 0.0}, r"A must be a finite number in \(-inf, 0\), got 0.0"),
        (NCE_RCE, {"alpha": 0, "beta": 0}, "alpha and beta are both 0"),
        (NCE_RCE, {"beta": -1}, r"beta .* got -1"),
        (NCE_RCE, {"A": 4.0}, r"A .* got 4.0"),
    ],
)
def test_bad_hyperparameters_raise_value_error(cls: type, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


# ----------------------------------------------------------------------------- declarations and configs


def test_domain_is_declared() -> None:
    for cls in ALL:
        assert issubclass(cls, MulticlassLossBase)
        assert cls.domain == "classes"
    assert "classes" in DOMAINS


CONFIGS = {
    "cross_entropy": (CrossEntropy, {}),
    "label_smoothing": (LabelSmoothing, {"eps": 0.1}),
    "focal_multiclass": (MulticlassFocal, {"gamma": 2.0}),
    "mae": (MAE, {}),
    "gce": (GCE, {"q": 0.7}),
    "sce": (SCE, {"alpha": 0.1, "beta": 1.0, "A": -4.0}),
    "nce_rce": (NCE_RCE, {"alpha": 1.0, "beta": 1.0, "A": -4.0}),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_builds_the_loss_with_the_papers_values(name: str) -> None:
    node = OmegaConf.load(CONF_DIR / "loss" / f"{name}.yaml")
    assert list(node.defaults) == [{"override /data@_global_.data": "mnist1d"}]
    node.pop("defaults")
    loss = instantiate(node)
    cls, values = CONFIGS[name]
    assert type(loss) is cls
    assert loss.num_classes is None
    for key, value in values.items():
        assert getattr(loss, key) == value


@pytest.mark.parametrize("cls", [CrossEntropy, LabelSmoothing, MulticlassFocal, MAE, GCE, SCE, NCE_RCE])
def test_gradcheck_draws_logits_and_class_indices_and_passes(cls) -> None:
    from losslab.losses.fd_check import check_loss

    report = check_loss(cls(num_classes=4), points=4)
    assert report.passed, report.table()
    assert all(row.passed for row in report.rows)  # first and second order, with and without weights
    assert "shape (2, 4)" in " ".join(row.worst for row in report.rows)
