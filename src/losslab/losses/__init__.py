"""Loss functions. Each is an nn.Module called as `loss(y_pred, y_true[, weight])` -> 0-dim tensor."""

from losslab.losses.base import (
    DOMAINS,
    LossBase,
    LossInputError,
    accepts_weight,
    call_loss,
    check_domain,
    check_weights,
    match_shapes,
)
from losslab.losses.classification import BCEWithLogits, Focal, Hinge, SquaredHinge
from losslab.losses.regression import (
    MSE,
    Huber,
    LogCosh,
    SigmoidWeightedL1,
    WeightedMSE,
)

__all__ = [
    "DOMAINS",
    "MSE",
    "BCEWithLogits",
    "Focal",
    "Hinge",
    "Huber",
    "LogCosh",
    "LossBase",
    "LossInputError",
    "SigmoidWeightedL1",
    "SquaredHinge",
    "WeightedMSE",
    "accepts_weight",
    "call_loss",
    "check_domain",
    "check_weights",
    "match_shapes",
]
