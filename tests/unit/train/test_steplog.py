"""StepBuffer: rows of any shape go in, the same points come out, in order, once."""

from __future__ import annotations

import pytest
import torch

from losslab.train.steplog import StepBuffer


def test_rows_of_any_shape_come_back_as_points():
    buf = StepBuffer(capacity=4)
    w = torch.tensor([1.5, -2.0], requires_grad=True)
    buf.record(0, ("a", "b"), w * 2)  # a row that requires grad is detached, not kept in a graph
    buf.record(1, ("a", "b"), torch.tensor([[3.0], [4.0]], dtype=torch.float64))
    buf.record(0, ("loss",), torch.tensor(0.25))  # 0-dim
    buf.record(1, ["loss"], [torch.tensor(0.5)])  # a list of 0-dim tensors, names as a list
    assert len(buf) == 6 and not buf.full
    assert buf.drain() == [
        ("a", 0, 3.0),
        ("b", 0, -4.0),
        ("a", 1, 3.0),
        ("b", 1, 4.0),
        ("loss", 0, 0.25),
        ("loss", 1, 0.5),
    ]
    assert buf.drain() == [] and len(buf) == 0


def test_full_at_capacity_and_overflow_refused():
    buf = StepBuffer(capacity=2)
    for step in range(2):
        buf.record(step, ("x",), torch.tensor([float(step)]))
    assert buf.full
    with pytest.raises(RuntimeError, match="overflow"):
        buf.record(2, ("x",), torch.tensor([2.0]))
    assert [p[2] for p in buf.drain()] == [0.0, 1.0]
    buf.record(5, ("x",), torch.tensor([7.0]))  # the rows are reused after a drain
    assert buf.drain() == [("x", 5, 7.0)]
