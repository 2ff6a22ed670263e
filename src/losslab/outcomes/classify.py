"""What happened to a training run, read off its loss curves.

`classify` labels the train-loss curve and `overfitting` reads the val curve against it; numpy
only (no torch), so relabelling and reports need no deep-learning stack. The Lightning callback
that stops a diverged run (`train/callbacks/guard.py`) uses the same divergence rule
(`first_divergence`), so a run the guard stopped is always labelled `diverged`, at the same step.

Labels (public contract, stored as the run tag `outcome`), decided in this order:

- `diverged`: the loss became non-finite; or one value went over the hard cap (`hard_cap` x its
  first value); or it stayed above `blowup_factor` x its first value for `blowup_patience` of the
  run (a blow-up that did not come back); or, as a matter of shape, the run ended clearly higher
  than it started, or it is still clearly rising and has given back at least half of what it had
  gained. A curve that gets steadily worse is therefore never labelled as fine.
- `oscillating`: in the last half of the run one period (from 2 steps to a quarter of the run)
  carries most of the variance around the trend, with a swing of at least 5% of the curve's height.
- `still_improving`: the last window (10% of the run) still falls clearly, by at least 2% of the
  run's gain.
- `converged`: the loss fell clearly (beyond the noise), ended within 25% of its gain above its best
  level, and the last window is flat.
- `plateaued`: everything else: no clear drop, or it settled well above its best, or it turned up
  without giving back half its gain.

The shape rules use differences only, so a label does not change when a constant is added to the
loss, when it is multiplied by a positive number, when the same shape is recorded over a different
number of steps, or under noise well below the drop. The magnitude rules (cap, blow-up) compare with
the first value on purpose: a blow-up is a statement about size. Thresholds: `OutcomeRules`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from losslab.outcomes.divergence import (
    first_divergence,
    limits,
)
from losslab.outcomes.figures import Figures, figures, null_share
from losslab.outcomes.overfitting import Overfitting, overfitting
from losslab.outcomes.rules import OutcomeRules
from losslab.vocab import OUTCOME_LABELS

__all__ = [
    "LABELS",
    "Outcome",
    "OutcomeRules",
    "Overfitting",
    "classify",
    "first_divergence",
    "limits",
    "overfitting",
]

LABELS = tuple(sorted(OUTCOME_LABELS))


@dataclass(frozen=True)
class Outcome:
    """The verdict on one loss curve. `first_bad_step` indexes the curve; set for `diverged` only."""

    label: str
    reason: str
    first_bad_step: int | None
    n_steps: int
    figures: Figures | None = None


# ----------------------------------------------------------------------------- shape rules


def _g(x: float) -> str:
    return f"{x:.4g}"


def _shape(y: np.ndarray, rules: OutcomeRules) -> tuple[str, str, int | None, Figures]:
    """Label, reason and (for diverged) bad index of a finite curve of at least 4 points."""
    f = figures(y, rules)
    w = f.window
    eps = max(rules.abs_floor, rules.rel_resolution * max(abs(f.start), abs(f.end), abs(f.best)))
    # a difference of levels is clear beyond noise_z standard errors of start (k0 points) minus end (w)
    clear = max(rules.noise_z * f.noise * math.sqrt(1.0 / f.start_points + 1.0 / w), eps)
    gain = f.gain
    moved = f"from {_g(f.start)} at the start to {_g(f.end)} over the last {w} of {f.n} steps"
    noise = f"{abs(f.drop) / clear * rules.noise_z:.3g} standard errors" if clear > eps else "noise-free"
    # 1. ended worse than it started
    rise = -f.drop
    if rise > eps and (rise > clear or f.above_start >= rules.worse_share):
        return (
            "diverged",
            (
                f"the loss rose {moved} ({noise}; {100 * f.above_start:.3g}% of the steps above the start): "
                "it ended worse than it started"
            ),
            f.best_index,
            f,
        )
    # 2. oscillating in the last half
    half = f.n - f.n // 2
    share_needed = max(rules.osc_share, null_share(half, rules.osc_false_alarm))
    if f.osc_share >= share_needed and f.osc_swing >= rules.osc_amplitude * f.height:
        return (
            "oscillating",
            (
                f"the last {half} steps swing with a period of {f.osc_period:.3g} steps, "
                f"{_g(f.osc_swing)} peak to peak ({100 * f.osc_swing / f.height:.3g}% of the curve's range, "
                f"{100 * f.osc_share:.3g}% of the "
                f"variance around the trend); the loss went {moved}"
            ),
            None,
            f,
        )
    giveback = (f.end - f.best) / gain if gain > eps else math.inf if f.end - f.best > eps else 0.0
    change = f.win_change
    tw = f.trend_window
    needed = rules.progress_tol * gain * tw / f.n  # progress_tol x the average rate, over tw steps
    trending = f.win_t >= rules.trend_t and abs(change) > max(eps, needed)
    last = f"the last {tw} steps {'rose' if change > 0 else 'fell'} {_g(abs(change))}"
    share = f" ({100 * abs(change) / gain:.3g}% of the gain {_g(gain)})" if gain > eps else ""
    # 3. rising and has given back half of its gain
    if trending and change > 0 and giveback >= rules.giveback_tol:
        return (
            "diverged",
            (
                f"{last}{share} and the loss is back {_g(f.end - f.best)} above its best {_g(f.best)} "
                f"({'all' if not math.isfinite(giveback) else f'{100 * giveback:.3g}%'} of its gain "
                "given back); "
                f"it went {moved}"
            ),
            f.best_index,
            f,
        )
    # 4. still falling
    if trending and change < 0:
        return "still_improving", f"{last}{share}; the loss went {moved} ({noise})", None, f
    fell = f.drop > clear
    near = f.end - f.best <= rules.near_tol * gain
    if fell and near and not trending:
        return (
            "converged",
            (
                f"the loss fell {moved} ({100 * f.drop / gain:.3g}% of the way to its best "
                f"{_g(f.best)}, {noise}); "
                f"{last}{share}, {_flat(f.win_t, abs(change), needed, rules.trend_t)}"
            ),
            None,
            f,
        )
    if not fell:
        why = f"no clear drop: the loss went {moved} ({noise}, under the {rules.noise_z:g}x needed)"
    elif trending:
        why = (
            f"the loss turned up: {last}{share}, {100 * giveback:.3g}% of its gain given back; "
            f"it went {moved}"
        )
    else:
        why = (
            f"the loss went {moved} but settled {100 * giveback:.3g}% of its gain above its best "
            f"{_g(f.best)} (converged needs {100 * rules.near_tol:g}%)"
        )
    return "plateaued", why, None, f


def _as_curve(curve: Sequence[float] | np.ndarray | Any) -> np.ndarray:
    if hasattr(curve, "detach"):  # a torch tensor, read without importing torch here
        curve = curve.detach().cpu().double().numpy()
    y = np.asarray(curve, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"a loss curve must be 1-D (one value per step), got shape {y.shape}")
    if y.size == 0:
        raise ValueError("cannot classify an empty loss curve")
    return y


def _flat(t: float, change: float, needed: float, trend_t: float) -> str:
    """Why the last trend does not count: too noisy (t) or too slow (against progress_tol's rate)."""
    if t < trend_t:
        return f"no trend beyond the noise (t = {t:.2g} < {trend_t:g})"
    return f"too slow to matter ({_g(change)} < {_g(needed)}, progress_tol of the average rate)"


def classify(
    curve: Sequence[float] | np.ndarray | Any,
    rules: OutcomeRules | None = None,
    planned_steps: int | None = None,
) -> Outcome:
    """Label a training-loss curve (one value per optimizer step) with one of `LABELS`.

    `planned_steps` is the run's configured length (the blow-up patience is a share of it); None
    means the curve's length. Raises ValueError for an empty or non-1-D curve.
    """
    rules = rules or OutcomeRules()
    y = _as_curve(curve)
    n = len(y)
    bad = first_divergence(y, rules, planned_steps)
    if bad is not None:
        return Outcome("diverged", bad[1], bad[0], n)
    if n < 4:
        fell = n > 1 and y[-1] < y[0]
        label = "still_improving" if fell else "plateaued"
        return Outcome(
            label,
            f"only {n} point(s), too few for a trend; the loss went from {_g(y[0])} to {_g(y[-1])}",
            None,
            n,
        )
    label, reason, index, fig = _shape(y, rules)
    return Outcome(label, reason, index, n, fig)


# ----------------------------------------------------------------------------- Lightning guard
