"""The gradient statistics' two code paths (host reads on the CPU, none on an accelerator) agree."""

from __future__ import annotations

import math

import pytest
import torch

from losslab.train.callbacks.gradients import GradientStats
from losslab.train.steplog import StepBuffer

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    ("grads", "expected"),
    [
        ([torch.ones(3, 4), torch.zeros(5)], 0),
        ([torch.tensor([1.0, NAN, 2.0]), torch.tensor([[INF, -INF], [0.0, 1.0]])], 3),
        ([torch.tensor([NAN, NAN]), torch.ones(7)], 2),
        # finite values whose float32 norm overflows: the norm is inf, the count is still 0
        ([torch.full((4,), 1e20), torch.ones(2)], 0),
    ],
)
def test_nonfinite_count_is_exact_on_both_paths(grads, expected):
    stats = GradientStats(StepBuffer())
    stats._zero = torch.zeros(1)
    total = torch.stack(torch._foreach_norm(grads)).square().sum()
    counts = []
    for host in (True, False):
        stats._host_reads = host
        counts.append(stats._nonfinite(grads, total).tolist())
    assert counts == [[float(expected)], [float(expected)]]
