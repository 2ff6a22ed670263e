"""Binary classification losses on raw scores (logits / margins)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from losslab.losses.base import LossBase, LossInputError


def _finite_number(name: str, key: str, value: object, minimum: float | None = None) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value >= minimum
    if not ok:
        bound = f" >= {minimum:g}" if minimum is not None else ""
        raise LossInputError(f"{name}: {key} must be a finite number{bound}, got {value!r}.")
    return float(value)


class Hinge(LossBase):
    """mean(max(0, 1 - y * f + margin)) with y in {-1, +1}; the seed's form, margin 1.0 by default.

    Note the seed adds `margin` on top of the usual 1, so the hinge's knee sits at y*f = 1 + margin.
    """

    domain = "pm1"
    decision_threshold = 0.0  # the sign of the margin score
    twice_differentiable = False

    def __init__(self, margin: float = 1.0, map_labels: bool = False, check_values: bool = True) -> None:
        super().__init__(map_labels=map_labels, check_values=check_values)
        self.margin = _finite_number("Hinge", "margin", margin)

    def pointwise(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        return torch.clamp_min(1.0 - y_true * y_pred + self.margin, 0.0)

    def kink_distance(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        return (1.0 - y_true * y_pred + self.margin).abs()


class SquaredHinge(Hinge):
    """mean(max(0, 1 - y * f + margin)^2): differentiable at the knee, margin 0 by default."""

    twice_differentiable = True

    def __init__(self, margin: float = 0.0, map_labels: bool = False, check_values: bool = True) -> None:
        super().__init__(margin=margin, map_labels=map_labels, check_values=check_values)

    def pointwise(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        return super().pointwise(y_pred, y_true) ** 2


class BCEWithLogits(LossBase):
    """Binary cross-entropy on logits, labels in {0, 1}; `pos_weight` scales the positive term."""

    domain = "01"
    decision_threshold = 0.0  # logit 0 = probability 0.5

    def __init__(self, pos_weight: float = 1.0, map_labels: bool = False, check_values: bool = True) -> None:
        super().__init__(map_labels=map_labels, check_values=check_values)
        self.pos_weight = _finite_number("BCEWithLogits", "pos_weight", pos_weight, minimum=0.0)

    def pointwise(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        pw = torch.tensor(self.pos_weight, dtype=y_pred.dtype, device=y_pred.device)
        return F.binary_cross_entropy_with_logits(
            y_pred, y_true.to(y_pred.dtype), reduction="none", pos_weight=pw
        )


class Focal(LossBase):
    """Focal loss -alpha_t * (1 - p_t)^gamma * log(p_t) on logits, labels in {0, 1}.

    Computed in log space: log p_t = logsigmoid(z_t) and (1 - p_t)^gamma = exp(gamma * logsigmoid(-z_t)),
    so neither the value nor its gradient produces inf or NaN for any logit and any gamma >= 0
    (a naive pow(1 - p, gamma) has an infinite derivative at p = 1 when gamma < 1).
    `alpha` in [0, 1] weighs positives; null disables class weighting.
    """

    domain = "01"
    decision_threshold = 0.0  # logit 0 = probability 0.5

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float | None = None,
        map_labels: bool = False,
        check_values: bool = True,
    ) -> None:
        super().__init__(map_labels=map_labels, check_values=check_values)
        self.gamma = _finite_number("Focal", "gamma", gamma, minimum=0.0)
        if alpha is not None:
            alpha = _finite_number("Focal", "alpha", alpha, minimum=0.0)
            if alpha > 1:
                raise LossInputError(f"Focal: alpha must lie in [0, 1] (or be null), got {alpha!r}.")
        self.alpha = alpha

    def pointwise(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        y = y_true.to(y_pred.dtype)
        z_t = torch.where(y > 0.5, y_pred, -y_pred)
        loss = -torch.exp(self.gamma * F.logsigmoid(-z_t)) * F.logsigmoid(z_t)
        if self.alpha is not None:
            loss = loss * (self.alpha * y + (1.0 - self.alpha) * (1.0 - y))
        return loss
