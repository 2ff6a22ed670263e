"""LossLab's Lightning callbacks, built in one place from their config sections.

They are not a config group to pick from, as a user's callbacks are (`trainer=early_stopping`,
`+trainer.callbacks=[...]`, added after these): a run without the recorder records nothing, and the
statistics and the guard write into the recorder's step buffer under the run's outcome rules. What
is configurable about them is config: `grad_stats.*` and `outcome.stop_on_divergence`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytorch_lightning as pl
from omegaconf import DictConfig

from losslab.train.callbacks import gradients, guard
from losslab.train.callbacks.gradients import GradientStats
from losslab.train.callbacks.guard import DivergenceGuard
from losslab.train.callbacks.recording import TrackingCallback

if TYPE_CHECKING:
    from losslab.outcomes.rules import OutcomeRules
    from losslab.train.steplog import StepBuffer


@dataclass(frozen=True)
class LossLabCallbacks:
    """The callbacks of one run; `in_order()` is the order they go to the Trainer."""

    stats: GradientStats | None  # None on a DDP rank that records nothing
    guard: DivergenceGuard | None  # None with outcome.stop_on_divergence=false
    tracker: TrackingCallback  # gets its recorder once the run exists

    def in_order(self) -> list[pl.Callback]:
        """Statistics, guard, then the tracker: it flushes after the others recorded the step."""
        return [cb for cb in (self.stats, self.guard, self.tracker) if cb is not None]


def build_callbacks(cfg: DictConfig, rules: OutcomeRules, buffer: StepBuffer | None) -> LossLabCallbacks:
    """LossLab's callbacks for a run configured by `cfg`; without a `buffer`, no gradient statistics.

    The classes are looked up on their modules at each call, so `bench/hostreads.accelerator_paths`
    can swap in their accelerator variants on a CPU-only machine."""
    stats = gradients.GradientStats(buffer, **(cfg.get("grad_stats") or {})) if buffer is not None else None
    stop = guard.DivergenceGuard(rules) if cfg.outcome.get("stop_on_divergence", True) else None
    return LossLabCallbacks(stats, stop, TrackingCallback(None))
