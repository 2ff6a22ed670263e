"""A user loss that replays a recorded curve, for end-to-end outcome tests.

`python train.py loss._target_=tests.helpers.replay_loss.ReplayCurve +loss.path=FILE.json` trains with a loss
whose value at optimizer step i is the file's i-th `train` value and whose validation value is the
latest `val` value recorded at or before the current step. The value is added to `0 * y_pred.sum()`,
so the gradient is exactly zero: the model never moves and the curve is exactly the script.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor, nn


class ReplayCurve(nn.Module):
    def __init__(self, path: str) -> None:
        super().__init__()
        doc = json.loads(Path(path).read_text())
        self.train_values = [float(v) for _, v in doc["train"]]
        self.val_points = [(int(s), float(v)) for s, v in doc.get("val", [])]
        self.steps = 0

    def forward(self, y_pred: Tensor, y_true: Tensor) -> Tensor:
        zero = 0.0 * y_pred.sum()
        if self.training and torch.is_grad_enabled():  # not LossLab's no-grad check before training
            i = min(self.steps, len(self.train_values) - 1)
            self.steps += 1
            return zero + self.train_values[i]
        earlier = [v for s, v in self.val_points if s <= self.steps] or [math.nan]
        return zero + torch.tensor(earlier[-1], dtype=y_pred.dtype)
