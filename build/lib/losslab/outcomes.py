"""What happened to a training run, read off its loss curve.

Two consumers need the same judgement: the report, which labels a finished curve, and
the trainer, which should stop a run that has already blown up instead of burning the
rest of its budget on nan. `classify` does the first and `DivergenceGuard` the second;
both use one blow-up rule (non-finite loss, or a smoothed loss far above its best
value) so a run the guard stopped is always labelled `diverged`, at the same step.

Labels (public contract, stored in the tracker): `converged`, `diverged`,
`oscillating`, `plateaued`, `still_improving`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

LABELS = ("converged", "diverged", "oscillating", "plateaued", "still_improving")


@dataclass(frozen=True)
class OutcomeRules:
    """Thresholds of the classifier and the guard (Hydra: the `outcome:` config section).

    Windows: the trend is read from the last `window` points, where
    `window = max(min_window, window_fraction * steps)`; the start level is the mean
    of the first `window` points. Curves shorter than `2 * min_window` use halves.
    """

    #: Weight of the newest loss in the smoothed loss (EMA). 0.1 averages ~10 steps,
    #: enough to ignore one bad minibatch but react within a few dozen steps.
    ema_alpha: float = 0.1
    #: Blow-up: the EMA exceeds this multiple of its running minimum. SGD noise moves
    #: the EMA by tens of percent, never by 10x.
    blowup_factor: float = 10.0
    #: The running minimum is clamped from below at this fraction (5%) of the starting
    #: loss, so a loss that falls to ~0 and then jitters (hinge on separable data reaches
    #: exactly 0 on most batches) is not a "10x" blow-up: diverging means climbing back
    #: to at least half the starting level.
    min_floor: float = 0.05
    #: Absolute floor under every scale (losses below it count as zero); keeps a curve
    #: that starts at exactly 0 from dividing by zero.
    abs_floor: float = 1e-8
    #: Slow divergence: the last window's mean ends this many times above the first
    #: window's mean (a run that ends worse than it started, without a sudden jump).
    slow_divergence_factor: float = 2.0
    #: Fewest points in a window: below ~10 a slope or an autocorrelation is noise.
    min_window: int = 10
    #: Window length as a fraction of the curve: the last 10% is "where it ended up".
    window_fraction: float = 0.1
    #: Flat: the least-squares change across the last window is below this fraction of
    #: the window's level (5%). Smaller would call minibatch noise a trend.
    slope_tol: float = 0.05
    #: A trend must also be clear of the noise: |slope| >= trend_t standard errors.
    trend_t: float = 3.0
    #: Converged although still falling: the last window's decrease is below this share
    #: (1%) of the whole decrease. A 1/t or exponential tail keeps falling in relative
    #: terms forever; what matters is that it no longer adds to the total.
    progress_tol: float = 0.01
    #: Converged although rising a little: after a large drop, a last-window rise under
    #: this share (5%) of the whole decrease is minibatch noise around a small level
    #: (e.g. a regression that reached its noise floor), not a trend worth a label.
    settle_tol: float = 0.05
    #: Converged needs the loss to have fallen by this fraction of its start (50%);
    #: less is a plateau (or a run that never learned).
    min_drop: float = 0.5
    #: Oscillating: lag-1 autocorrelation of the last window's residuals around its
    #: linear fit below this (-0.5): the loss alternates up/down step after step.
    osc_autocorr: float = -0.5
    #: ... and below -osc_z / sqrt(window): white noise has autocorrelation ~N(0, 1/w),
    #: so short windows need a stronger signal (matters only for windows under 36;
    #: at the minimum window of 10 it asks for -0.95).
    osc_z: float = 3.0
    #: ... and the residual std is at least this fraction (1%) of the level, so float
    #: rounding on a flat curve does not count as oscillation.
    osc_amplitude: float = 0.01

    def __post_init__(self) -> None:
        checks = {
            "ema_alpha must be in (0, 1]": 0 < self.ema_alpha <= 1,
            "blowup_factor must be > 1": self.blowup_factor > 1,
            "slow_divergence_factor must be > 1": self.slow_divergence_factor > 1,
            "min_floor and abs_floor must be >= 0": self.min_floor >= 0 and self.abs_floor >= 0,
            "min_window must be >= 3": self.min_window >= 3,
            "window_fraction must be in (0, 0.5]": 0 < self.window_fraction <= 0.5,
            "slope_tol, trend_t, progress_tol, settle_tol must be >= 0": min(
                self.slope_tol, self.trend_t, self.progress_tol, self.settle_tol
            )
            >= 0,
            "min_drop must be in [0, 1]": 0 <= self.min_drop <= 1,
            "osc_autocorr must be in [-1, 0]": -1 <= self.osc_autocorr <= 0,
            "osc_z and osc_amplitude must be >= 0": self.osc_z >= 0 and self.osc_amplitude >= 0,
        }
        bad = [msg for msg, ok in checks.items() if not ok]
        if bad:
            raise ValueError("invalid OutcomeRules: " + "; ".join(bad))

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> OutcomeRules:
        """Build from a config mapping (e.g. Hydra's `outcome:` DictConfig); missing keys keep defaults.

        Unknown keys raise, so a typo in the config does not silently fall back to a default.
        """
        if cfg is None:
            return cls()
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(cfg) - set(known))
        if unknown:
            raise ValueError(f"unknown outcome rule(s) {unknown}; accepted: {sorted(known)}")
        kwargs = {k: int(v) if known[k] == "int" else float(v) for k, v in cfg.items()}
        return cls(**kwargs)


@dataclass(frozen=True)
class Outcome:
    """The verdict on one loss curve.

    `first_bad_step` indexes the curve (the caller maps it to a global step); it is set
    for `diverged` only. The figures are nan when the curve is too short to compute them.
    """

    label: str
    reason: str
    first_bad_step: int | None
    #: (first-window mean - last-window mean) / |first-window mean|; 0.97 = fell 97%.
    drop: float
    #: Least-squares change across the last window / its level; -0.1 = still falling 10%.
    rel_slope: float
    #: Lag-1 autocorrelation of the last window's residuals around its linear fit.
    autocorr: float
    #: Number of points in the curve and in each window.
    n_steps: int
    window: int


# ----------------------------------------------------------------------------- blow-up rule


def _floor(start: float, rules: OutcomeRules) -> float:
    """Smallest scale a loss that started at `start` is measured against."""
    return max(abs(start) * rules.min_floor, rules.abs_floor)


def _blowup_limit(run_min: float, floor: float, factor: float) -> float:
    """EMA above this is a blow-up. For losses >= 0 it is exactly factor x max(run_min, floor).

    For signed losses (e.g. Gaussian NLL) the margin scales with |run_min|, so a loss
    moving from -1 to -0.5 is not called a blow-up.
    """
    return max(run_min, floor) + (factor - 1.0) * max(abs(run_min), floor)


def _blowup_reason(ema: float, reference: float, step: int, factor: float) -> str:
    return (
        f"smoothed loss reached {ema:.4g} at step {step}, "
        f"over {factor:g}x its running minimum {reference:.4g}"
    )


def _first_blowup(y: np.ndarray, rules: OutcomeRules) -> tuple[int, float, float] | None:
    """First index where the EMA exceeds the blow-up limit, with the EMA and running min there.

    Same recurrence, in the same order, as `DivergenceGuard._update`.
    """
    ema = run_min = float(y[0])
    floor = _floor(ema, rules)
    a = rules.ema_alpha
    for i, x in enumerate(y.tolist()):
        ema = ema + a * (x - ema)
        run_min = min(run_min, ema)
        if ema > _blowup_limit(run_min, floor, rules.blowup_factor):
            return i, ema, run_min
    return None


# ----------------------------------------------------------------------------- window figures


@dataclass(frozen=True)
class _Figures:
    window: int
    first_mean: float
    last_mean: float
    drop: float
    rel_slope: float
    t_stat: float
    share: float
    autocorr: float
    amplitude: float


def _window_size(n: int, rules: OutcomeRules) -> int:
    if n < 2 * rules.min_window:
        return max(1, n // 2)
    return max(rules.min_window, math.ceil(rules.window_fraction * n))


def _trend(last: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Least-squares slope per step, its t statistic, and the residuals."""
    w = len(last)
    if w < 3:
        slope = float(last[-1] - last[0]) / max(w - 1, 1)
        return slope, math.inf if slope else 0.0, np.zeros(w)
    x = np.arange(w, dtype=np.float64) - (w - 1) / 2.0
    sxx = float(x @ x)
    slope = float(x @ (last - last.mean())) / sxx
    resid = last - last.mean() - slope * x
    se = math.sqrt(float(resid @ resid) / (w - 2) / sxx)
    t_stat = abs(slope) / se if se > 0 else (math.inf if slope else 0.0)
    return slope, t_stat, resid


def _lag1(resid: np.ndarray) -> float:
    """Lag-1 autocorrelation, normalised per pair so a perfect +/- alternation gives -1 at any length."""
    w, ss = len(resid), float(resid @ resid)
    if ss <= 0 or w < 3:
        return 0.0
    return float(resid[:-1] @ resid[1:]) / ss * w / (w - 1)


def _figures(y: np.ndarray, rules: OutcomeRules) -> _Figures:
    w = _window_size(len(y), rules)
    first_mean, last_mean = float(y[:w].mean()), float(y[-w:].mean())
    floor = _floor(first_mean, rules)
    slope, t_stat, resid = _trend(y[-w:])
    level = max(abs(last_mean), floor)
    total = first_mean - last_mean
    return _Figures(
        window=w,
        first_mean=first_mean,
        last_mean=last_mean,
        drop=total / max(abs(first_mean), rules.abs_floor),
        rel_slope=slope * w / level,
        t_stat=t_stat,
        share=(-slope * w) / total if total > 0 else math.inf,
        autocorr=_lag1(resid),
        amplitude=float(resid.std()) / level,
    )


# ----------------------------------------------------------------------------- classifier


def _pct(x: float) -> str:
    return f"{100 * abs(x):.3g}%"


def _verdict(label: str, reason: str, fig: _Figures | None, n: int, bad: int | None = None) -> Outcome:
    nan = math.nan
    return Outcome(
        label=label,
        reason=reason,
        first_bad_step=bad,
        drop=fig.drop if fig else nan,
        rel_slope=fig.rel_slope if fig else nan,
        autocorr=fig.autocorr if fig else nan,
        n_steps=n,
        window=fig.window if fig else 0,
    )


def _as_curve(curve: Sequence[float] | np.ndarray | Tensor) -> np.ndarray:
    if isinstance(curve, Tensor):
        curve = curve.detach().cpu().to(torch.float64).numpy()
    y = np.asarray(curve, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"a loss curve must be 1-D (one value per step), got shape {y.shape}")
    if y.size == 0:
        raise ValueError("cannot classify an empty loss curve")
    return y


def _divergence(y: np.ndarray, rules: OutcomeRules) -> Outcome | None:
    """`diverged` verdict from non-finite values or the EMA blow-up rule, else None."""
    n = len(y)
    nonfinite = np.flatnonzero(~np.isfinite(y))
    stop = int(nonfinite[0]) if nonfinite.size else n
    blow = _first_blowup(y[:stop], rules) if stop else None
    fig = _figures(y[:stop], rules) if stop else None
    if blow is not None:
        i, ema, run_min = blow
        reference = max(run_min, _floor(float(y[0]), rules))
        reason = _blowup_reason(ema, reference, i, rules.blowup_factor)
        return _verdict("diverged", reason, fig, n, i)
    if stop < n:
        return _verdict("diverged", f"loss became {y[stop]} at step {stop}", fig, n, stop)
    return None


def _slow_divergence(y: np.ndarray, fig: _Figures, rules: OutcomeRules) -> Outcome | None:
    """`diverged` when the curve ends `slow_divergence_factor` times above where it started."""
    floor = _floor(fig.first_mean, rules)
    limit = _blowup_limit(fig.first_mean, floor, rules.slow_divergence_factor)
    if fig.last_mean <= limit:
        return None
    ema, a, first = float(y[0]), rules.ema_alpha, len(y) - 1
    for i, x in enumerate(y.tolist()):
        ema = ema + a * (x - ema)
        if ema > limit:
            first = i
            break
    reason = (
        f"slow divergence: the last {fig.window} steps average {fig.last_mean:.4g}, over "
        f"{rules.slow_divergence_factor:g}x the first {fig.window} steps ({fig.first_mean:.4g})"
    )
    return _verdict("diverged", reason, fig, len(y), first)


def _oscillation(fig: _Figures, rules: OutcomeRules) -> bool:
    limit = min(rules.osc_autocorr, -rules.osc_z / math.sqrt(fig.window))
    return fig.window >= 3 and fig.autocorr < limit and fig.amplitude > rules.osc_amplitude


def _trend_label(fig: _Figures, rules: OutcomeRules) -> tuple[str, str]:
    """Label and reason for a finite, non-oscillating curve, from drop and last-window trend."""
    w, fell = fig.window, f"loss fell {_pct(fig.drop)}" if fig.drop >= 0 else f"loss rose {_pct(fig.drop)}"
    clear = fig.t_stat >= rules.trend_t
    if fig.rel_slope < -rules.slope_tol and clear:
        if fig.drop >= rules.min_drop and fig.share < rules.progress_tol:
            return "converged", (
                f"{fell}; the last {w} steps still fell {_pct(fig.rel_slope)}, but that is "
                f"only {_pct(fig.share)} of the total decrease"
            )
        return "still_improving", f"{fell} and the last {w} steps still fell {_pct(fig.rel_slope)}"
    if fig.rel_slope > rules.slope_tol and clear:
        if fig.drop >= rules.min_drop and fig.share < rules.settle_tol:
            return "converged", (
                f"{fell}; the last {w} steps rose {_pct(fig.rel_slope)} of a small level, only "
                f"{_pct(fig.share)} of the total decrease (settled at its noise floor)"
            )
        return "plateaued", (
            f"{fell} but the last {w} steps rose {_pct(fig.rel_slope)} (not enough to call diverged)"
        )
    noise = " (within the noise)" if abs(fig.rel_slope) >= rules.slope_tol else ""
    changed = f"the last {w} steps changed {_pct(fig.rel_slope)}{noise}"
    if fig.drop >= rules.min_drop:
        return "converged", f"{fell} and {changed}"
    direction = " (rising slightly)" if fig.rel_slope > 0 and clear else ""
    return "plateaued", (
        f"{fell} (under the {_pct(rules.min_drop)} drop needed to count as converged) "
        f"and {changed}{direction}"
    )


def _tiny_curve(y: np.ndarray, fig: _Figures, rules: OutcomeRules) -> Outcome:
    """Curves under 6 points: no trend or autocorrelation can be estimated, only a direction."""
    n = len(y)
    if n == 1:
        return _verdict("plateaued", "a single point cannot show progress", fig, n)
    label = "still_improving" if fig.drop > rules.slope_tol else "plateaued"
    verb = "fell" if fig.drop >= 0 else "rose"
    return _verdict(label, f"only {n} points, too few for a trend; the loss {verb} {_pct(fig.drop)}", fig, n)


def classify(curve: Sequence[float] | np.ndarray | Tensor, rules: OutcomeRules | None = None) -> Outcome:
    """Label a training-loss curve (one value per optimizer step) with one of `LABELS`.

    Order of the rules: diverged (non-finite, EMA blow-up, slow divergence), then
    oscillating, then the trend of the last window (still_improving / converged /
    plateaued). Raises ValueError for an empty or non-1-D curve.
    """
    rules = rules or OutcomeRules()
    y = _as_curve(curve)
    verdict = _divergence(y, rules)
    if verdict is not None:
        return verdict
    fig = _figures(y, rules)
    if fig.window < 3:
        return _tiny_curve(y, fig, rules)
    verdict = _slow_divergence(y, fig, rules)
    if verdict is not None:
        return verdict
    short = f"short curve ({len(y)} points, judged on halves): " if len(y) < 2 * rules.min_window else ""
    if _oscillation(fig, rules):
        reason = (
            f"the last {fig.window} steps alternate around their trend (lag-1 autocorrelation "
            f"{fig.autocorr:.2f}, amplitude {_pct(fig.amplitude)} of the level)"
        )
        return _verdict("oscillating", short + reason, fig, len(y))
    label, reason = _trend_label(fig, rules)
    return _verdict(label, short + reason, fig, len(y))


# ----------------------------------------------------------------------------- Lightning guard


def _loss_of(outputs: Any) -> Tensor | None:
    """The training loss from `on_train_batch_end` outputs (a tensor, or a dict with "loss")."""
    if isinstance(outputs, Mapping):
        outputs = outputs.get("loss")
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, (int, float)):
        return torch.tensor(float(outputs))
    return None


@dataclass
class _HostState:
    """DivergenceGuard's state on the host (CPU training): EMA, running min, first bad step."""

    ema: float
    run_min: float
    floor: float
    bad_step: int | None = None
    loss: float = math.nan
    bad_ema: float = math.nan
    bad_min: float = math.nan


class DivergenceGuard(pl.Callback):
    """Stop training as soon as the training loss diverges (same blow-up rule as `classify`).

    On an accelerator the EMA, running minimum, "bad" flag and first bad step live on the
    loss's device and are updated with tensor ops, so a step costs a handful of tiny kernels
    and no host sync; the flag is read to the host only every `check_every` batches (default
    50). The first bad step is tracked on the device, so it is exact whatever `check_every` is.
    On CPU, reading the loss is free and a dozen eager tensor ops cost more than the rule
    itself, so the same recurrence runs on Python floats (float64, exactly as `classify` runs
    it) and is checked every batch unless `check_every` says otherwise. Stopping sets
    `trainer.should_stop`, so the run ends normally (Lightning honours it only after
    `min_steps` / `min_epochs`).

    The step recorded is `trainer.global_step - 1` at the bad batch, i.e. the index of
    the optimizer step whose loss was bad. Slow divergence needs the whole curve and is
    left to `classify`.
    """

    def __init__(
        self, rules: OutcomeRules | None = None, check_every: int | None = None, on_device: bool | None = None
    ) -> None:
        """`on_device`: None = tensor ops on accelerators, floats on CPU; True = tensor ops everywhere."""
        if check_every is not None and check_every < 1:
            raise ValueError(f"check_every must be >= 1 or None, got {check_every}")
        self.rules = rules or OutcomeRules()
        self.check_every = check_every
        self.on_device = on_device
        self._reset()

    def _reset(self) -> None:
        self.stopped_step: int | None = None
        self.reason: str = ""
        self.stopped = False
        self._every = self.check_every
        self._seen = 0
        self._t: dict[str, Tensor] = {}
        self._host: _HostState | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset()

    def _init_state(self, x: Tensor) -> None:
        """Start the EMA at the first loss, like `classify` does."""
        if self._every is None:
            self._every = 1 if x.device.type == "cpu" else 50
        floor = torch.clamp(x.abs() * self.rules.min_floor, min=self.rules.abs_floor)
        minus_one = torch.full((), -1, dtype=torch.int64, device=x.device)
        self._t = {
            "ema": x.clone(),
            "min": x.clone(),
            "floor": floor,
            "bad": torch.zeros_like(x, dtype=bool),
            "step": minus_one,
            "loss": x.clone(),
            "bad_ema": x.clone(),
            "bad_min": x.clone(),
        }

    def _update(self, x: Tensor, step: int) -> None:
        """One step of the blow-up rule in tensor ops (mirrors `_first_blowup`)."""
        t, a, f = self._t, self.rules.ema_alpha, self.rules.blowup_factor
        t["ema"] = t["ema"] + a * (x - t["ema"])
        t["min"] = torch.minimum(t["min"], t["ema"])
        limit = torch.maximum(t["min"], t["floor"]) + (f - 1.0) * torch.maximum(t["min"].abs(), t["floor"])
        new = (~torch.isfinite(x) | (t["ema"] > limit)) & ~t["bad"]
        t["step"] = torch.where(new, step, t["step"])
        for key, value in (("loss", x), ("bad_ema", t["ema"]), ("bad_min", t["min"])):
            t[key] = torch.where(new, value, t[key])
        t["bad"] = t["bad"] | new

    def _update_host(self, x: float, step: int) -> None:
        """The blow-up rule on Python floats: `_first_blowup`'s recurrence, one step at a time."""
        h = self._host
        if h is None:
            h = self._host = _HostState(ema=x, run_min=x, floor=_floor(x, self.rules))
        if h.bad_step is not None:
            return
        h.ema = h.ema + self.rules.ema_alpha * (x - h.ema)
        h.run_min = min(h.run_min, h.ema)
        if not math.isfinite(x) or h.ema > _blowup_limit(h.run_min, h.floor, self.rules.blowup_factor):
            h.bad_step, h.loss, h.bad_ema, h.bad_min = step, x, h.ema, h.run_min

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = _loss_of(outputs)
        if loss is None:
            return
        step = max(trainer.global_step - 1, 0)
        if loss.device.type == "cpu" and not self.on_device:
            self._update_host(float(loss) if loss.numel() == 1 else float(loss.detach().float().mean()), step)
            if self._every is None:
                self._every = 1
        else:
            x = loss.detach().to(torch.float32).mean()
            if not self._t:
                self._init_state(x)
            self._update(x, step)
        self._seen += 1
        if self._seen % self._every == 0:
            self._check(trainer)

    def _check(self, trainer: pl.Trainer) -> None:
        """Read the flag (one host sync) and, if any rank is bad, ask Lightning to stop."""
        local = self._sync()
        if trainer.strategy.reduce_boolean_decision(local, all=False):
            trainer.should_stop = True
            self.stopped = True
            if not local:
                self.reason = self.reason or "the loss diverged on another process"

    def _sync(self) -> bool:
        """Copy the guard's state to `stopped_step` / `reason`; True when the loss is bad."""
        h = self._host
        if h is not None:
            if h.bad_step is None:
                return False
        elif not self._t or not bool(self._t["bad"]):
            return False
        if self.stopped_step is None:
            if h is not None:
                assert h.bad_step is not None
                step, loss, bad_ema, bad_min, floor = h.bad_step, h.loss, h.bad_ema, h.bad_min, h.floor
            else:  # read from the device once, at the first check that sees the flag
                t = self._t
                step, loss = int(t["step"]), float(t["loss"])
                bad_ema, bad_min, floor = float(t["bad_ema"]), float(t["bad_min"]), float(t["floor"])
            self.stopped_step = step
            if math.isfinite(loss):
                reference = max(bad_min, floor)
                self.reason = _blowup_reason(bad_ema, reference, step, self.rules.blowup_factor)
            else:
                self.reason = f"loss became {loss} at step {step}"
        return True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sync()

    def state(self) -> dict[str, Any]:
        """Summary for the tracker: diverged, first_bad_step (global step or None), reason, stopped."""
        diverged = self._sync()
        return {
            "diverged": diverged,
            "first_bad_step": self.stopped_step,
            "reason": self.reason,
            "stopped": self.stopped,
        }
