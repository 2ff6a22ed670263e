"""A user's own loss, used with no edit to LossLab:

    python train.py loss._target_=experiments.my_loss.Pinball +loss.tau=0.9
    python train.py +experiment=custom_loss -m

Any nn.Module called as `loss(y_pred, y_true)` that returns a 0-dim tensor works. Declaring
`weight` in forward receives per-sample weights from the data; subclassing
`losslab.losses.LossBase` instead adds LossLab's input validation and kink-aware gradcheck.
"""

import torch
from torch import nn


class Pinball(nn.Module):
    """Quantile (pinball) loss: tau * e if e >= 0 else (tau - 1) * e, with e = y_true - y_pred."""

    def __init__(self, tau: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < float(tau) < 1.0:
            raise ValueError(f"Pinball: tau must lie in (0, 1), got {tau!r}")
        self.tau = float(tau)

    def forward(self, y_pred: torch.Tensor, y_true: torch.Tensor) -> torch.Tensor:
        if y_pred.shape != y_true.shape:
            raise ValueError(f"Pinball: y_pred {tuple(y_pred.shape)} vs y_true {tuple(y_true.shape)}")
        e = y_true - y_pred
        return torch.maximum(self.tau * e, (self.tau - 1.0) * e).mean()
