"""A user's loss that torch.func.vmap cannot trace, for hydra/launcher=stacked's refusal."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ValueBranchMSE(nn.Module):
    """MSE that reads a tensor value into Python (`float(...)`) to pick a branch: fine in a solo run,
    impossible in one batched call over the seeds."""

    def forward(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        e = y_pred - y_true.reshape(y_pred.shape)
        if float(e.abs().max()) > 1e6:  # a Python branch on a value
            return torch.log1p(e**2).mean()
        return (e**2).mean()
