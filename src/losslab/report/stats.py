"""Small statistics of the design table: the seed count below which a table carries a caveat,
medians, steps to a share of the train-loss drop. The inference over seeds (intervals, paired
differences, tests, P(X > Y), failures, power) is `inference.py`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from losslab.report.inference import MeanCI, t_interval

#: below this many seeds a table carries one caveat line (not one per cell)
MIN_SEEDS = 5


def finite(values: Iterable[float | None]) -> np.ndarray:
    return np.array([v for v in values if v is not None and math.isfinite(v)], float)


def mean_ci(values: Iterable[float | None]) -> MeanCI:
    """Mean and 95% t-interval over the finite values (`inference.t_interval`)."""
    return t_interval(values)


def steps_to_fraction(steps: np.ndarray, values: np.ndarray, fraction: float = 0.9) -> float | None:
    """First step where the loss has made `fraction` of its total improvement (start -> end).

    Read on a trailing moving average (1/20 of the curve): one lucky minibatch must not count
    as reaching the target. None when the loss did not improve or is not finite.
    """
    if len(values) < 2 or not np.all(np.isfinite(values)):
        return None
    w = max(1, len(values) // 20)
    smooth = np.convolve(values, np.ones(w) / w, mode="valid")
    start, end = smooth[0], smooth[-1]
    if not end < start:
        return None
    reached = np.flatnonzero(smooth <= start - fraction * (start - end))
    return float(steps[reached[0] + w - 1])


def median(values: Iterable[float | None]) -> float | None:
    vals = finite(values)
    return float(np.median(vals)) if len(vals) else None
