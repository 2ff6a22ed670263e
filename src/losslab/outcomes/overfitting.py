"""The `overfitting` tag: did the task metric on val get clearly worse than its best while the train
loss kept improving?"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from losslab.outcomes.figures import robust_noise, rolling_median, window_size
from losslab.outcomes.rules import OutcomeRules
from losslab.vocab import HIGHER_IS_BETTER


def _g(x: float) -> str:
    return f"{x:.4g}"


@dataclass(frozen=True)
class Overfitting:
    """Tag `overfitting` (`flag`), tag `best_val_step` and the sentence `overfitting_reason`."""

    flag: bool
    best_val_step: int | None
    reason: str


def _finite(points: Sequence[tuple[int, float]] | None) -> list[tuple[int, float]]:
    return [(int(s), float(v)) for s, v in (points or []) if math.isfinite(v)]


def overfitting(
    train: Sequence[tuple[int, float]],
    val: Sequence[tuple[int, float]],
    rules: OutcomeRules | None = None,
    metric: str | None = None,
    metric_curve: Sequence[tuple[int, float]] | None = None,
) -> Overfitting:
    """Did val get clearly worse than its best while the train loss kept improving?

    `train`, `val` (the val loss) and `metric_curve` (the task metric on val, `val/<metric>`) are
    (global step, value) pairs. The val curve read is the task metric's when it has at least 3
    finite evaluations (direction from `vocab.HIGHER_IS_BETTER`: accuracy falls, rmse rises when a
    model overfits), else the val loss. Each loss has a val loss of its own scale, while the task
    metric is what the runs are compared on.

    On that curve, turned so that lower is better, with n evaluations and k = 10% of them (at least
    one):
    - *best*: the lowest mean of k consecutive evaluations (a single lucky evaluation is not the best
      level); *end*: the mean of the last k;
    - *clearly worse*: the best window lies before the last one, and end - best exceeds both
      `overfit_rise` x min(|best|, best's distance from the first evaluation) and the evaluation
      noise allowance: `noise_z` x sigma x sqrt(2 / k), sigma the robust noise of the val curve
      (`robust_noise`, from second differences) and sqrt(2 / k) the standard error of a difference
      of two means of k evaluations;
    - *kept improving*: the train loss over its last window (median) is below its level around the
      best val step by more than `noise_z` standard errors.

    `best_val_step` is the step of the single best evaluation (the one checkpoint selection keeps).
    """
    rules = rules or OutcomeRules()
    curve = _finite(metric_curve) if metric is not None else []
    if len(curve) >= 3 and metric is not None:
        name, sign = f"val/{metric}", -1.0 if HIGHER_IS_BETTER.get(metric, False) else 1.0
    else:
        name, sign, curve = "val/loss", 1.0, _finite(val)
    if len(curve) < 3:
        return Overfitting(
            False,
            curve[int(np.argmin([sign * v for _, v in curve]))][0] if curve else None,
            f"only {len(curve)} finite {name} evaluation(s), too few to judge",
        )
    steps = np.array([s for s, _ in curve])
    v = sign * np.array([x for _, x in curve])  # lower is better
    n = len(v)
    best_step = int(steps[int(np.argmin(v))])
    k = max(1, math.ceil(0.1 * n))
    means = np.convolve(v, np.ones(k) / k, mode="valid")  # mean of evaluations i .. i + k - 1
    b = int(np.argmin(means))
    best, end = float(means[b]), float(means[-1])
    sigma = robust_noise(v)
    allowance = rules.noise_z * sigma * math.sqrt(2.0 / k)
    first = float(v[0])
    scale = min(max(first - best, 0.0), abs(best)) or max(first - best, abs(best))
    needed = max(rules.overfit_rise * scale, allowance, rules.abs_floor)
    rise = end - best
    worse = "fell" if sign < 0 else "rose"
    where = (
        f"{name} best {_g(sign * best)} (mean of {k} evaluation(s) around step {int(steps[b])}), "
        f"last {k} evaluation(s) average {_g(sign * end)}"
    )
    if b >= n - k or rise <= needed:
        noise = f"; evaluation noise sd {_g(sigma)}, allowance {_g(allowance)}" if sigma > 0 else ""
        return Overfitting(False, best_step, f"{where}: not clearly worse than the best{noise}")
    tr = np.array([x for _, x in train if math.isfinite(x)], dtype=np.float64)
    tr_steps = np.array([s for s, x in train if math.isfinite(x)])
    if len(tr) < 4:
        return Overfitting(False, best_step, f"{where}; too few train points to compare")
    w = window_size(len(tr), rules)
    smooth, centres = rolling_median(tr, w)
    at = int(np.argmin(np.abs(tr_steps[centres] - steps[b + k // 2])))
    noise = robust_noise(tr) * math.sqrt(2.0 / w)  # standard error of a difference of two window levels
    tr_fall = float(smooth[at] - smooth[-1])
    if tr_fall <= max(rules.noise_z * noise, rules.abs_floor):
        return Overfitting(False, best_step, f"{where}, but the train loss did not keep improving either")
    fell = f"{tr_fall / noise:.3g} standard errors" if noise > 0 else "noise-free"
    return Overfitting(
        True,
        best_step,
        f"{where} ({worse} {_g(rise)}, beyond the noise allowance {_g(allowance)}); "
        f"meanwhile the train loss fell {_g(tr_fall)} ({fell})",
    )
