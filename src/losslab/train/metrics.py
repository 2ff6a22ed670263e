"""Task metrics, computed the same way whatever the loss: the shared yardstick for loss designs.

A loss's own value cannot compare designs (hinge's grows with its margin; MSE and hinge mean
different things), so every run is also scored on the task: binary accuracy and ROC AUC on
the raw scores; regression RMSE, MAE and R^2; or, for multiclass logits (N, K), accuracy, balanced
accuracy (macro-averaged recall), macro F1, NLL (mean -log softmax_y), ECE (15 equal-width bins
on the top-label confidence, l1) and the Brier score (mean sum_k (p_k - onehot_k)^2). The values
come from torchmetrics' functional API, on the device, once per validation (on the whole split in
one call): a training step never computes or syncs anything here.

A metric's name and direction are declared in `vocab.TASK_METRICS` (read without torch by the
report and the sweep driver); its formula is the entry of the same name in `FORMULAS` below.
`tests/unit/train/test_metrics.py` fails naming any metric that has one without the other.

Decision threshold (binary accuracy): a loss may declare `decision_threshold` (a score);
LossLab's {-1,+1} margin losses declare 0, and its {0,1} losses on logits (bce_with_logits,
focal) declare 0 too (logit 0 = probability 0.5). A loss that declares none (mse on binary
data, or a user's {0,1} loss on raw scores) gets the midpoint of its label values: 0 for
{-1,+1}, 0.5 for {0,1}. The positive class is label 1 in both encodings.
"""

from __future__ import annotations

import functools
import math
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from losslab.vocab import HIGHER_IS_BETTER, TASK_METRICS

#: midpoint of each binary label encoding: the default threshold on raw scores
_MIDPOINT = {"pm1": 0.0, "01": 0.5}
#: equal-width confidence bins of the expected calibration error
ECE_BINS = 15


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


@functools.cache
def _tm() -> types.SimpleNamespace:
    """torchmetrics' functional API, imported on first use: it costs ~1.5 s, and `python train.py`
    refuses a bad config before any metric is needed."""
    import torchmetrics.functional as regression
    import torchmetrics.functional.classification as classification

    names = {**vars(regression), **vars(classification)}
    return types.SimpleNamespace(**{k: v for k, v in names.items() if not k.startswith("_")})


def _unit_interval(scores: Tensor) -> Tensor:
    """A strictly increasing map of any real score into (0, 1), in float64.

    torchmetrics applies a sigmoid to scores outside [0, 1]; in float32 that ties every score
    above ~17, which changes the AUC. This map keeps the order of scores up to ~1e15.
    """
    s = scores.double()
    return 0.5 + 0.5 * s / (1.0 + s.abs())


@dataclass
class Split:
    """One split's scores and labels, prepared once for every formula of its task.

    `scores` are finite (NaN -> 0, +-inf -> +-1e30) for binary and multiclass, whose metrics are all
    reported NaN when any score was not (`finite`); regression keeps them as they are.
    """

    scores: Tensor  # binary / regression (N,), multiclass (N, K)
    y: Tensor  # binary {-1,1} or {0,1}, regression real, multiclass class indices
    threshold: float = 0.0

    @functools.cached_property
    def tm(self) -> types.SimpleNamespace:
        return _tm()

    @functools.cached_property
    def target(self) -> Tensor:
        """Binary: 1 for the positive class, else 0. Multiclass: the class index."""
        return self.y.long() if self.scores.ndim == 2 else (self.y == 1).long()

    @functools.cached_property
    def pred(self) -> Tensor:
        """Binary: 1 above the decision threshold. Multiclass: the arg-max class."""
        return self.scores.argmax(dim=1) if self.scores.ndim == 2 else (self.scores > self.threshold).long()

    @functools.cached_property
    def log_p(self) -> Tensor:
        return torch.log_softmax(self.scores, dim=1)

    @functools.cached_property
    def p(self) -> Tensor:
        return self.log_p.exp()

    @functools.cached_property
    def onehot(self) -> Tensor:
        return torch.nn.functional.one_hot(self.target, self.k).to(self.p.dtype)

    @property
    def k(self) -> int:
        return int(self.scores.shape[1])

    @property
    def opts(self) -> dict[str, object]:
        return {"num_classes": self.k, "validate_args": False}


Formula = Callable[[Split], Tensor]

#: task -> metric name -> its formula on a prepared split (names and directions: vocab.TASK_METRICS)
FORMULAS: dict[str, dict[str, Formula]] = {
    "binary": {
        "accuracy": lambda s: s.tm.binary_accuracy(s.pred, s.target, validate_args=False),
        "auc": lambda s: s.tm.binary_auroc(_unit_interval(s.scores), s.target, validate_args=False),
    },
    "regression": {
        "rmse": lambda s: s.tm.mean_squared_error(s.scores, s.y, squared=False),
        "mae": lambda s: s.tm.mean_absolute_error(s.scores, s.y),
        "r2": lambda s: s.tm.r2_score(s.scores, s.y),
    },
    "multiclass": {
        "accuracy": lambda s: s.tm.multiclass_accuracy(s.pred, s.target, average="micro", **s.opts),
        "balanced_accuracy": lambda s: s.tm.multiclass_recall(s.pred, s.target, average="macro", **s.opts),
        "macro_f1": lambda s: s.tm.multiclass_f1_score(s.pred, s.target, average="macro", **s.opts),
        "nll": lambda s: -s.log_p.gather(1, s.target.unsqueeze(1)).mean(),
        "ece": lambda s: s.tm.multiclass_calibration_error(
            s.p, s.target, n_bins=ECE_BINS, norm="l1", **s.opts
        ),
        "brier": lambda s: ((s.p - s.onehot) ** 2).sum(dim=1).mean(),
    },
}


def task_metrics(task: str, scores: Tensor, y: Tensor, threshold: float = 0.0) -> dict[str, Tensor]:
    """Metrics of one whole split as 0-dim device tensors, named and ordered as in TASK_METRICS.

    Binary scores are (N,) raw scores, multiclass scores (N, K) logits against class indices.
    Non-finite scores (a diverged model) give NaN for every classification metric rather than a
    number that looks meaningful.
    """
    if task not in FORMULAS:
        raise ValueError(f"unknown task {task!r}; accepted: {', '.join(TASK_METRICS)}")
    scores = scores.detach()
    if task == "regression":
        split = Split(scores.reshape(-1).float(), y.detach().reshape(-1).float())
        return {name: FORMULAS[task][name](split) for name in TASK_METRICS[task]}
    scores = scores.float() if task == "multiclass" else scores.reshape(-1)
    finite = torch.isfinite(scores).all()
    safe = torch.nan_to_num(scores, nan=0.0, posinf=1e30, neginf=-1e30)
    split = Split(safe, y.detach().reshape(-1), threshold)
    nan = torch.full((), math.nan, device=scores.device)
    formulas = FORMULAS[task]
    return {name: torch.where(finite, formulas[name](split).float(), nan) for name in TASK_METRICS[task]}


def prefixed(prefix: str, values: Mapping[str, Tensor | float]) -> dict[str, Tensor | float]:
    """{'accuracy': v} -> {'val/accuracy': v} for prefix 'val/'."""
    return {f"{prefix}{k}": v for k, v in values.items()}
