"""The measurements the outcome labels are decided on, computed once per curve.

Hand-written numpy (a few dozen lines): the figures are simple (medians, a least-squares line, one
FFT), and what matters is exactly which ones and why, which the docstrings say. No library offers
"loss curve outcome" measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from losslab.outcomes.rules import OutcomeRules


@dataclass(frozen=True)
class Figures:
    """Shape figures of a finite curve (all differences, so shift/scale invariant in ratio).

    Levels: `start` (median of the first points), `end` (median of the last window), `best` and
    `worst` (lowest / highest median over any window of the same length). `gain` = start - best (>= 0),
    `drop` = start - end, `height` = max - min of the raw curve (the plot's height),
    `above_start` = share of the later points above the start, `noise` = a
    robust step-to-step standard deviation. `win_change` is the least-squares change across the last
    window, `win_t` its t statistic. `osc_*`: the strongest oscillation of the last half.
    """

    n: int
    start_points: int
    above_start: float
    window: int
    trend_window: int
    start: float
    end: float
    best: float
    best_index: int
    worst: float
    height: float
    noise: float
    win_change: float
    win_t: float
    osc_period: float
    osc_share: float
    osc_swing: float

    @property
    def gain(self) -> float:
        return max(self.start - self.best, 0.0)

    @property
    def drop(self) -> float:
        return self.start - self.end


def window_size(n: int, rules: OutcomeRules) -> int:
    """The last window: `window_fraction` of the run, at least `min_window`, at most half of it."""
    return max(1, min(n // 2, max(rules.min_window, math.ceil(rules.window_fraction * n))))


def rolling_median(y: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Medians of windows of `w` points (robust to a spike), at a stride of w/10; the last window is
    always included. Returns (medians, index of each window's centre)."""
    stride = max(1, w // 10)
    starts = np.unique(np.r_[np.arange(0, len(y) - w + 1, stride), len(y) - w])
    windows = np.lib.stride_tricks.sliding_window_view(y, w)[starts]
    return np.median(windows, axis=1), starts + w // 2


def robust_noise(y: np.ndarray) -> float:
    """Standard deviation of white noise on y, from second differences (which a smooth trend barely moves).

    The larger of two robust readings, each scaled to a Gaussian's sigma: the median |second
    difference| (ignores up to half the points: spikes, the initial drop) and the 90th percentile
    (sees sparse noise, e.g. a hinge loss that is exactly 0 on most batches).
    """
    if len(y) < 3:
        return 0.0
    d2 = np.abs(np.diff(y, 2)) / math.sqrt(6.0)
    return float(max(1.4826 * np.median(d2), np.percentile(d2, 90) / 1.6449))


def trend(last: np.ndarray) -> tuple[float, float]:
    """Least-squares change across `last` (slope x (w - 1)) and the slope's t statistic."""
    w = len(last)
    if w < 3:
        change = float(last[-1] - last[0]) if w > 1 else 0.0
        return change, math.inf if change else 0.0
    x = np.arange(w, dtype=np.float64) - (w - 1) / 2.0
    sxx = float(x @ x)
    slope = float(x @ (last - last.mean())) / sxx
    resid = last - last.mean() - slope * x
    se = math.sqrt(float(resid @ resid) / (w - 2) / sxx)
    t_stat = abs(slope) / se if se > 0 else (math.inf if slope else 0.0)
    return slope * (w - 1), t_stat


def oscillation(seg: np.ndarray) -> tuple[float, float, float]:
    """(period in steps, share of variance, peak-to-peak swing) of the strongest periodic band of `seg`.

    The segment is detrended by a quadratic (a converging curve is smooth, not periodic), then its
    power spectrum is searched for the frequency band (peak bin +- 1) holding the most variance,
    among frequencies of at least 3 cycles per segment (period 2 up to a third of the segment). A sine
    puts ~90% of the variance in its band, white noise a few percent per band.
    """
    m = len(seg)
    if m < 8:
        return math.nan, 0.0, 0.0
    x = np.linspace(-1.0, 1.0, m)
    resid = seg - np.polyval(np.polyfit(x, seg, 2), x)
    total = float(resid @ resid)
    if total <= 0:
        return math.nan, 0.0, 0.0
    spec = np.abs(np.fft.rfft(resid)) ** 2
    weight = np.full(len(spec), 2.0)
    weight[0] = 1.0
    if m % 2 == 0:
        weight[-1] = 1.0
    power = weight * spec / m  # Parseval: power.sum() == total
    k_lo = 3  # at least 3 cycles in the segment: a kink or a late drop is not an oscillation
    if len(power) <= k_lo:
        return math.nan, 0.0, 0.0
    band = np.convolve(power, np.ones(3), mode="same")
    band[0] = 0.0
    k = int(k_lo + np.argmax(band[k_lo:]))
    share = float(band[k] / total)
    swing = 2.0 * math.sqrt(2.0 * band[k] / m)  # peak-to-peak of a sine with that variance
    return m / k, share, swing


def figures(y: np.ndarray, rules: OutcomeRules) -> Figures:
    """All figures of a finite curve with at least 4 points."""
    n = len(y)
    w = window_size(n, rules)
    k0 = max(1, min(rules.start_points, n // 4))
    above = float((y[k0:] > np.median(y[:k0])).mean())
    means, centres = rolling_median(y, w)
    best_i = int(np.argmin(means))
    tw = max(1, min(n // 2, max(rules.min_window, math.ceil(rules.trend_fraction * n))))
    change, t_stat = trend(y[-tw:])
    period, share, swing = oscillation(y[n // 2 :])
    return Figures(
        n=n,
        start_points=k0,
        above_start=above,
        window=w,
        trend_window=tw,
        start=float(np.median(y[:k0])),
        end=float(means[-1]),
        best=float(min(means[best_i], np.median(y[:k0]))),
        best_index=int(centres[best_i]),
        worst=float(means.max()),
        height=float(y.max() - y.min()),
        noise=robust_noise(y),
        win_change=change,
        win_t=t_stat,
        osc_period=period,
        osc_share=share,
        osc_swing=swing,
    )
