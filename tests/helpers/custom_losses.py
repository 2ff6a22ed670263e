"""User-style losses for tests/unit/test_gradcheck.py: three with deliberately wrong derivatives,
three correct.

None of them subclasses LossBase or declares `domain` / `kink_distance`, like a user's own loss.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class _DoubledSquare(torch.autograd.Function):
    """(y_pred - y_true)^2 per element, whose backward returns twice the true gradient."""

    @staticmethod
    def forward(ctx, y_pred: Tensor, y_true: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(y_pred - y_true)
        return (y_pred - y_true) ** 2

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (e,) = ctx.saved_tensors
        return grad * 4 * e, None  # bug: should be 2 * e


class DoubledGradMSE(nn.Module):
    """MSE with the doubled backward above."""

    def forward(self, y_pred: Tensor, y_true: Tensor, weight: Tensor | None = None) -> Tensor:
        per = _DoubledSquare.apply(y_pred, y_true)
        per = per.reshape(per.shape[0], -1).mean(dim=1)
        return per.mean() if weight is None else (weight * per).mean()


class _ForgetfulSigmoidL1(torch.autograd.Function):
    """sigmoid(|e|) * |e| per element; backward forgets the derivative of the sigmoid factor."""

    @staticmethod
    def forward(ctx, y_pred: Tensor, y_true: Tensor) -> Tensor:  # type: ignore[override]
        e = y_pred - y_true
        ctx.save_for_backward(e)
        return torch.sigmoid(e.abs()) * e.abs()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (e,) = ctx.saved_tensors
        # correct: sign(e) * (sigmoid(|e|) + sigmoid(|e|) * (1 - sigmoid(|e|)) * |e|)
        return grad * torch.sign(e) * torch.sigmoid(e.abs()), None


class ForgetfulSigmoidL1(nn.Module):
    def forward(self, y_pred: Tensor, y_true: Tensor, weight: Tensor | None = None) -> Tensor:
        return _ForgetfulSigmoidL1.apply(y_pred, y_true).mean()


class _FrozenHessianSquare(torch.autograd.Function):
    """(y_pred - y_true)^2 with a correct gradient computed in forward, so double backward sees 0."""

    @staticmethod
    def forward(ctx, y_pred: Tensor, y_true: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(2 * (y_pred - y_true))  # built without a graph
        return (y_pred - y_true) ** 2

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (slope,) = ctx.saved_tensors
        return grad * slope, None


class FrozenHessianMSE(nn.Module):
    """Right first derivative, wrong second; claims twice_differentiable, so gradcheck must catch it."""

    twice_differentiable = True

    def forward(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        return _FrozenHessianSquare.apply(y_pred, y_true).mean()


class PlainHinge(nn.Module):
    """mean(max(0, margin - y * f)) written plainly: no domain, no kink_distance, no twice_differentiable."""

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        return torch.clamp_min(self.margin - y_true * y_pred, 0.0).mean()


class PlainSigmoidL1(nn.Module):
    """mean(sigmoid(|e|) * |e|) by plain autograd: correct, kink at e = 0, not declared."""

    twice_differentiable = True

    def forward(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        d = (y_pred - y_true).abs()
        return (torch.sigmoid(d) * d).mean()


class ScaledLogCosh(nn.Module):
    """A correct, smooth user loss with a constructor argument and weights."""

    twice_differentiable = True

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, y_pred: Tensor, y_true: Tensor, weight: Tensor | None = None) -> Tensor:
        per = torch.log(torch.cosh(self.scale * (y_pred - y_true))).reshape(y_pred.shape[0], -1).mean(dim=1)
        return per.mean() if weight is None else (weight * per).mean()


class FailAt(nn.Module):
    """MSE that raises once it has been called `fail_at` times in training mode, to test that a
    failing job is recorded: with nothing else calling the loss (the noise probe is off by default),
    training steps 0 .. fail_at-1 complete and step `fail_at` fails.

    `fail_at < 0` never fails. `nan_at >= 0` returns NaN after that many calls instead.
    """

    def __init__(self, fail_at: int = -1, nan_at: int = -1) -> None:
        super().__init__()
        self.fail_at, self.nan_at, self.calls = fail_at, nan_at, 0

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.training and self.fail_at >= 0 and self.calls > self.fail_at:
            raise RuntimeError(f"FailAt: deliberate failure at call {self.calls}")
        loss = ((y_pred - y_true.reshape(y_pred.shape)) ** 2).mean()
        if self.nan_at >= 0 and self.calls > self.nan_at:
            return loss * float("nan")
        return loss


def two_outputs(in_features: int, out_features: int, **unused: object) -> nn.Module:
    """A user's model with the wrong output size: (N, 2) predictions against (N, 1) targets."""
    return nn.Linear(in_features, 2)


class ProbabilityBCE(nn.Module):
    """A user's BCE on sigmoid probabilities that declares `domain = "01"` (no LossBase).

    torch's binary_cross_entropy raises on a target outside [0, 1]: on regression data this loss
    failed with a raw traceback before LossLab checked a user's declared domain.
    """

    domain = "01"

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy(torch.sigmoid(y_pred), y_true.reshape(y_pred.shape))


class WrongShape(nn.Module):
    """Returns the per-sample losses instead of their mean: not a scalar, so every check must fail."""

    def forward(self, y_pred: Tensor, y_true: Tensor, weight: Tensor | None = None) -> Tensor:
        return (y_pred - y_true) ** 2


class UnreshapedWeights(nn.Module):
    """Weighted MSE that multiplies the (N,) weights into (N, k) errors without reshaping them: fine
    for (N,) predictions, raises for a (4, 3) batch (4 weights against 3 columns). Unweighted, it is
    plain MSE."""

    def forward(self, y_pred: Tensor, y_true: Tensor, weight: Tensor | None = None) -> Tensor:
        sq = (y_pred - y_true) ** 2
        return sq.mean() if weight is None else (weight * sq).mean()


class IndexesAColumn(nn.Module):
    """A loss written for a 4-output model: on LossLab's one-output models it raises IndexError."""

    def forward(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        return (y_pred[:, 3] - y_true[:, 0]).square().mean()


class ReturnsFloat(nn.Module):
    """Returns a Python float (`.item()` of the MSE): no tensor, no gradient."""

    def forward(self, y_pred: Tensor, y_true: Tensor) -> float:
        return float(((y_pred - y_true.reshape(y_pred.shape)) ** 2).mean().item())


class ReturnsDetached(nn.Module):
    """Returns the MSE detached from the graph: a float32 tensor that does not require grad."""

    def forward(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        return ((y_pred - y_true.reshape(y_pred.shape)) ** 2).mean().detach()


class ReturnsInteger(nn.Module):
    """Returns the number of wrong signs: an int64 tensor (no gradient can flow through a count)."""

    def forward(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        return (torch.sign(y_pred) != torch.sign(y_true.reshape(y_pred.shape))).sum()


class ReturnsComplex(nn.Module):
    """Returns a complex MSE: a complex64 0-dim tensor that requires grad."""

    def forward(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        e = torch.complex(y_pred - y_true.reshape(y_pred.shape), torch.zeros_like(y_pred))
        return (e * e).mean()
