"""Task metrics, computed the same way whatever the loss: the shared yardstick for loss designs.

A loss's own value cannot compare designs (hinge's grows with its margin; MSE and hinge mean
different things), so every run is also scored on the task: binary accuracy and ROC AUC on
the raw scores; regression RMSE, MAE and R^2; or, for multiclass logits (N, K), accuracy, balanced
accuracy (macro-averaged recall), macro F1, NLL (mean -log softmax_y), ECE (15 equal-width bins
on the top-label confidence, l1) and the Brier score (mean sum_k (p_k - onehot_k)^2). The values
come from torchmetrics' functional API, on the device, once per validation (on the whole split in
one call): a training step never computes or syncs anything here.

Decision threshold (binary accuracy): a loss may declare `decision_threshold` (a score);
LossLab's {-1,+1} margin losses declare 0, and its {0,1} losses on logits (bce_with_logits,
focal) declare 0 too (logit 0 = probability 0.5). A loss that declares none (mse on binary
data, or a user's {0,1} loss on raw scores) gets the midpoint of its label values: 0 for
{-1,+1}, 0.5 for {0,1}. The positive class is label 1 in both encodings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from losslab.vocab import HIGHER_IS_BETTER, TASK_METRICS

#: midpoint of each binary label encoding: the default threshold on raw scores
_MIDPOINT = {"pm1": 0.0, "01": 0.5}


def direction(metric: str) -> str:
    """'maximize' or 'minimize', as Optuna spells it."""
    return "maximize" if HIGHER_IS_BETTER[metric] else "minimize"


def better(metric: str, new: float, best: float | None) -> bool:
    """Whether `new` strictly improves on `best`; a non-finite value never does."""
    if not math.isfinite(new):
        return False
    if best is None or not math.isfinite(best):
        return True
    return new > best if HIGHER_IS_BETTER[metric] else new < best


def decision_threshold(loss: nn.Module, labels: str) -> float:
    """The score above which a sample is called positive (see the module docstring)."""
    declared = getattr(loss, "decision_threshold", None)
    if isinstance(declared, (int, float)) and not isinstance(declared, bool):
        return float(declared)
    return _MIDPOINT.get(labels, 0.0)


def _unit_interval(scores: Tensor) -> Tensor:
    """A strictly increasing map of any real score into (0, 1), in float64.

    torchmetrics applies a sigmoid to scores outside [0, 1]; in float32 that ties every score
    above ~17, which changes the AUC. This map keeps the order of scores up to ~1e15.
    """
    s = scores.double()
    return 0.5 + 0.5 * s / (1.0 + s.abs())


def task_metrics(task: str, scores: Tensor, y: Tensor, threshold: float = 0.0) -> dict[str, Tensor]:
    """Metrics of one whole split as 0-dim device tensors, named as in TASK_METRICS.

    Non-finite scores (a diverged model) give NaN for every metric rather than a number that
    looks meaningful.
    """
    # local: torchmetrics costs ~2 s to import, and `python train.py` refuses a bad config before that
    from torchmetrics.functional import mean_absolute_error, mean_squared_error, r2_score
    from torchmetrics.functional.classification import binary_accuracy, binary_auroc

    if task == "multiclass":
        return multiclass_metrics(scores, y)
    scores, y = scores.detach().reshape(-1), y.detach().reshape(-1)
    finite = torch.isfinite(scores).all()
    nan = torch.full((), math.nan, device=scores.device)
    if task == "binary":
        safe = torch.nan_to_num(scores, nan=0.0, posinf=1e30, neginf=-1e30)
        target = (y == 1).long()
        pred = (safe > threshold).long()
        out = {
            "accuracy": binary_accuracy(pred, target, validate_args=False),
            "auc": binary_auroc(_unit_interval(safe), target, validate_args=False),
        }
        return {k: torch.where(finite, v.float(), nan) for k, v in out.items()}
    if task == "regression":
        s, t = scores.float(), y.float()
        return {
            "rmse": mean_squared_error(s, t, squared=False),
            "mae": mean_absolute_error(s, t),
            "r2": r2_score(s, t),
        }
    raise ValueError(f"unknown task {task!r}; accepted: {', '.join(TASK_METRICS)}")


#: equal-width confidence bins of the expected calibration error
ECE_BINS = 15


def multiclass_metrics(logits: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Metrics of (N, K) logits against (N,) class indices; NaN for all when a logit is not finite.

    torchmetrics where it has the metric (accuracy = micro average; balanced accuracy = macro
    recall; macro F1; ECE = top-label l1 calibration error over 15 bins); NLL and Brier directly.
    """
    from torchmetrics.functional.classification import (
        multiclass_accuracy,
        multiclass_calibration_error,
        multiclass_f1_score,
        multiclass_recall,
    )

    logits = logits.detach().float()
    k = int(logits.shape[1])
    target = y.detach().reshape(-1).long()
    finite = torch.isfinite(logits).all()
    nan = torch.full((), math.nan, device=logits.device)
    safe = torch.nan_to_num(logits, nan=0.0, posinf=1e30, neginf=-1e30)
    log_p = torch.log_softmax(safe, dim=1)
    p = log_p.exp()
    pred = safe.argmax(dim=1)
    onehot = torch.nn.functional.one_hot(target, k).to(p.dtype)
    opts = {"num_classes": k, "validate_args": False}
    out = {
        "accuracy": multiclass_accuracy(pred, target, average="micro", **opts),
        "balanced_accuracy": multiclass_recall(pred, target, average="macro", **opts),
        "macro_f1": multiclass_f1_score(pred, target, average="macro", **opts),
        "nll": -log_p.gather(1, target.unsqueeze(1)).mean(),
        "ece": multiclass_calibration_error(p, target, n_bins=ECE_BINS, norm="l1", **opts),
        "brier": ((p - onehot) ** 2).sum(dim=1).mean(),
    }
    return {name: torch.where(finite, v.float(), nan) for name, v in out.items()}


def prefixed(prefix: str, values: Mapping[str, Tensor | float]) -> dict[str, Tensor | float]:
    """{'accuracy': v} -> {'val/accuracy': v} for prefix 'val/'."""
    return {f"{prefix}{k}": v for k, v in values.items()}
