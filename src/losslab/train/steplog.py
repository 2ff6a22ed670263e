"""Per-step scalar metrics held on the training device until a flush.

Reading a CUDA scalar to the host (`.item()`) stalls the GPU queue; doing it for every
metric at every step is what makes naive tracking slow. Writers here store a stacked
row of 0-dim tensors into a preallocated device buffer (no sync), and `drain()` copies
everything to the host in one transfer per metric group.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class _Group:
    def __init__(self, names: tuple[str, ...], capacity: int, device: torch.device) -> None:
        self.names = names
        self.device = device
        self.values = torch.empty((capacity, len(names)), dtype=torch.float32, device=device)
        self.rows = self.values.unbind(0)  # one view per row, made once: no indexing op per record
        self.steps: list[int] = []


class StepBuffer:
    """Collects (step, name, value) points; `full` says when the caller should drain.

    `record` runs several times per training step, so it does the least it can: one dict lookup,
    one row copy into a preallocated row (a view made once), one list append (about 3 us on CPU).
    """

    def __init__(self, capacity: int = 256) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._groups: dict[tuple[str, ...], _Group] = {}
        self._longest = 0  # points held by the fullest group

    def record(self, step: int, names: Sequence[str], values: Tensor | Sequence[Tensor]) -> None:
        """Store one row: `values` is a 1-d tensor (or tensors stacked here) aligned with `names`."""
        key = names if isinstance(names, tuple) else tuple(names)
        row = values if isinstance(values, Tensor) else torch.stack([v.detach().reshape(()) for v in values])
        group = self._groups.get(key)
        if group is None or group.device != row.device:
            if group is not None and group.steps:
                raise RuntimeError("metric group moved device with points still buffered")
            group = self._groups[key] = _Group(key, self.capacity, row.device)
        n = len(group.steps)
        if n >= self.capacity:
            raise RuntimeError("StepBuffer overflow: drain() when `full` is True")
        if row.requires_grad:
            row = row.detach()
        group.rows[n].copy_(row if row.dim() == 1 else row.reshape(-1))
        group.steps.append(int(step))
        if n >= self._longest:
            self._longest = n + 1

    @property
    def full(self) -> bool:
        return self._longest >= self.capacity

    def __len__(self) -> int:
        return sum(len(g.steps) * len(g.names) for g in self._groups.values())

    def drain(self) -> list[tuple[str, int, float]]:
        """Return all buffered points as (name, step, value) on the host and empty the buffer."""
        points: list[tuple[str, int, float]] = []
        for group in self._groups.values():
            n = len(group.steps)
            if not n:
                continue
            rows = group.values[:n].cpu().tolist()
            for step, row in zip(group.steps, rows, strict=True):
                points.extend(zip(group.names, [step] * len(row), row, strict=True))
            group.steps.clear()
        self._longest = 0
        return points
