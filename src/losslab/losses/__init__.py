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
from losslab.losses.regression import (
    MSE,
    Huber,
    LogCosh,
    SigmoidWeightedL1,
    WeightedMSE,
)

__all__ = [
    "DOMAINS",
    "GCE",
    "MAE",
    "MSE",
    "NCE_RCE",
    "SCE",
    "BCEWithLogits",
    "CrossEntropy",
    "Focal",
    "Hinge",
    "Huber",
    "LabelSmoothing",
    "LogCosh",
    "LossBase",
    "LossInputError",
    "MulticlassFocal",
    "MulticlassLossBase",
    "SigmoidWeightedL1",
    "SquaredHinge",
    "WeightedMSE",
    "accepts_weight",
    "call_loss",
    "check_domain",
    "check_weights",
    "match_shapes",
]
