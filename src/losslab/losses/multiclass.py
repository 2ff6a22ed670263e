"""Multiclass losses on logits: called as `loss(logits (N, K) float, labels (N,) integer class indices)`.

Binary losses compare equal shapes (`base.match_shapes`), but here the prediction has one column
per class and the target one index per sample, so `MulticlassLossBase.forward` replaces the
shape check: logits (N, K) with K >= 2, labels (N,) of an integer dtype with values in [0, K).
A one-hot (N, K) target, float labels (even whole numbers) and NaN are refused with a message,
never reshaped or cast silently: a float label is usually a regression target or a binary label
meant for another loss, and a one-hot target would broadcast.

Every loss works from `log_softmax(logits)`, so no probability is ever logged after it underflows:
values and gradients stay finite for logits of +-100 and beyond.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from losslab.losses.base import (
    LossBase,
    LossInputError,
    _describe_values,
    check_weights,
    non_finite_labels,
)

#: integer dtypes accepted as class indices (gathered as int64)
_INDEX_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def _number(
    name: str,
    key: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """`value` as a float if it is a finite real number in the interval, else a one-sentence ValueError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "(-inf" if low is None else f"{'(' if low_open else '['}{low:g}"
        hi = "inf)" if high is None else f"{high:g}{')' if high_open else ']'}"
        raise LossInputError(f"{name}: {key} must be a finite number in {lo}, {hi}, got {value!r}.")
    return float(value)


def _weights(name: str, alpha: object, beta: object) -> tuple[float, float]:
    """Mixing weights of a two-term loss: both >= 0, not both 0 (that loss would be identically 0)."""
    a = _number(name, "alpha", alpha, low=0.0)
    b = _number(name, "beta", beta, low=0.0)
    if a == 0 and b == 0:
        raise LossInputError(f"{name}: alpha and beta are both 0, so the loss would be 0; set one > 0.")
    return a, b


def check_class_labels(
    labels: Tensor, name: str, num_classes: int | None = None, values: bool = True
) -> Tensor:
    """Return `labels` as int64 class indices of shape (N,), or raise LossInputError.

    Shape and dtype are checked always (free); the range [0, K) only with `values` (a host sync).
    `num_classes=None` checks only >= 0: what a whole dataset can be checked against before the
    model's K is known.
    """
    if labels.dim() == 2 and labels.shape[1] == 1:
        labels = labels.reshape(-1)  # (N, 1) -> (N,), the one reshape base.match_shapes allows too
    if labels.dim() != 1:
        raise LossInputError(
            f"{name}: labels have shape {tuple(labels.shape)}; accepted: class indices of shape (N,) "
            "(a one-hot or probability target of shape (N, K) can be converted with y.argmax(dim=1))."
        )
    if labels.dtype not in _INDEX_DTYPES:
        missing = non_finite_labels(labels)
        if missing:  # said first, with the count: a NaN label is a data problem, not a dtype one
            raise LossInputError(
                f"{name}: labels contain NaN or inf: {missing} ({labels.dtype}); accepted: integer class "
                "indices in [0, K)."
            )
        raise LossInputError(
            f"{name}: labels have dtype {labels.dtype} (values {_describe_values(labels)}); accepted: "
            "integer class indices in [0, K) (torch.long), e.g. y.long() if they are whole numbers."
        )
    if values:
        bad = labels < 0
        if num_classes is not None:
            bad = bad | (labels >= num_classes)
        if bool(bad.any()):
            accepted = f"[0, {num_classes})" if num_classes is not None else "[0, K)"
            got = f" for K = {num_classes} classes" if num_classes is not None else ""
            raise LossInputError(
                f"{name}: labels {_describe_values(labels[bad])} are outside {accepted}{got}; "
                f"accepted: integer class indices in {accepted}."
            )
    return labels.long()


def _class_weights(name: str, value: Any, num_classes: int | None) -> Tensor | None:
    """`class_weights` as a (K,) float tensor of finite weights > 0, or None.

    `inverse_frequency` is resolved from the data before the loss is built (LossLab's task does it,
    `losslab.data.corruption.resolve_class_weights`); a loss built by hand takes the weights themselves.
    """
    if value is None:
        return None
    if isinstance(value, str):
        raise LossInputError(
            f"{name}: class_weights={value!r} needs the training split's class counts, which LossLab's task "
            "fills in (loss.class_weights=inverse_frequency); built directly, the loss takes the weights "
            "themselves: a list of K numbers > 0."
        )
    try:
        w = torch.as_tensor(list(value) if not isinstance(value, Tensor) else value, dtype=torch.float32)
    except (TypeError, ValueError):
        w = None
    ok = w is not None and w.dim() == 1 and w.numel() >= 2 and bool(torch.isfinite(w).all() and (w > 0).all())
    if ok and num_classes is not None:
        ok = w.numel() == num_classes  # type: ignore[union-attr]
    if not ok:
        k = f"{num_classes}" if num_classes is not None else "K"
        raise LossInputError(
            f"{name}: class_weights={value!r} is not valid; accepted: null, inverse_frequency, or a list of "
            f"{k} finite numbers > 0 (one per class)."
        )
    return w


class MulticlassLossBase(LossBase):
    """Base class of the multiclass losses: validate logits and class indices, then reduce per sample.

    Subclasses implement `per_sample(log_probs, log_p_y, labels)` with the (N, K) log-softmax, the
    (N,) log-probability of the true class and the (N,) int64 labels, and return the (N,) losses;
    `LossBase.reduce` applies per-sample weights. `num_classes` (optional) pins K: logits of
    another width are refused, and `prepare_targets` checks a whole dataset's labels against it.
    """

    domain = "classes"
    # the predicted class is the argmax of the logits; there is no binary threshold
    decision_threshold = None

    def __init__(
        self, num_classes: int | None = None, check_values: bool = True, class_weights: Any = None
    ) -> None:
        super().__init__(map_labels=False, check_values=check_values)
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2
        ):
            raise LossInputError(
                f"{self.name}: num_classes must be an integer >= 2 (or null), got {num_classes!r}."
            )
        self.num_classes = num_classes
        weights = _class_weights(self.name, class_weights, num_classes)
        #: (K,) per-class weights, or None; a buffer, so it moves with the model to the device
        self.class_weights: Tensor | None
        self.register_buffer("class_weights", weights, persistent=False)

    def prepare_targets(self, y_true: Tensor, num_classes: int | None = None) -> Tensor:
        """Labels as (N,) int64 class indices; per call (with the logits' K) and once over a dataset."""
        k = num_classes if num_classes is not None else self.num_classes
        return check_class_labels(y_true, self.name, k, values=self.check_values)

    def check_logits(self, y_pred: Tensor, y_true: Tensor) -> None:
        """Shapes only (free): logits (N, K), K >= 2 (and == num_classes if pinned); N labels."""
        if y_pred.dim() != 2 or y_pred.shape[1] < 2:
            raise LossInputError(
                f"{self.name}: logits have shape {tuple(y_pred.shape)}; accepted: (N, K) scores for "
                "K >= 2 classes (binary (N,) scores go to a binary loss such as BCEWithLogits)."
            )
        if not y_pred.dtype.is_floating_point:
            raise LossInputError(f"{self.name}: logits have dtype {y_pred.dtype}; accepted: floating point.")
        if self.num_classes is not None and y_pred.shape[1] != self.num_classes:
            raise LossInputError(
                f"{self.name}: logits have {y_pred.shape[1]} columns but num_classes={self.num_classes}; "
                "accepted: one column per class."
            )
        if y_true.dim() == 2 and tuple(y_true.shape) == tuple(y_pred.shape):
            raise LossInputError(
                f"{self.name}: labels have the logits' shape {tuple(y_true.shape)} (a one-hot or "
                "probability target); accepted: class indices of shape (N,), e.g. y.argmax(dim=1)."
            )
        if y_true.dim() == 0 or y_true.shape[0] != y_pred.shape[0]:
            raise LossInputError(
                f"{self.name}: labels have shape {tuple(y_true.shape)} for logits of shape "
                f"{tuple(y_pred.shape)}; accepted: one class index per row, shape ({y_pred.shape[0]},)."
            )

    def per_sample(self, log_probs: Tensor, log_p_y: Tensor, labels: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def pointwise(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        """Per-sample losses (N,) from logits (N, K) and validated int64 labels (N,)."""
        log_probs = F.log_softmax(y_pred, dim=1)
        log_p_y = log_probs.gather(1, y_true.unsqueeze(1)).squeeze(1)
        return self.per_sample(log_probs, log_p_y, y_true)

    def forward(self, y_pred: Tensor, y_true: Tensor, weight: Tensor | None = None) -> Tensor:
        self.check_logits(y_pred, y_true)
        labels = self.prepare_targets(y_true, y_pred.shape[1])
        losses = self.pointwise(y_pred, labels)
        if self.class_weights is None:
            return self.reduce(losses, weight)
        if self.class_weights.shape[0] != y_pred.shape[1]:
            raise LossInputError(
                f"{self.name}: class_weights has {self.class_weights.shape[0]} entries for logits of "
                f"{y_pred.shape[1]} classes; accepted: one weight per class."
            )
        return self.class_weighted(losses, labels, weight)

    def class_weighted(self, losses: Tensor, labels: Tensor, weight: Tensor | None = None) -> Tensor:
        """sum_i c_{y_i} w_i l_i / sum_i c_{y_i}: the class-weighted mean (torch's `weight=` semantics);
        per-sample weights w, when given, scale each term as `reduce` does."""
        assert self.class_weights is not None
        c = self.class_weights.to(losses.dtype)[labels]
        terms = c * losses
        if weight is not None:
            w = check_weights(weight, losses.shape[0], self.name) if self.check_values else weight.reshape(-1)
            terms = terms * w.to(losses.dtype)
        return terms.sum() / c.sum()


def _one_minus_p(log_p_y: Tensor) -> Tensor:
    """1 - p_y from log p_y without cancellation: -expm1(log p_y) is exact as p_y -> 1."""
    return -torch.expm1(log_p_y)


def _log_zero(name: str, value: object) -> float:
    """A, the value log(0) is clamped to in the reverse cross-entropy: negative, so RCE >= 0."""
    return _number(name, "A", value, high=0.0, high_open=True)


class CrossEntropy(MulticlassLossBase):
    """mean(-log p_y), p = softmax(logits): the multiclass negative log-likelihood, the baseline."""

    def per_sample(self, log_probs: Tensor, log_p_y: Tensor, labels: Tensor) -> Tensor:
        return -log_p_y


class LabelSmoothing(MulticlassLossBase):
    """Cross-entropy against (1 - eps) * onehot + eps / K (Szegedy et al. 2016, "Rethinking the
    Inception Architecture for Computer Vision"), which keeps logits from growing without bound;
    eps = 0.1 as in the paper. Equals torch's cross_entropy(label_smoothing=eps).
    """

    def __init__(
        self,
        eps: float = 0.1,
        num_classes: int | None = None,
        check_values: bool = True,
        class_weights: Any = None,
    ) -> None:
        super().__init__(num_classes=num_classes, check_values=check_values, class_weights=class_weights)
        self.eps = _number("LabelSmoothing", "eps", eps, low=0.0, high=1.0, high_open=True)

    def per_sample(self, log_probs: Tensor, log_p_y: Tensor, labels: Tensor) -> Tensor:
        return -(1.0 - self.eps) * log_p_y - self.eps * log_probs.mean(dim=1)


class MulticlassFocal(MulticlassLossBase):
    """mean(-(1 - p_y)^gamma * log p_y) (Lin et al. 2017, "Focal Loss for Dense Object Detection"),
    down-weighting well-classified samples; gamma = 2 as in the paper.

    (1 - p_y)^gamma = exp(gamma * log(sum_{k != y} p_k)) with the log-sum taken over the other classes'
    log-softmax, so it neither cancels as p_y -> 1 nor has an infinite slope there for gamma < 1.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        num_classes: int | None = None,
        check_values: bool = True,
        class_weights: Any = None,
    ) -> None:
        super().__init__(num_classes=num_classes, check_values=check_values, class_weights=class_weights)
        self.gamma = _number("MulticlassFocal", "gamma", gamma, low=0.0)

    def per_sample(self, log_probs: Tensor, log_p_y: Tensor, labels: Tensor) -> Tensor:
        others = log_probs.scatter(1, labels.unsqueeze(1), float("-inf"))
        log_one_minus_p = torch.logsumexp(others, dim=1)  # finite: K >= 2 and every log p_k is finite
        return -torch.exp(self.gamma * log_one_minus_p) * log_p_y


class MAE(MulticlassLossBase):
    """mean(sum_k |p_k - onehot_k|) = mean(2 (1 - p_y)) (Ghosh et al. 2017, "Robust Loss Functions
    under Label Noise for Deep Neural Networks"): bounded, hence tolerant of symmetric label noise.
    """

    def per_sample(self, log_probs: Tensor, log_p_y: Tensor, labels: Tensor) -> Tensor:
        return 2.0 * _one_minus_p(log_p_y)


class GCE(MulticlassLossBase):
    """mean((1 - p_y^q) / q) (Zhang and Sabuncu 2018, "Generalized Cross Entropy Loss for Training
    Deep Neural Networks with Noisy Labels"): CE as q -> 0, MAE / 2 at q = 1; q = 0.7 as in the paper.

    Computed as -expm1(q * log p_y) / q, exact for small q and for p_y -> 1.
    """

    def __init__(
        self,
        q: float = 0.7,
        num_classes: int | None = None,
        check_values: bool = True,
        class_weights: Any = None,
    ) -> None:
        super().__init__(num_classes=num_classes, check_values=check_values, class_weights=class_weights)
        self.q = _number("GCE", "q", q, low=0.0, high=1.0, low_open=True)

    def per_sample(self, log_probs: Tensor, log_p_y: Tensor, labels: Tensor) -> Tensor:
        return -torch.expm1(self.q * log_p_y) / self.q


class _ActivePassive(MulticlassLossBase):
    """alpha * (an active loss) + beta * RCE, the reverse cross-entropy -sum_k p_k log onehot_k with
    log 0 := A, i.e. -A * (1 - p_y): the pair shape of SCE and NCE+RCE, whose knobs (alpha, beta, A)
    and checks live here once. `default_alpha` is each paper's alpha."""

    default_alpha = 1.0

    def __init__(
        self,
        alpha: float | None = None,
        beta: float = 1.0,
        A: float = -4.0,  # the papers' symbol for log 0
        num_classes: int | None = None,
        check_values: bool = True,
        class_weights: Any = None,
    ) -> None:
        super().__init__(num_classes=num_classes, check_values=check_values, class_weights=class_weights)
        name = type(self).__name__
        self.alpha, self.beta = _weights(name, self.default_alpha if alpha is None else alpha, beta)
        self.A = _log_zero(name, A)

    def rce(self, log_p_y: Tensor) -> Tensor:
        return -self.A * _one_minus_p(log_p_y)


class SCE(_ActivePassive):
    """alpha * CE + beta * RCE (Wang et al. 2019, "Symmetric Cross Entropy for Robust Learning with
    Noisy Labels"). RCE = -sum_k p_k log onehot_k with log 0 := A, i.e. -A * (1 - p_y).

    Defaults are the paper's CIFAR-10 setting: alpha = 0.1, beta = 1.0, A = -4 (its MNIST one is
    alpha = 0.01). Note the authors' code clamps the one-hot at 1e-4 under a natural log, which is
    A = ln(1e-4) ~ -9.21, not the -4 the paper states; A is a parameter for that reason.
    """

    default_alpha = 0.1

    def per_sample(self, log_probs: Tensor, log_p_y: Tensor, labels: Tensor) -> Tensor:
        return self.alpha * -log_p_y + self.beta * self.rce(log_p_y)


class NCE_RCE(_ActivePassive):
    """alpha * NCE + beta * RCE (Ma et al. 2020, "Normalized Loss Functions for Deep Learning with
    Noisy Labels"): an "active" and a "passive" robust loss that together avoid underfitting.

    NCE = log p_y / sum_k log p_k (bounded in [0, 1]; the denominator is >= log 2 in magnitude since
    K >= 2); RCE = -A * (1 - p_y) as in SCE, A = -4. Defaults alpha = 1, beta = 1 (the paper's
    CIFAR-10 setting; the authors' released MNIST configuration uses beta = 10).
    """

    default_alpha = 1.0

    def per_sample(self, log_probs: Tensor, log_p_y: Tensor, labels: Tensor) -> Tensor:
        nce = log_p_y / log_probs.sum(dim=1)
        return self.alpha * nce + self.beta * self.rce(log_p_y)
