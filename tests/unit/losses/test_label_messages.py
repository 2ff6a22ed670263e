"""A NaN or inf label is said as such, with its count, before any list of values (issue 26, item 13).

Before: `Hinge: labels {-4.01846, -3.94185, ...} are outside this loss's domain` — torch.unique sorts NaN
last, so the message listed valid-looking labels and never mentioned the NaN."""

from __future__ import annotations

import pytest
import torch

from losslab.losses import LossInputError
from losslab.losses.base import _describe_values, check_domain
from losslab.losses.classification import Hinge
from losslab.losses.multiclass import check_class_labels
from losslab.losses.regression import MSE


def _regression_labels(n: int = 20) -> torch.Tensor:
    return torch.linspace(-4.01846, 3.5, n).reshape(-1, 1)


def test_a_nan_label_of_a_binary_loss_is_counted_first():
    y = _regression_labels()
    y[5] = float("nan")
    y[9] = float("nan")
    with pytest.raises(LossInputError) as err:
        Hinge()(torch.zeros_like(y), y)
    msg = str(err.value)
    assert msg.startswith("Hinge: 2 of 20 labels are NaN; the others, {-4.01846, "), msg
    assert "are outside this loss's domain; accepted: {-1, +1}" in msg


def test_a_nan_among_valid_binary_labels_names_only_the_nan():
    y = torch.tensor([1.0, -1.0, float("nan"), 1.0])
    with pytest.raises(LossInputError) as err:
        check_domain(y, "pm1", "Hinge")
    assert str(err.value) == "Hinge: 1 of 4 labels is NaN; accepted: {-1, +1}."


def test_nan_and_inf_labels_of_a_regression_loss_are_both_counted():
    y = torch.tensor([[0.5], [float("nan")], [float("inf")], [-float("inf")], [2.0]])
    with pytest.raises(
        LossInputError, match=r"MSE: 1 of 5 labels is NaN and 2 are inf; accepted: any finite"
    ):
        MSE()(torch.zeros_like(y), y)


def test_a_nan_class_label_is_counted():
    labels = torch.tensor([0.0, 1.0, float("nan"), 2.0, float("nan"), 1.0])
    with pytest.raises(LossInputError, match=r"labels contain NaN or inf: 2 of 6 labels are NaN"):
        check_class_labels(labels, "CrossEntropy")


def test_described_values_count_the_non_finite_ones_before_the_finite_ones():
    y = torch.cat([torch.arange(10.0), torch.tensor([float("nan")] * 3 + [float("inf")])])
    assert _describe_values(y) == "{nan x3, inf x1, 0, 1, 2, 3, 4, 5, ...}"
    assert _describe_values(torch.tensor([2.0, -1.0])) == "{-1, 2}"  # unchanged for finite values
