"""Outcome labels on the labelled corpus (tests/helpers.outcome_corpus.py), their invariances, the overfitting
tag, the divergence guard in real Lightning runs, and the tags end to end in a real MLflow store."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from helpers.outcome_corpus import (
    DATA,
    SHORT_LENGTHS,
    Spec,
    curve,
    real,
    short_oscillations,
    stretched,
    synthetic,
)
from losslab import CONF_DIR
from losslab.outcomes.classify import (
    LABELS,
    Outcome,
    OutcomeRules,
    classify,
    overfitting,
)
from losslab.train.callbacks.guard import DivergenceGuard
from losslab.vocab import OUTCOME_LABELS

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")

SYNTHETIC = synthetic()
SHORT_OSC = short_oscillations()
REAL = real()
REPLAY = "loss._target_=tests.helpers.replay_loss.ReplayCurve"
# the hard cap compares with the first value: a constant larger than the spike hides it (documented)
MAGNITUDE_ONLY = {"cap_spike"}


def _ids(items) -> list[str]:
    return [i.name for i in items]


# ----------------------------------------------------------------------------- the corpus


def test_every_declared_label_has_a_report_colour() -> None:
    from matplotlib.colors import is_color_like

    assert all(is_color_like(c) for c in OUTCOME_LABELS.values()), OUTCOME_LABELS


def test_corpus_is_big_enough_and_covers_every_label() -> None:
    assert len(SYNTHETIC) + len(REAL) >= 60
    assert {s.expected for s in SYNTHETIC} == set(LABELS)
    assert len(REAL) >= 10 and all(r.expected in LABELS for r in REAL)
    assert len({s.n for s in SYNTHETIC}) >= 4 and len({s.period for s in SYNTHETIC if s.period}) >= 6
    issue_cases = {
        "bce_rmsprop_lr1e-3_200",
        "hinge_m0_breast_cancer_sgd_lr1e-3_300",
        "hinge_m2_breast_cancer_sgd_lr1e-3_300",
        "hinge_breast_cancer_sgd_lr1e-3_300",
        "focal_sgd_lr10_200",
        "log_cosh_sgd_lr1_200",
        "mse_rmsprop_lr0.01_200",
        "mse_adam_lr0.01_2000",
    }
    assert issue_cases <= {r.name for r in REAL}


@pytest.mark.parametrize("spec", SYNTHETIC, ids=_ids(SYNTHETIC))
def test_synthetic_curve_gets_its_label(spec: Spec) -> None:
    out = classify(curve(spec))
    assert out.label == spec.expected, out.reason


@pytest.mark.parametrize("case", REAL, ids=_ids(REAL))
def test_recorded_losslab_run_gets_its_label(case) -> None:
    out = classify(case.values)
    assert out.label == case.expected, f"{case.command}: {out.reason}"
    over = overfitting(case.train, case.val)
    assert over.flag == case.expected_overfitting, f"{case.command}: {over.reason}"


# ----------------------------------------------------------------------------- invariances


@pytest.mark.parametrize("spec", SYNTHETIC, ids=_ids(SYNTHETIC))
@pytest.mark.parametrize(
    ("scale", "shift"), [(1e-3, 0.0), (250.0, 0.0), (1.0, 7.0), (0.5, -3.0), (40.0, 1e3)]
)
def test_label_keeps_under_a_constant_and_a_positive_factor(spec: Spec, scale: float, shift: float) -> None:
    if shift and spec.family in MAGNITUDE_ONLY:
        pytest.skip("the hard cap is a magnitude rule")
    y = curve(spec)
    first = y[0]
    # the blow-up rules compare with the first value: shift the curve so the first value keeps its size
    shifted = scale * y + (shift if spec.family not in ("blowup", "spike", "spike_linear") else 0.0)
    out = classify(shifted)
    assert out.label == spec.expected, (first, out.reason)


@pytest.mark.parametrize("spec", SYNTHETIC, ids=_ids(SYNTHETIC))
@pytest.mark.parametrize("factor", [0.5, 3.0])
def test_label_keeps_over_a_different_number_of_steps(spec: Spec, factor: float) -> None:
    if spec.family in ("exp_tau10", "to_zero", "zero_jitter"):
        pytest.skip("a fixed-time shape: run length is tested by test_longer_run_of_the_same_curve")
    longer = stretched(spec, factor)
    out = classify(curve(longer))
    assert out.label == spec.expected, (longer.n, out.reason)


@pytest.mark.parametrize("n", [200, 500, 2000, 5000])
def test_longer_run_of_the_same_curve(n: int) -> None:
    # the issue's case: 0.2 + 0.8 exp(-t/10) was converged at 200 steps and plateaued at 500 and 2000
    t = np.arange(n, dtype=np.float64)
    y = 0.2 + 0.8 * np.exp(-t / 10) + 0.005 * np.random.default_rng(n).standard_normal(n)
    assert classify(y).label == "converged"


@pytest.mark.parametrize("spec", SYNTHETIC, ids=_ids(SYNTHETIC))
@pytest.mark.parametrize("seed", [101, 202])
def test_noise_well_below_the_drop_keeps_the_label(spec: Spec, seed: int) -> None:
    if spec.family in ("zero_jitter", "flat_noiseless") or spec.noise == 0:
        pytest.skip("a noise-free shape by construction")
    noisier = dataclasses.replace(spec, seed=seed, noise=spec.noise * 1.5)
    out = classify(curve(noisier))
    assert out.label == spec.expected, out.reason


def test_hinge_margins_zero_and_two_get_the_same_label_and_figures() -> None:
    m0, m2 = (next(r for r in REAL if r.name == f"hinge_m{m}_breast_cancer_sgd_lr1e-3_300") for m in (0, 2))
    assert np.allclose(m2.values - m0.values, 2.0, atol=1e-4)
    a, b = classify(m0.values), classify(m2.values)
    assert a.label == b.label == "still_improving"
    assert a.figures is not None and b.figures is not None
    assert a.figures.win_change == pytest.approx(b.figures.win_change, abs=1e-4)


@pytest.mark.parametrize("case", REAL, ids=_ids(REAL))
def test_recorded_runs_keep_their_label_under_scale_and_shift(case) -> None:
    y = case.values
    assert classify(y * 30.0).label == case.expected
    if np.isfinite(y).all() and case.name != "mse_sgd_lr100_200":
        assert classify(y + 5.0 * abs(y[0])).label == case.expected


# ----------------------------------------------------------------------------- definitions, reasons


def test_every_label_is_a_public_constant() -> None:
    assert set(LABELS) == {"converged", "diverged", "oscillating", "plateaued", "still_improving"}


def test_reason_states_the_figures_from_the_start() -> None:
    out = classify(next(r for r in REAL if r.name == "bce_rmsprop_lr1e-3_200").values)
    assert "from 0.6828 at the start" in out.reason and "last 20 of 200 steps" in out.reason


@pytest.mark.parametrize("period", [2, 3, 4, 10, 50, 120])
def test_oscillation_of_any_period(period: int) -> None:
    n = 1500
    t = np.arange(n, dtype=np.float64)
    y = 0.3 + np.exp(-t / 150) + 0.08 * np.sin(2 * np.pi * t / period + 0.4)
    out = classify(y + 0.005 * np.random.default_rng(period).standard_normal(n))
    assert out.label == "oscillating", out.reason
    assert f"period of {period:.3g}" in out.reason or abs(out.figures.osc_period - period) / period < 0.1


@pytest.mark.parametrize("spec", SHORT_OSC, ids=_ids(SHORT_OSC))
def test_oscillation_at_any_run_length_from_20_steps(spec: Spec) -> None:
    """The issue's case: +-30% every step was oscillating at 150 steps, converged/plateaued at 40-80
    (the old share needed, 40 / points of the last half, exceeded 1 below 80 steps)."""
    out = classify(curve(spec))
    assert out.label == "oscillating", out.reason
    assert out.figures is not None and abs(out.figures.osc_period - spec.period) / spec.period < 0.1


@pytest.mark.parametrize("n", SHORT_LENGTHS)
def test_short_noisy_runs_do_not_oscillate_by_chance(n: int) -> None:
    """White noise on flat, falling and linear curves: the share needed grows as the half shortens
    (`null_share`, false alarm 0.1%), so short runs are not oscillating by chance."""
    rng = np.random.default_rng(n)
    t = np.arange(n, dtype=np.float64)
    shapes = (np.zeros(n), np.exp(-t / (0.1 * n)), 1.0 - t / n)
    labels = [
        classify(1.0 + shape + noise * rng.standard_normal(n)).label
        for shape in shapes
        for noise in (0.01, 0.05, 0.2)
        for _ in range(40)
    ]
    assert labels.count("oscillating") <= 2, labels.count("oscillating")


def test_share_needed_matches_white_noise() -> None:
    from losslab.outcomes.figures import null_share, oscillation

    rng = np.random.default_rng(0)
    for m in (10, 20, 40):
        shares = [oscillation(rng.standard_normal(m))[1] for _ in range(2000)]
        assert np.mean(np.array(shares) > null_share(m, 0.01)) < 0.02
    assert null_share(10, 0.001) < 1.0 and null_share(36, 0.001) < OutcomeRules().osc_share


def test_small_wiggle_relative_to_the_range_is_not_oscillation() -> None:
    t = np.arange(1000, dtype=np.float64)
    y = np.exp(-t / 50) + 0.005 * np.sin(2 * np.pi * t / 10)  # 1% of the curve's range
    assert classify(y).label == "converged"


def test_spike_and_recovery_is_judged_on_the_whole_curve() -> None:
    rms = next(r for r in REAL if r.name == "mse_rmsprop_lr0.01_200")
    assert max(rms.values) > 100 * rms.values[0]  # the issue's 121x spike at step 2
    out = classify(rms.values)
    assert out.label == "converged" and out.first_bad_step is None, out.reason


def test_rising_curves_never_read_as_fine() -> None:
    t = np.arange(500, dtype=np.float64)
    for y in (1 + t / 10, 1 + 49 * t / 500, np.exp(t / 100), 1 + 0.001 * t):
        assert classify(y).label == "diverged"


# ----------------------------------------------------------------------------- edge cases


def test_empty_curve_raises() -> None:
    with pytest.raises(ValueError, match="empty"):
        classify([])


def test_two_dimensional_curve_raises() -> None:
    with pytest.raises(ValueError, match="1-D"):
        classify(np.ones((3, 3)))


def test_single_nan() -> None:
    out = classify([float("nan")])
    assert (out.label, out.first_bad_step) == ("diverged", 0)


def test_inf_is_diverged_at_its_step() -> None:
    assert classify([1.0, 0.9, math.inf, 0.5]).first_bad_step == 2


def test_tiny_curves_only_judge_direction() -> None:
    assert classify([0.7]).label == "plateaued"
    assert classify([1.0, 0.5, 0.2]).label == "still_improving"
    assert classify([1.0, 1.0, 1.0, 1.0]).label == "plateaued"


def test_accepts_tensor_curve() -> None:
    assert classify(torch.tensor(1 / (1 + np.arange(1000.0)))).label == "converged"


def test_outcome_is_frozen() -> None:
    out = classify([1.0, 0.5])
    assert isinstance(out, Outcome)
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.label = "converged"  # type: ignore[misc]


def test_blowup_patience_is_a_share_of_the_planned_run() -> None:
    y = np.r_[np.ones(5), np.full(30, 50.0), np.linspace(0.5, 0.1, 465)]  # 30 steps at 50x, then fine
    assert classify(y, planned_steps=500).label == "diverged"  # patience 25 steps
    assert classify(y, planned_steps=1000).first_bad_step is None  # patience 50 steps: it came back


# ----------------------------------------------------------------------------- overfitting


def _val_curve(best_at: float, rise: float, n: int = 1000) -> tuple[list, list]:
    t = np.arange(n)
    train = list(zip(t.tolist(), (0.1 + np.exp(-t / 100) - 0.05 * t / n).tolist(), strict=True))
    steps = np.arange(0, n, 25)
    v = 0.3 + np.exp(-steps / 100) + rise * np.maximum(0, steps / n - best_at)
    return train, list(zip(steps.tolist(), v.tolist(), strict=True))


def test_overfitting_when_val_rises_while_train_improves() -> None:
    train, val = _val_curve(best_at=0.4, rise=0.2)
    over = overfitting(train, val)
    assert over.flag and over.best_val_step is not None and 300 <= over.best_val_step <= 450, over.reason


def test_no_overfitting_when_val_keeps_falling_or_barely_moves() -> None:
    train, val = _val_curve(best_at=1.0, rise=0.0)
    assert not overfitting(train, val).flag
    train, val = _val_curve(best_at=0.5, rise=0.001)
    assert not overfitting(train, val).flag


def test_overfitting_needs_the_train_loss_to_keep_improving() -> None:
    _, val = _val_curve(best_at=0.4, rise=0.2)
    flat_train = [(i, 1.0) for i in range(1000)]
    assert not overfitting(flat_train, val).flag


def _improving_train(n: int = 1000) -> list[tuple[int, float]]:
    t = np.arange(n)
    return list(zip(t.tolist(), (0.1 + np.exp(-t / 200)).tolist(), strict=True))


def _evaluations(rng: np.random.Generator) -> np.ndarray:
    return np.linspace(10, 990, int(rng.integers(30, 101))).astype(int)


@pytest.mark.parametrize("sd", [0.01, 0.02])
def test_overfitting_rarely_fires_on_a_flat_noisy_val_metric(sd: float) -> None:
    """The issue's noise corpus: val accuracy flat at 0.9 with iid evaluation noise, 30-100
    evaluations, train loss still falling. It fired in 79/200 (sd 0.01) and 152/200 (sd 0.02) cases;
    the noise allowance keeps it under 5% (0/200 for both when measured)."""
    rng = np.random.default_rng(round(sd * 1000))
    fired = 0
    for _ in range(200):
        steps = _evaluations(rng)
        acc = 0.9 + sd * rng.standard_normal(len(steps))
        curve = list(zip(steps.tolist(), acc.tolist(), strict=True))
        fired += overfitting(_improving_train(), [], metric="accuracy", metric_curve=curve).flag
    assert fired < 0.05 * 200, fired


@pytest.mark.parametrize(("sd", "drop"), [(0.01, 0.04), (0.01, 0.06), (0.02, 0.08)])
def test_overfitting_fires_when_val_accuracy_rises_then_falls(sd: float, drop: float) -> None:
    """Val accuracy rises 0.80 -> 0.92 over 40% of the run, then falls `drop` while the train loss
    keeps falling: flagged in at least 90% of 50 noisy cases, with the best step near the peak."""
    rng = np.random.default_rng(7)
    fired = 0
    for _ in range(50):
        steps = _evaluations(rng)
        u = steps / 1000
        acc = 0.80 + 0.12 * np.minimum(u / 0.4, 1) - drop * np.clip((u - 0.4) / 0.6, 0, 1)
        acc = acc + sd * rng.standard_normal(len(steps))
        curve = list(zip(steps.tolist(), acc.tolist(), strict=True))
        over = overfitting(_improving_train(), [], metric="accuracy", metric_curve=curve)
        fired += over.flag
        if over.flag:
            assert "val/accuracy" in over.reason and "fell" in over.reason
    assert fired >= 45, fired


def test_overfitting_reads_the_task_metric_in_its_direction() -> None:
    """rmse rises when a model overfits, accuracy falls; the val loss is read only without a metric."""
    train = _improving_train()
    steps = np.arange(0, 1000, 25)
    u = steps / 1000
    bowl = 0.5 - 0.3 * np.minimum(u / 0.4, 1) + 0.2 * np.clip((u - 0.4) / 0.6, 0, 1)  # best at 40%
    rmse = list(zip(steps.tolist(), bowl.tolist(), strict=True))
    accuracy = list(zip(steps.tolist(), (1 - bowl).tolist(), strict=True))
    flat_loss = [(int(s), 0.3) for s in steps]
    assert overfitting(train, flat_loss, metric="rmse", metric_curve=rmse).flag
    rising = list(zip(steps.tolist(), (0.5 + 0.3 * u).tolist(), strict=True))
    assert not overfitting(train, flat_loss, metric="accuracy", metric_curve=rising).flag  # improving
    assert overfitting(train, flat_loss, metric="rmse", metric_curve=rising).flag  # worse all along
    assert overfitting(train, flat_loss, metric="accuracy", metric_curve=accuracy).flag
    # no task metric curve: the val loss decides (here the same bowl)
    assert overfitting(train, rmse, metric="accuracy", metric_curve=[]).flag
    assert "val/loss" in overfitting(train, rmse).reason


def test_overfitting_with_too_few_val_points_is_false() -> None:
    assert overfitting([(0, 1.0), (1, 0.5)], [(0, 1.0)]).flag is False


# ----------------------------------------------------------------------------- rules from config


def test_rules_from_hydra_dictconfig() -> None:
    cfg = OmegaConf.create({"outcome": {"blowup_factor": 5, "min_window": 20.0}})
    rules = OutcomeRules.from_dict(cfg.outcome)
    assert rules.blowup_factor == 5.0 and rules.min_window == 20 and isinstance(rules.min_window, int)
    assert rules.progress_tol == OutcomeRules().progress_tol


def test_rules_from_none_are_defaults() -> None:
    assert OutcomeRules.from_dict(None) == OutcomeRules()


def test_train_yaml_lists_every_rule_with_its_default() -> None:
    cfg = OmegaConf.load(CONF_DIR / "train.yaml")
    section = dict(cfg.outcome)
    assert section.pop("stop_on_divergence") is True
    assert OutcomeRules.from_dict(section) == OutcomeRules()
    assert set(section) == {f.name for f in dataclasses.fields(OutcomeRules)}


def test_rules_reject_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown outcome rule"):
        OutcomeRules.from_dict({"blowup_factr": 5})
    with pytest.raises(ValueError, match="blowup_factor"):
        OutcomeRules(blowup_factor=1.0)
    with pytest.raises(ValueError, match="not a number"):
        OutcomeRules.from_dict({"hard_cap": "big"})


# ----------------------------------------------------------------------------- Lightning guard


class _Regression(pl.LightningModule):
    """nn.Linear on random data; records every training loss."""

    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Linear(8, 1)
        self.losses: list[float] = []

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.losses.append(float(loss.detach()))
        return {"loss": loss}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, 8, generator=g)
        y = x @ torch.randn(8, 1, generator=g) + 0.1 * torch.randn(64, 1, generator=g)
        return DataLoader(TensorDataset(x, y), batch_size=8)


class _Replay(pl.LightningModule):
    """Returns a prescribed loss value at each global step (as a bare tensor)."""

    def __init__(self, curve: np.ndarray) -> None:
        super().__init__()
        self.curve = curve.tolist()
        self.p = nn.Parameter(torch.zeros(()))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.p * 0 + self.curve[self.global_step]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(len(self.curve), 1)), batch_size=1)


def _fit(module: pl.LightningModule, guard: DivergenceGuard, max_steps: int) -> pl.Trainer:
    torch.manual_seed(0)
    trainer = pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[guard],
    )
    trainer.fit(module)
    return trainer


# on_device=None: floats on CPU (the default path here); True: the tensor path an accelerator runs
BOTH_PATHS = pytest.mark.parametrize("on_device", [None, True], ids=["host", "tensor"])


@BOTH_PATHS
def test_guard_stops_a_blowing_up_run_early(on_device: bool | None) -> None:
    guard = DivergenceGuard(OutcomeRules(), on_device=on_device)
    module = _Regression(lr=100.0)
    trainer = _fit(module, guard, 500)
    state = guard.state()
    assert state["diverged"] and state["stopped"]
    assert state["first_bad_step"] is not None and state["first_bad_step"] < 50
    assert trainer.global_step < 100 and trainer.global_step <= state["first_bad_step"] + guard.patience
    assert state["reason"]
    # the guard and the classifier agree on the recorded curve
    out = classify(module.losses, planned_steps=500)
    assert (out.label, out.first_bad_step) == ("diverged", state["first_bad_step"])


def test_guard_lets_a_healthy_run_finish() -> None:
    guard = DivergenceGuard(OutcomeRules())
    module = _Regression(lr=0.01)
    trainer = _fit(module, guard, 500)
    assert trainer.global_step == 500
    assert guard.state() == {"diverged": False, "first_bad_step": None, "reason": "", "stopped": False}
    assert classify(module.losses).label != "diverged"


@pytest.mark.parametrize(
    ("curve", "bad_step"),
    [
        (np.r_[np.linspace(1, 0.5, 30), [np.nan], np.ones(20)], 30),
        (np.r_[np.linspace(1, 0.1, 30), np.full(30, 50.0)], 30),  # a blow-up that stays: from step 30
        (np.r_[np.linspace(1, 0.1, 30), [1e7], np.linspace(0.1, 0.05, 30)], 30),  # over the hard cap
        (np.r_[np.linspace(1, 0.1, 30), np.full(5, 50.0), np.linspace(0.1, 0.05, 60)], None),  # came back
        (np.maximum(0.0, 1 - np.arange(80) / 40), None),
    ],
)
@BOTH_PATHS
def test_guard_and_classifier_agree_on_replayed_curves(
    curve: np.ndarray, bad_step: int | None, on_device: bool | None
) -> None:
    guard = DivergenceGuard(OutcomeRules(), on_device=on_device)
    _fit(_Replay(curve), guard, len(curve))
    out = classify(curve, planned_steps=len(curve))
    assert guard.state()["first_bad_step"] == out.first_bad_step
    assert guard.state()["diverged"] == (out.label == "diverged")
    assert out.first_bad_step == bad_step


@BOTH_PATHS
def test_guard_lets_the_recovering_rmsprop_spike_train_to_the_end(on_device: bool | None) -> None:
    rms = next(r for r in REAL if r.name == "mse_rmsprop_lr0.01_200")
    guard = DivergenceGuard(OutcomeRules(), on_device=on_device)
    trainer = _fit(_Replay(rms.values), guard, len(rms.values))
    assert trainer.global_step == 200 and not guard.state()["diverged"]


@BOTH_PATHS
def test_guard_with_sparse_checks_still_records_the_exact_step(on_device: bool | None) -> None:
    curve = np.r_[np.linspace(1, 0.5, 30), [np.inf], np.ones(40)]
    guard = DivergenceGuard(OutcomeRules(), check_every=7, on_device=on_device)
    trainer = _fit(_Replay(curve), guard, len(curve))
    assert guard.state()["first_bad_step"] == 30
    assert trainer.global_step == 35  # first check at or after the bad step: batch 35
    assert "inf" in guard.state()["reason"]


def test_guard_rejects_bad_check_every() -> None:
    with pytest.raises(ValueError, match="check_every"):
        DivergenceGuard(OutcomeRules(), check_every=0)


def test_hinge_like_curve_that_hits_zero_and_jitters_is_not_diverged():
    """Hinge on separable data: exactly 0 on most batches, an occasional small positive batch."""
    rng = np.random.default_rng(0)
    falling = np.linspace(2.0, 0.05, 60)
    tail = np.where(rng.random(400) < 0.15, rng.uniform(0.01, 0.4, 400), 0.0)
    outcome = classify(np.concatenate([falling, tail]))
    assert outcome.label != "diverged", outcome.reason


# ----------------------------------------------------------------------------- end to end, real MLflow


def _replay(case_name: str) -> list[str]:
    path = DATA / f"real_{case_name}.json"
    return [REPLAY, f"+loss.path={path}", "trainer.max_steps=200"]


def test_replayed_rmsprop_spike_trains_to_the_end_and_is_not_diverged(store, client) -> None:
    """The issue's done-when: MSE + RMSprop lr 0.01 (121x spike at step 2) trains to the end, guard on."""
    from conftest import compose
    from losslab.train import job as task

    result = task.train(compose(_replay("mse_rmsprop_lr0.01_200")))
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["final/steps"] == 200
    assert "stopped_early" not in run.data.tags
    assert run.data.tags["outcome"] == "converged", run.data.tags["outcome_reason"]
    assert "from 1.384 at the start" in run.data.tags["outcome_reason"]
    assert run.data.tags["overfitting"] in ("true", "false") and "best_val_step" in run.data.tags


def test_replayed_sustained_blowup_is_stopped_by_the_guard(store, client, tmp_path: Path) -> None:
    from conftest import compose
    from losslab.train import job as task

    y = np.r_[np.linspace(1.0, 0.5, 50), np.full(150, 40.0)]
    path = tmp_path / "blowup.json"
    path.write_text(json.dumps({"train": [[i, float(v)] for i, v in enumerate(y)], "val": []}))
    overrides = [REPLAY, f"+loss.path={path}", "trainer.max_steps=200"]
    run = client.get_run(task.train(compose(overrides)).run_id)
    assert run.data.tags["outcome"] == "diverged" and run.data.tags["stopped_early"] == "diverged"
    assert run.data.tags["first_bad_step"] == "50"
    assert run.data.metrics["final/steps"] == 50 + 10  # patience: max(10, 5% of 200)
    # the same curve with the guard off trains to the end and is still diverged, at the same step
    off = client.get_run(task.train(compose([*overrides, "outcome.stop_on_divergence=false"])).run_id)
    assert off.data.metrics["final/steps"] == 200 and off.data.tags["outcome"] == "diverged"
    assert off.data.tags["first_bad_step"] == "50"


def test_replayed_val_rise_sets_the_overfitting_tags(store, client, tmp_path: Path) -> None:
    """Train keeps falling, the val loss bottoms out at step 60 and climbs, the task metric is flat."""
    from conftest import compose
    from losslab.train import job as task

    t = np.arange(200)
    train = 0.1 + np.exp(-t / 40)
    val_steps = np.arange(0, 201, 12)
    val = 0.3 + np.exp(-val_steps / 30) + 0.004 * np.maximum(0, val_steps - 60)
    doc = {
        "train": [[int(i), float(v)] for i, v in zip(t, train, strict=True)],
        "val": [[int(s), float(v)] for s, v in zip(val_steps, val, strict=True)],
    }
    path = tmp_path / "overfit.json"
    path.write_text(json.dumps(doc))
    overrides = [REPLAY, f"+loss.path={path}", "trainer.max_steps=200"]
    run = client.get_run(task.train(compose(overrides)).run_id)
    tags = run.data.tags
    # the replayed loss ignores the model, whose task metric stays flat: the tag reads the task metric
    assert tags["overfitting"] == "false" and "val/rmse" in tags["overfitting_reason"], tags
    assert tags["outcome"] == "converged", tags["outcome_reason"]
    # the same val loss with no task metric: overfitting, best near step 60
    over = overfitting(doc["train"], doc["val"], metric="rmse", metric_curve=[])
    assert over.flag and over.best_val_step is not None and abs(over.best_val_step - 60) <= 13, over.reason


def test_outcome_keys_are_set_on_the_command_line_without_plus(tmp_path: Path) -> None:
    from conftest import ROOT, run_train

    proc = run_train(["outcome.blowup_factor=3", "outcome.hard_cap=1e9", "--cfg", "job"], cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "blowup_factor: 3" in proc.stdout and "hard_cap: 1000000000.0" in proc.stdout


def test_relabel_rewrites_the_tags_of_stored_runs(store, client) -> None:
    """Runs labelled by older rules get the current labels from their stored curves, no training."""
    from losslab.relabel import main as relabel

    exp = client.create_experiment("study")
    rms = next(r for r in REAL if r.name == "mse_rmsprop_lr0.01_200")
    run = client.create_run(exp, tags={"outcome": "diverged", "first_bad_step": "2"})
    rid = run.info.run_id
    client.log_param(rid, "trainer.max_steps", "200")
    from mlflow.entities import Metric

    metrics = [Metric("train/loss", v, 0, s) for s, v in rms.train] + [
        Metric("val/loss", v, 0, s) for s, v in rms.val
    ]
    for i in range(0, len(metrics), 500):
        client.log_batch(rid, metrics=metrics[i : i + 500])
    client.set_terminated(rid, "FINISHED")
    assert relabel(["--experiment", "study", "--uri", store, "--dry-run"]) == 0
    assert client.get_run(rid).data.tags["outcome"] == "diverged"
    assert relabel(["--experiment", "study", "--uri", store]) == 0
    tags = client.get_run(rid).data.tags
    assert tags["outcome"] == "converged" and tags["outcome_previous"] == "diverged"
    assert "first_bad_step" not in tags and tags["overfitting"] == "false" and "best_val_step" in tags
    assert relabel(["--experiment", "nope", "--uri", store]) == 2


def test_relabel_dry_run_counts_only_labels_that_change(store, client, capsys) -> None:
    """A run whose label stays is not a change: the dry run lists and counts only real ones."""
    from mlflow.entities import Metric

    from losslab.relabel import main as relabel

    exp = client.create_experiment("study")
    rms = next(r for r in REAL if r.name == "mse_rmsprop_lr0.01_200")
    metrics = [Metric("train/loss", v, 0, s) for s, v in rms.train] + [
        Metric("val/loss", v, 0, s) for s, v in rms.val
    ]

    def stored_run(name: str, **tags: str) -> str:
        rid = client.create_run(exp, run_name=name, tags=tags).info.run_id
        client.log_param(rid, "trainer.max_steps", "200")
        for i in range(0, len(metrics), 500):
            client.log_batch(rid, metrics=metrics[i : i + 500])
        client.set_terminated(rid, "FINISHED")
        return rid

    for i in range(3):
        stored_run(f"current-{i}")
    assert relabel(["--experiment", "study", "--uri", store]) == 0  # three runs with current labels
    capsys.readouterr()
    current = client.get_run(client.search_runs([exp])[0].info.run_id).data.tags
    stale = stored_run("stale", outcome="diverged", overfitting=current["overfitting"])
    assert relabel(["--experiment", "study", "--uri", store, "--dry-run"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 and out[0].split() == ["outcome:", "diverged", "->", "converged", "1", "stale"], out
    assert out[1] == "1 of 4 run(s) would be relabelled; 3 would keep their labels"
    assert out[2].startswith("rules: today's defaults")
    assert client.get_run(stale).data.tags["outcome"] == "diverged"  # a dry run writes nothing
    assert relabel(["--experiment", "study", "--uri", store]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-2].startswith("1 of 4 run(s) relabelled; 3 kept")
    assert client.get_run(stale).data.tags["outcome"] == "converged"


def test_relabel_keeps_the_thresholds_a_run_chose_and_skips_sweep_parents(store, client, capsys) -> None:
    """A run trained with `outcome.near_tol=0` (plateaued) is not re-labelled under the default near_tol
    (converged); a sweep parent has no curve and is not counted as a skipped run."""
    from mlflow.entities import Metric

    from losslab.relabel import main as relabel

    exp = client.create_experiment("chosen")
    rms = next(r for r in REAL if r.name == "mse_rmsprop_lr0.01_200")
    assert classify([v for _, v in rms.train], OutcomeRules(), planned_steps=200).label == "converged"
    own = OutcomeRules(near_tol=0.0)
    assert classify([v for _, v in rms.train], own, planned_steps=200).label == "plateaued"
    over = overfitting(rms.train, rms.val, own)
    tags = {
        "outcome": "plateaued",
        "overfitting": str(over.flag).lower(),
        "overrides": "loss=mse outcome.near_tol=0.0 trainer.max_steps=200",
    }
    rid = client.create_run(exp, run_name="chosen", tags=tags).info.run_id
    client.log_batch(
        rid,
        metrics=[Metric("train/loss", v, 0, s) for s, v in rms.train]
        + [Metric("val/loss", v, 0, s) for s, v in rms.val],
    )
    client.log_param(rid, "trainer.max_steps", "200")
    client.log_param(rid, "outcome.near_tol", "0.0")
    client.set_terminated(rid, "FINISHED")
    parent = client.create_run(exp, run_name="sweep", tags={"losslab.sweep": "parent"}).info.run_id
    client.set_terminated(parent, "FINISHED")

    for extra in ([], ["--stored-rules"]):
        assert relabel(["--experiment", "chosen", "--uri", store, "--dry-run", *extra]) == 0
        out = capsys.readouterr().out.strip().splitlines()
        assert out[0] == "0 of 1 run(s) would be relabelled; 1 would keep their labels", out
        assert out[-1].endswith("(1 run(s) had values of their own)") and len(out) == 2, out
    client.set_tag(rid, "overrides", "loss=mse trainer.max_steps=200")  # as if it had used the defaults
    assert relabel(["--experiment", "chosen", "--uri", store, "--dry-run"]) == 0
    assert "outcome: plateaued -> converged" in capsys.readouterr().out
