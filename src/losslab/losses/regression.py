"""Regression losses: targets are any finite real number."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from losslab.losses.base import LossBase, LossInputError, check_weights


class MSE(LossBase):
    """Mean squared error."""

    def pointwise(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        return (y_pred - y_true) ** 2


class WeightedMSE(LossBase):
    """mean_i w_i * (y_pred_i - y_true_i)^2, one weight per sample.

    Weights come either from the config (`weights`, the seed's style: one per sample of a
    full-batch dataset, matched by position) or with the data (the `weight` argument, for
    minibatches). With both, they multiply. `normalize=True` divides by sum(w) instead of N.
    Unlike the seed, (N,) weights are never broadcast against (N, 1) errors.
    """

    def __init__(
        self,
        weights: Sequence[float] | None = None,
        normalize: bool = False,
        map_labels: bool = False,
        check_values: bool = True,
    ) -> None:
        super().__init__(map_labels=map_labels, check_values=check_values)
        self.normalize = normalize
        w = None
        if weights is not None:
            try:
                if isinstance(weights, (str, bytes)):  # would iterate characters: "123" -> [1, 2, 3]
                    raise TypeError("a string is not a list of weights")
                w = torch.as_tensor([float(v) for v in weights], dtype=torch.float32)
            except (TypeError, ValueError) as exc:
                # repr, not list(weights): a scalar is not iterable and would raise TypeError here
                raise LossInputError(
                    f"WeightedMSE: weights must be a list of numbers, got {weights!r}."
                ) from exc
            check_weights(w, len(w), self.name)
        self.register_buffer("weights", w, persistent=False)

    def pointwise(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        return (y_pred - y_true) ** 2

    def reduce(self, per_sample: Tensor, weight: Tensor | None) -> Tensor:
        n = per_sample.shape[0]
        w = None
        if self.weights is not None:
            if self.weights.shape[0] != n:
                raise LossInputError(
                    f"WeightedMSE: loss.weights has {self.weights.shape[0]} entries but the batch has "
                    f"{n} samples; accepted: one weight per sample of a full-batch dataset "
                    f"(set data.batch_size to the dataset size), or weights that come with the data."
                )
            w = self.weights.to(per_sample)
        if weight is not None:
            dw = check_weights(weight, n, self.name) if self.check_values else weight.reshape(-1)
            w = dw.to(per_sample) if w is None else w * dw.to(per_sample)
        if w is None:
            return per_sample.mean()
        if self.normalize:
            return (w * per_sample).sum() / w.sum().clamp_min(torch.finfo(per_sample.dtype).tiny)
        return (w * per_sample).mean()


class SigmoidWeightedL1(LossBase):
    """mean(sigmoid(|e|) * |e|): the seed's loss that weights the absolute error by a sigmoid of itself."""

    def pointwise(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        diff = (y_pred - y_true).abs()
        return torch.sigmoid(diff) * diff

    def kink_distance(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        return (y_pred - y_true).abs()


class Huber(LossBase):
    """Quadratic within `delta` of the target, linear beyond (smooth L1 scaled by delta)."""

    def __init__(self, delta: float = 1.0, map_labels: bool = False, check_values: bool = True) -> None:
        super().__init__(map_labels=map_labels, check_values=check_values)
        if not (isinstance(delta, (int, float)) and math.isfinite(delta) and delta > 0):
            raise LossInputError(f"Huber: delta must be a finite number > 0, got {delta!r}.")
        self.delta = float(delta)

    def pointwise(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        return F.huber_loss(y_pred, y_true, reduction="none", delta=self.delta)

    def kink_distance(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        # C1 everywhere; the second derivative jumps at |e| = delta.
        return ((y_pred - y_true).abs() - self.delta).abs()


class LogCosh(LossBase):
    """log(cosh(e)), written as e + softplus(-2e) - log 2 so it never overflows."""

    def pointwise(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        e = y_pred - y_true
        return e + F.softplus(-2.0 * e) - math.log(2.0)
