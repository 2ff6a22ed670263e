"""The divergence rule shared by the classifier and the guard: non-finite, over the hard cap, or a
blow-up that lasted the patience. Magnitude rules: they compare with the run's first loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from losslab.outcomes.rules import OutcomeRules


def _scale(first: float, rules: OutcomeRules) -> float:
    return max(abs(first), rules.abs_floor)


def limits(first: float, rules: OutcomeRules) -> tuple[float, float]:
    """(blow-up limit, hard cap) for a run whose first loss is `first` (signed losses: first + k|first|)."""
    s = _scale(first, rules)
    return first + (rules.blowup_factor - 1.0) * s, first + (rules.hard_cap - 1.0) * s


NONFINITE, OVER_CAP, BLOWUP = 1, 2, 3


def _reason(kind: int, step: int, value: float, first: float, patience: int, rules: OutcomeRules) -> str:
    if kind == NONFINITE:
        return f"loss became {value} at step {step}"
    if kind == OVER_CAP:
        return (
            f"loss reached {value:.4g} at step {step}, over the hard cap of {rules.hard_cap:g}x "
            f"its first value {first:.4g}"
        )
    return (
        f"loss stayed above {rules.blowup_factor:g}x its first value {first:.4g} for {patience} steps from "
        f"step {step} (a blow-up that did not come back)"
    )


class _Watch:
    """The divergence rule fed one loss at a time (shared by `first_divergence` and the guard's CPU path)."""

    def __init__(self, rules: OutcomeRules, patience: int) -> None:
        self.rules, self.patience = rules, patience
        self.first = math.nan
        self.limit = self.cap = math.nan
        self.count = self.streak = 0
        self.found: tuple[int, str] | None = None

    def push(self, x: float) -> bool:
        """Feed the loss of step `self.count`; True once the run has diverged."""
        if self.found is not None:
            return True
        i = self.count
        self.count += 1
        if i == 0:
            self.first = x
            if math.isfinite(x):
                self.limit, self.cap = limits(x, self.rules)
        kind, at = 0, i
        if not math.isfinite(x):
            kind = NONFINITE
        elif x > self.cap:
            kind = OVER_CAP
        else:
            self.streak = self.streak + 1 if x > self.limit else 0
            if self.streak >= self.patience:
                kind, at = BLOWUP, i - self.patience + 1
        if kind:
            self.found = at, _reason(kind, at, x, self.first, self.patience, self.rules)
        return self.found is not None


def first_divergence(
    y: np.ndarray | Sequence[float], rules: OutcomeRules, planned_steps: int | None = None
) -> tuple[int, str] | None:
    """(first bad index, reason) by the guard's rule, or None: the verdict `DivergenceGuard` reaches.

    Non-finite, or over the hard cap: at that step. A blow-up (above `blowup_factor` x the first
    value) once it has lasted the patience; the bad step is where it began. `planned_steps` sets the
    patience (None: the curve's length).
    """
    values = list(map(float, y))
    watch = _Watch(rules, rules.patience(planned_steps if planned_steps is not None else len(values)))
    for x in values:
        if watch.push(x):
            break
    return watch.found
