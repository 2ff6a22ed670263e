"""`class_weights` of the multiclass losses: sum_i c_{y_i} l_i / sum_i c_{y_i}, the class-weighted mean."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from losslab.losses.base import LossInputError
from losslab.losses.multiclass import GCE, MAE, NCE_RCE, SCE, CrossEntropy, LabelSmoothing, MulticlassFocal

LOSSES = [
    CrossEntropy,
    lambda **kw: LabelSmoothing(eps=0.2, **kw),
    lambda **kw: MulticlassFocal(gamma=2.0, **kw),
    MAE,
    lambda **kw: GCE(q=0.7, **kw),
    lambda **kw: SCE(alpha=0.1, beta=1.0, **kw),
    lambda **kw: NCE_RCE(alpha=1.0, beta=1.0, **kw),
]
IDS = ["ce", "ls", "focal", "mae", "gce", "sce", "nce_rce"]
WEIGHTS = [0.5, 2.0, 1.0, 4.0]


def _batch(n: int = 40, k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, k, generator=g, dtype=torch.float64) * 2, torch.randint(0, k, (n,), generator=g)


@pytest.mark.parametrize("make", LOSSES, ids=IDS)
def test_class_weighted_loss_is_the_weighted_mean_of_the_per_sample_losses(make):
    z, y = _batch()
    plain, weighted = make(), make(class_weights=WEIGHTS)
    # each sample's term, from the unweighted loss on that one row (its values are checked against the
    # papers' formulas in test_multiclass_losses.py)
    per = [float(plain(z[i : i + 1], y[i : i + 1])) for i in range(len(y))]
    c = [WEIGHTS[int(t)] for t in y]
    want = sum(ci * li for ci, li in zip(c, per, strict=True)) / sum(c)
    assert float(weighted(z, y)) == pytest.approx(want, rel=1e-10)
    assert float(make(class_weights=[1.0] * 4)(z, y)) == pytest.approx(float(plain(z, y)), rel=1e-12)


def test_cross_entropy_with_class_weights_equals_torch_and_a_direct_formula():
    z, y = _batch()
    loss = CrossEntropy(class_weights=WEIGHTS, num_classes=4)
    w = torch.tensor(WEIGHTS, dtype=torch.float64)
    assert float(loss(z, y)) == pytest.approx(float(F.cross_entropy(z, y, weight=w)), rel=1e-12)
    p = torch.softmax(z, dim=1)
    direct = sum(WEIGHTS[int(t)] * -math.log(float(p[i, t])) for i, t in enumerate(y)) / sum(
        WEIGHTS[int(t)] for t in y
    )
    assert float(loss(z, y)) == pytest.approx(direct, rel=1e-10)


def test_class_weights_move_with_the_loss_and_reach_the_gradient():
    z, y = _batch()
    loss = GCE(class_weights=WEIGHTS).double()
    assert loss.class_weights.dtype == torch.float64
    z.requires_grad_()
    loss(z, y).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ([1.0, -1.0, 1.0, 1.0], "finite numbers > 0"),
        ([1.0, float("nan"), 1.0, 1.0], "finite numbers > 0"),
        ([1.0, 2.0, 3.0], "4 finite numbers"),
        ("inverse_frequency", "training split's class counts"),
    ],
)
def test_bad_class_weights_are_refused(value, says):
    with pytest.raises(LossInputError, match=says.replace("(", r"\(")):
        CrossEntropy(class_weights=value, num_classes=4)


def test_a_weight_per_class_is_needed_for_the_logits_width():
    z, y = _batch(k=4)
    with pytest.raises(LossInputError, match="3 entries for logits of 4 classes"):
        CrossEntropy(class_weights=[1.0, 2.0, 3.0])(z, y)
