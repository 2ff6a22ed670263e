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


#: the fewest cycles in the last half that count as an oscillation: 2 (a period up to a quarter of
#: the run); fewer is a kink or a late drop
MIN_CYCLES = 2.0


def oscillation(seg: np.ndarray) -> tuple[float, float, float]:
    """(period in steps, share of variance, peak-to-peak swing) of the strongest sinusoid in `seg`.

    The segment is detrended by a quadratic (a converging curve is smooth, not periodic); then, at
    every frequency of at least `MIN_CYCLES` cycles per segment up to the Nyquist frequency (period
    2), a sinusoid (a cosine and a sine, 2 degrees of freedom) is fitted to the residual by least
    squares, jointly with the quadratic, and the frequency that explains the most of it wins. The
    frequencies are a fine grid (at least 512 points over the whole band, so a period of 3 in a
    10-point segment is fitted within a few per cent), and the fits come from FFTs in closed form.
    A sine at any period puts nearly all of the variance in its fit; white noise of m points about
    1/m per frequency (`null_share` gives how far the best of all frequencies reaches by chance).
    """
    m = len(seg)
    if m < 8:
        return math.nan, 0.0, 0.0
    x = np.linspace(-1.0, 1.0, m)
    q, _ = np.linalg.qr(np.vander(x, 3))  # orthonormal basis of the quadratic trend
    resid = seg - q @ (q.T @ seg)
    total = float(resid @ resid)
    if total <= 0:
        return math.nan, 0.0, 0.0
    size = max(4 * m, 512)  # zero padding: frequency w_j = 2 pi j / size, j = 0 .. size/2
    j = np.arange(size // 2 + 1)
    w = 2.0 * np.pi * j / size
    cycles = j * m / size
    fr = np.fft.rfft(resid, size)
    rc, rs = fr.real, -fr.imag  # sum r_t cos(w t), sum r_t sin(w t)
    fq = np.fft.rfft(q, size, axis=0)
    qc, qs = fq.real, -fq.imag  # the quadratic basis against cos / sin, to project them off it
    sin_w = np.sin(w)
    tiny = np.abs(sin_w) < 1e-12  # w = 0 or pi: sum cos(2wt) = m
    dirichlet = np.where(tiny, float(m), np.sin(m * w) / np.where(tiny, 1.0, sin_w))
    c2, s2 = dirichlet * np.cos((m - 1) * w), dirichlet * np.sin((m - 1) * w)  # sum cos(2wt), sin(2wt)
    cc = (m + c2) / 2.0 - (qc**2).sum(1)
    ss = (m - c2) / 2.0 - (qs**2).sum(1)
    cs = s2 / 2.0 - (qc * qs).sum(1)
    det = cc * ss - cs * cs
    with np.errstate(divide="ignore", invalid="ignore"):
        two = (rs**2 * cc - 2.0 * cs * rc * rs + rc**2 * ss) / det
        one = rc**2 / cc  # at the Nyquist frequency the sine vanishes: the cosine alone
    use_two = (ss > 1e-6 * m) & (det > 1e-6 * np.abs(cc * ss))
    explained = np.where(use_two, two, np.where(cc > 1e-9 * m, one, 0.0))
    explained = np.where((cycles >= MIN_CYCLES) & np.isfinite(explained), explained, 0.0)
    k = int(np.argmax(explained))
    share = float(min(explained[k] / total, 1.0))
    swing = 2.0 * math.sqrt(2.0 * share * total / m)  # peak-to-peak of a sine with that variance
    return m / cycles[k], share, swing


def null_share(m: int, false_alarm: float) -> float:
    """The share of variance that the best-fitting sinusoid of `oscillation` reaches in white noise
    of `m` points with probability `false_alarm`.

    One frequency's share of the m - 3 residual degrees of freedom is Beta(1, (m - 5) / 2), so
    P(share > s) = (1 - s) ** ((m - 5) / 2); over the frequency grid, counted as m independent
    chances, s = 1 - (false_alarm / m) ** (2 / (m - 5)). Against 10,000 white-noise segments per
    length (false_alarm 0.001) it reads 0.975 / 0.733 / 0.454 / 0.218 at m = 10 / 20 / 40 / 100,
    where the simulated 99.9% quantiles are 0.968 / 0.730 / 0.457 / 0.216.
    """
    if m <= 5:
        return 1.0
    return float(1.0 - (false_alarm / m) ** (2.0 / (m - 5)))


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
