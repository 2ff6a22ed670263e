"""Thresholds of the outcome classifier, the divergence guard and the overfitting tag.

Every field is a config key: `outcome.NAME=VALUE` on the command line (src/losslab/conf/train.yaml lists them
all, so no `+` is needed). The numbers are defaults chosen on the labelled corpus in
tests/data/outcome_curves (synthetic families and recorded LossLab runs); the comment on each field
says why it sits where it does.

Two kinds of rule, on purpose:
- *shape* rules (worse than start, rising, oscillating, still improving, converged, plateaued) use
  only differences of the curve compared with each other (drop, rise, swing, noise). They are
  unchanged when a constant is added to the loss, when it is multiplied by a positive number, and
  when the same shape is recorded over a different number of steps (windows are fractions of the run).
- *magnitude* rules (hard cap, sustained blow-up) compare the loss with its first value, because a
  blow-up is a statement about size ("10x where it started"). The guard stops a run on these only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class OutcomeRules:
    """Thresholds (Hydra: the `outcome:` config section, minus `stop_on_divergence`)."""

    # ------------------------------------------------------------------ magnitude: the guard's rules
    #: Hard cap: one loss value above `hard_cap` x |first loss| (above the first loss) is divergence at
    #: once. The worst spike that recovered in the corpus is 124x (MSE + RMSprop lr 0.01); 1e6 is
    #: four orders of magnitude beyond it.
    hard_cap: float = 1e6
    #: Sustained blow-up: the loss stays above `blowup_factor` x |first loss| ...
    blowup_factor: float = 10.0
    #: ... for `blowup_patience` of the planned run (5%), i.e. it did not come back quickly. The
    #: recovering MSE + RMSprop lr 0.01 spike stays above 10x for 3 steps; the blow-ups of the corpus
    #: never come back.
    blowup_patience: float = 0.05
    #: ... and for at least this many steps, whatever the run length.
    blowup_min_steps: int = 10
    #: Losses and differences below this are zero (keeps a curve at exactly 0 from dividing by 0).
    abs_floor: float = 1e-12
    #: Differences below this share of the loss level are float32 rounding, not a change.
    rel_resolution: float = 1e-6

    # ------------------------------------------------------------------ shape: the classifier
    #: The start level is the median of the first `start_points` losses (default: the loss before
    #: the first update); the end level is the median of the last window.
    start_points: int = 1
    #: Ended worse than it started also when this share (99%) of the later points lie above the start
    #: (an erratic loss that jumped up at once and never came back, e.g. focal with SGD lr 10).
    worse_share: float = 0.99
    #: The last window is this fraction of the run (the last 10%: "where it ended up") ...
    window_fraction: float = 0.1
    #: ... and at least this many points (below ~10 a slope is noise).
    min_window: int = 10
    #: A change is "clear" when it exceeds `noise_z` x the step-to-step noise (a robust standard
    #: deviation from second differences, which a smooth trend does not inflate).
    noise_z: float = 4.0
    #: The trend (still falling, rising) is read from the last `trend_fraction` of the run (25%):
    #: longer than the end window, so a slow fall under minibatch noise is still measurable.
    trend_fraction: float = 0.25
    #: A trend is clear when its least-squares t statistic is at least this.
    trend_t: float = 3.0
    #: ... and it matters when it changes the loss at least at this share (20%) of the run's average
    #: rate (gain / steps), i.e. by 5% of the gain across the last quarter: exp(-t/tau) then reads
    #: as still improving for tau > n/3.6 and as converged below.
    progress_tol: float = 0.2
    #: Converged needs the end within this share (25%) of the gain above the best level.
    near_tol: float = 0.25
    #: A curve that is still rising and has given back this share (50%) of its gain is diverged.
    giveback_tol: float = 0.5
    #: Oscillation: one sinusoid (2+ cycles in the last half: a period from 2 steps to a quarter of
    #: the run) carries this share (50%) of the last half's variance around its quadratic trend ...
    osc_share: float = 0.5
    #: ... and more than white noise of the same length reaches with this probability (0.1%): a
    #: short half needs more (97.5% at 10 points, 73% at 20, 45% at 40; the 50% above rules from 36
    #: points on), so a run of 20 steps can oscillate and a noisy one does not by chance.
    osc_false_alarm: float = 0.001
    #: ... and its peak-to-peak swing is at least this share (5%) of the curve's own range
    #: (max - min: the height of the plot), so a user would see it.
    osc_amplitude: float = 0.05

    # ------------------------------------------------------------------ overfitting (val curve)
    #: Overfitting: the val loss at the end is above its best by this share (10%) of the best's
    #: distance to the start, or of the best itself, whichever is smaller, while the train loss
    #: kept falling (beyond `noise_z` standard errors) after the best val step.
    overfit_rise: float = 0.1

    def __post_init__(self) -> None:
        checks = {
            "hard_cap must be > blowup_factor > 1": self.hard_cap > self.blowup_factor > 1,
            "blowup_patience must be in [0, 1]": 0 <= self.blowup_patience <= 1,
            "blowup_min_steps, start_points must be >= 1": min(self.blowup_min_steps, self.start_points) >= 1,
            "abs_floor, rel_resolution must be >= 0": min(self.abs_floor, self.rel_resolution) >= 0,
            "window_fraction, trend_fraction must be in (0, 0.5]": min(
                self.window_fraction, self.trend_fraction
            )
            > 0
            and max(self.window_fraction, self.trend_fraction) <= 0.5,
            "min_window must be >= 3": self.min_window >= 3,
            "noise_z, trend_t, progress_tol must be >= 0": min(self.noise_z, self.trend_t, self.progress_tol)
            >= 0,
            "osc_false_alarm must be in (0, 1)": 0 < self.osc_false_alarm < 1,
            "near_tol, giveback_tol, worse_share, osc_share, osc_amplitude must be in [0, 1]": all(
                0 <= v <= 1
                for v in (
                    self.near_tol,
                    self.giveback_tol,
                    self.worse_share,
                    self.osc_share,
                    self.osc_amplitude,
                )
            ),
            "overfit_rise must be >= 0": self.overfit_rise >= 0,
        }
        bad = [msg for msg, ok in checks.items() if not ok]
        if bad:
            raise ValueError("invalid outcome rules: " + "; ".join(bad))

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
        kwargs: dict[str, Any] = {}
        for k, v in cfg.items():
            try:
                kwargs[k] = int(v) if known[k] == "int" else float(v)
            except (TypeError, ValueError):
                raise ValueError(f"outcome.{k}={v!r} is not a number") from None
        return cls(**kwargs)

    def patience(self, planned_steps: int) -> int:
        """Steps a blow-up must last: `blowup_patience` of the planned run, at least `blowup_min_steps`."""
        return max(self.blowup_min_steps, math.ceil(self.blowup_patience * max(planned_steps, 0)))
