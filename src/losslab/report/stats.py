"""Statistics over seeds: t-intervals, paired differences, probability of improvement.

scipy gives the t quantiles; the rest is a few lines of numpy. Runs with the same seed share
their data split and initialisation, so two designs are compared on the seeds both have
(paired), which removes the seed-to-seed variation both designs share.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

#: below this many seeds an interval is shown but called too few to rely on
MIN_SEEDS = 5
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% t-interval half-width over n values (None where undefined)."""

    mean: float | None
    half: float | None
    n: int

    @property
    def lo(self) -> float | None:
        return None if self.mean is None or self.half is None else self.mean - self.half

    @property
    def hi(self) -> float | None:
        return None if self.mean is None or self.half is None else self.mean + self.half


def finite(values: Iterable[float | None]) -> np.ndarray:
    return np.array([v for v in values if v is not None and math.isfinite(v)], float)


def mean_ci(values: Iterable[float | None]) -> Interval:
    """Mean and 95% t-interval of the finite values; no interval for n < 2 (one run has no spread)."""
    vals = finite(values)
    n = len(vals)
    if n == 0:
        return Interval(None, None, 0)
    mean = float(vals.mean())
    if n < 2:
        return Interval(mean, None, n)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * vals.std(ddof=1) / math.sqrt(n))
    return Interval(mean, half, n)


@dataclass(frozen=True)
class Paired:
    """A design against the baseline on the seeds both have a finite value for.

    `of` and `unpaired` say what the pairing left out, so a seed that failed is never silently
    dropped: `seeds + sum(unpaired.values()) == of` (set by ranking, which knows why).
    """

    diff: Interval  # mean of (design - baseline) over shared seeds, with its t-interval
    p_improve: float | None  # share of shared seeds where the design is better (ties count half)
    seeds: int
    of: int = 0  # the design's seeds, paired or not
    unpaired: Mapping[str, int] = field(default_factory=dict)  # why the others are left out -> count


def paired(design: Mapping[str, float], baseline: Mapping[str, float], maximize: bool) -> Paired:
    """Paired difference over shared seeds ({seed: value} each) and the probability of improvement.

    The probability of improvement is the share of shared seeds on which the design beats the
    baseline, ties counted as half (as in rliable's P(X > Y)); 0.5 means no better, no worse.
    """
    shared = sorted(set(design) & set(baseline))
    pairs = [(design[s], baseline[s]) for s in shared]
    pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
    if not pairs:
        return Paired(Interval(None, None, 0), None, 0)
    a, b = np.array(pairs).T
    diff = a - b
    better = diff > 0 if maximize else diff < 0
    wins = float(better.sum() + 0.5 * (diff == 0).sum())
    return Paired(mean_ci(diff.tolist()), wins / len(diff), len(diff))


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
