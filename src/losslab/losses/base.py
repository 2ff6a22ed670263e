"""Input validation shared by every built-in loss.

A wrong shape or a label in the wrong domain does not crash autograd: it silently
broadcasts or trains towards nonsense. Every built-in loss therefore goes through
`LossBase.forward`, which checks shapes (free) and values (labels, weights) before
the formula runs, and says in one sentence what was wrong and what is accepted.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from losslab import vocab

#: Label domains a loss can declare; `real` accepts any finite target.
DOMAINS = vocab.DOMAINS


class LossInputError(ValueError):
    """A loss was called with inputs it cannot accept (shape, label domain, weights)."""


def _describe_values(t: Tensor, limit: int = 6) -> str:
    """'{nan x2, inf x1, -4.01846, -3.94185, ...}': the non-finite values counted first (torch.unique
    sorts them last, behind `limit` valid-looking values), then the distinct finite ones."""
    flat = t.detach().flatten().cpu()
    counts = []
    if flat.is_floating_point():
        for label, hit in (
            ("nan", torch.isnan(flat)),
            ("inf", flat == float("inf")),
            ("-inf", flat == -float("inf")),
        ):
            if bool(hit.any()):
                counts.append(f"{label} x{int(hit.sum())}")
        flat = flat[torch.isfinite(flat)]
    vals = torch.unique(flat)
    shown = ", ".join([*counts, *(f"{v:g}" for v in vals[:limit].tolist())])
    return "{" + shown + (", ..." if vals.numel() > limit else "") + "}"


def non_finite_labels(t: Tensor, what: str = "labels") -> str | None:
    """'2 of 600 labels are NaN and 1 is inf' for a floating tensor holding NaN or inf, else None."""
    if not t.is_floating_point():
        return None
    flat = t.detach().flatten()
    n_nan, n_inf = int(torch.isnan(flat).sum()), int(torch.isinf(flat).sum())
    if not n_nan and not n_inf:
        return None
    items = [(n, kind) for n, kind in ((n_nan, "NaN"), (n_inf, "inf")) if n]
    (n, kind), rest = items[0], items[1:]
    said = f"{n} of {flat.numel()} {what} {'is' if n == 1 else 'are'} {kind}"
    return said + "".join(f" and {m} {'is' if m == 1 else 'are'} {k}" for m, k in rest)


def match_shapes(y_pred: Tensor, y_true: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """Return (y_pred, y_true) with equal shapes, or raise.

    The only reshape allowed is the explicit (N, 1) <-> (N,) squeeze; anything else that
    differs would broadcast into an (N, N) matrix, the seed's weighted-MSE bug.
    """
    if y_pred.shape == y_true.shape:
        return y_pred, y_true
    n = y_pred.shape[0] if y_pred.dim() else None
    squeezable = {tuple(y_pred.shape), tuple(y_true.shape)} == {(n,), (n, 1)}
    if squeezable:
        return y_pred.reshape(n), y_true.reshape(n)
    raise LossInputError(
        f"{name}: y_pred has shape {tuple(y_pred.shape)} but y_true has shape {tuple(y_true.shape)}. "
        "Accepted: equal shapes, or (N, 1) against (N,). LossLab never broadcasts predictions "
        "against targets; check the model's output size and the data's target shape."
    )


def check_domain(y_true: Tensor, domain: str, name: str, hint: str = "") -> None:
    """Raise unless every target lies in the declared label domain."""
    if domain in ("real", "pm1", "01"):
        ok = _in_domain(y_true, domain)
    elif domain == "classes":  # the range [0, K) needs the logits' K: checked where they are known
        ok = not y_true.dtype.is_floating_point and not y_true.dtype.is_complex and bool((y_true >= 0).all())
    else:  # programming error, not user input
        raise ValueError(f"unknown label domain {domain!r}")
    if not ok:
        said = []
        missing = non_finite_labels(y_true)
        if missing:  # said first: a NaN label is a data problem, not a domain one
            said.append(missing)
            finite = y_true[torch.isfinite(y_true)]
            if domain != "real" and finite.numel() and not _in_domain(finite, domain):
                said.append(f"the others, {_describe_values(finite)}, are outside this loss's domain")
        else:
            said.append(f"labels {_describe_values(y_true)} are outside this loss's domain")
        raise LossInputError(
            f"{name}: {'; '.join(said)}; accepted: {DOMAINS[domain]}.{(' ' + hint) if hint else ''}"
        )


def _in_domain(y: Tensor, domain: str) -> bool:
    """Every value of `y` in the binary domain `domain`, or finite for 'real'."""
    if domain == "pm1":
        return bool(((y == 1) | (y == -1)).all())
    if domain == "01":
        return bool(((y == 0) | (y == 1)).all())
    return bool(torch.isfinite(y).all())


def check_weights(weight: Tensor, n: int, name: str) -> Tensor:
    """Per-sample weights: shape (n,) (or (n, 1)), finite and >= 0."""
    if weight.dim() == 2 and weight.shape[1] == 1:
        weight = weight.reshape(-1)
    if weight.dim() != 1 or weight.shape[0] != n:
        raise LossInputError(
            f"{name}: got {weight.shape[0] if weight.dim() == 1 else tuple(weight.shape)} weights "
            f"for a batch of {n} samples; accepted: exactly one weight per sample (shape ({n},))."
        )
    if not bool(torch.isfinite(weight).all()) or bool((weight < 0).any()):
        bad = weight[~torch.isfinite(weight) | (weight < 0)]
        raise LossInputError(f"{name}: weights must be finite and >= 0, got {_describe_values(bad)}.")
    return weight


class LossBase(nn.Module):
    """Base class: validate, then compute per-sample losses and reduce them.

    Subclasses set `domain` (see DOMAINS) and implement `pointwise(y_pred, y_true)`, which
    returns the per-element loss. `map_labels=True` converts the other binary encoding
    ({0,1} <-> {-1,+1}) before validation, for losses that declare a binary domain.
    `check_values=False` skips the value checks (not the shape check) once the caller
    has validated the whole dataset up front, so training steps never sync on them.
    """

    domain: str = "real"
    #: the score above which a sample counts as positive for binary accuracy; None: the midpoint
    #: of the label values (0 for {-1,+1}, 0.5 for {0,1}), see losslab.train.metrics
    decision_threshold: float | None = None
    #: whether the second derivative exists almost everywhere (checked by gradcheck)
    twice_differentiable: bool = True

    def __init__(self, map_labels: bool = False, check_values: bool = True) -> None:
        super().__init__()
        self.map_labels = map_labels
        self.check_values = check_values

    @property
    def name(self) -> str:
        return type(self).__name__

    def pointwise(self, y_pred: Tensor, y_true: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def kink_distance(self, y_pred: Tensor, y_true: Tensor) -> Tensor | None:
        """Distance (in y_pred units) to the nearest point where the loss is not differentiable."""
        return None

    def prepare_targets(self, y_true: Tensor) -> Tensor:
        """Map and validate targets; used per call and once over a whole dataset."""
        if self.map_labels and self.domain == "pm1":
            y_true = torch.where(y_true == 0, -torch.ones_like(y_true), y_true)
        elif self.map_labels and self.domain == "01":
            y_true = torch.where(y_true == -1, torch.zeros_like(y_true), y_true)
        if self.check_values:
            hint = ""
            if self.domain in ("pm1", "01"):
                other = "{0, 1}" if self.domain == "pm1" else "{-1, +1}"
                hint = f"Labels in {other} can be converted with loss.map_labels=true."
            check_domain(y_true, self.domain, self.name, hint)
        return y_true

    def forward(self, y_pred: Tensor, y_true: Tensor, weight: Tensor | None = None) -> Tensor:
        y_pred, y_true = match_shapes(y_pred, y_true, self.name)
        y_true = self.prepare_targets(y_true)
        per_elem = self.pointwise(y_pred, y_true)
        per_sample = per_elem.reshape(per_elem.shape[0], -1).mean(dim=1) if per_elem.dim() > 1 else per_elem
        return self.reduce(per_sample, weight)

    def reduce(self, per_sample: Tensor, weight: Tensor | None) -> Tensor:
        if weight is None:
            return per_sample.mean()
        if self.check_values:
            weight = check_weights(weight, per_sample.shape[0], self.name)
        else:
            weight = weight.reshape(-1)
        return (weight.to(per_sample.dtype) * per_sample).mean()


def accepts_weight(loss: nn.Module) -> bool:
    """Whether `loss.forward` takes per-sample weights (a `weight` argument or **kwargs)."""
    try:
        params = inspect.signature(loss.forward).parameters
    except (TypeError, ValueError):
        return False
    return "weight" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def call_loss(loss: nn.Module, y_pred: Tensor, y_true: Tensor, weight: Tensor | None) -> Tensor:
    """Call any loss; per-sample weights go only to losses that accept them (a user's may not)."""
    if weight is not None and accepts_weight(loss):
        return loss(y_pred, y_true, weight=weight)
    return loss(y_pred, y_true)
