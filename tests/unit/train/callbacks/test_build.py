"""LossLab's callbacks come from one builder, set by `grad_stats.*` and `outcome.stop_on_divergence`."""

from __future__ import annotations

from conftest import compose
from losslab.outcomes.rules import OutcomeRules
from losslab.train.callbacks import build_callbacks
from losslab.train.callbacks.gradients import GradientStats
from losslab.train.callbacks.guard import DivergenceGuard
from losslab.train.callbacks.recording import TrackingCallback
from losslab.train.steplog import StepBuffer


def test_default_run_gets_statistics_guard_and_tracker_last():
    cfg = compose(["grad_stats.every_n_steps=5", "grad_stats.per_layer=false"])
    ours = build_callbacks(cfg, OutcomeRules(), StepBuffer(capacity=8))
    assert [type(cb) for cb in ours.in_order()] == [GradientStats, DivergenceGuard, TrackingCallback]
    assert ours.stats is not None and ours.stats.every == 5 and ours.stats.per_layer is False
    assert ours.tracker.recorder is None  # it gets the recorder once the run exists


def test_no_guard_when_switched_off_and_no_statistics_without_a_buffer():
    cfg = compose(["outcome.stop_on_divergence=false"])
    assert [type(cb) for cb in build_callbacks(cfg, OutcomeRules(), StepBuffer(8)).in_order()] == [
        GradientStats,
        TrackingCallback,
    ]
    ddp_rank = build_callbacks(compose(), OutcomeRules(), buffer=None)  # a DDP rank records nothing
    assert [type(cb) for cb in ddp_rank.in_order()] == [DivergenceGuard, TrackingCallback]
