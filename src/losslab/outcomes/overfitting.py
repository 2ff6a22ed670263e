"""The `overfitting` tag: did val rise clearly above its best while the train loss kept improving?"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from losslab.outcomes.figures import robust_noise, rolling_median, window_size
from losslab.outcomes.rules import OutcomeRules


def _g(x: float) -> str:
    return f"{x:.4g}"


@dataclass(frozen=True)
class Overfitting:
    """Tag `overfitting` (`flag`), tag `best_val_step` and the sentence `overfitting_reason`."""

    flag: bool
    best_val_step: int | None
    reason: str


def overfitting(
    train: Sequence[tuple[int, float]], val: Sequence[tuple[int, float]], rules: OutcomeRules | None = None
) -> Overfitting:
    """Did val rise clearly above its best while the train loss kept improving?

    `train` and `val` are (global step, value) pairs. Clearly: the mean of the last 10% of the
    evaluations (at least one) is above the best by `overfit_rise` of the smaller of the best's
    distance to the first evaluation and |best|. Kept improving: the train loss over its last window
    (median) is below its level around the best val step by more than `noise_z` standard errors.
    """
    rules = rules or OutcomeRules()
    vals = [(int(s), float(v)) for s, v in val if math.isfinite(v)]
    if len(vals) < 3:
        return Overfitting(
            False,
            vals[int(np.argmin([v for _, v in vals]))][0] if vals else None,
            f"only {len(vals)} finite val evaluation(s), too few to judge",
        )
    steps = np.array([s for s, _ in vals])
    v = np.array([x for _, x in vals])
    b = int(np.argmin(v))
    best_step, best = int(steps[b]), float(v[b])
    k = max(1, math.ceil(0.1 * len(v)))
    end = float(v[-k:].mean())
    scale = min(max(float(v[0]) - best, 0.0), abs(best)) or max(float(v[0]) - best, abs(best))
    rise = end - best
    where = f"val loss best {_g(best)} at step {best_step}, last {k} evaluation(s) average {_g(end)}"
    if b >= len(v) - k or rise <= max(rules.overfit_rise * scale, rules.abs_floor):
        return Overfitting(False, best_step, f"{where}: not clearly above the best")
    tr = np.array([x for _, x in train if math.isfinite(x)], dtype=np.float64)
    tr_steps = np.array([s for s, x in train if math.isfinite(x)])
    if len(tr) < 4:
        return Overfitting(False, best_step, f"{where}; too few train points to compare")
    w = window_size(len(tr), rules)
    smooth, centres = rolling_median(tr, w)
    at = int(np.argmin(np.abs(tr_steps[centres] - best_step)))
    noise = robust_noise(tr) * math.sqrt(2.0 / w)  # standard error of a difference of two window levels
    tr_fall = float(smooth[at] - smooth[-1])
    if tr_fall <= max(rules.noise_z * noise, rules.abs_floor):
        return Overfitting(False, best_step, f"{where}, but the train loss did not keep improving either")
    fell = f"{tr_fall / noise:.3g} standard errors" if noise > 0 else "noise-free"
    return Overfitting(
        True, best_step, f"{where} (+{_g(rise)}); meanwhile the train loss fell {_g(tr_fall)} ({fell})"
    )
