"""Outcome classification of loss curves, and the DivergenceGuard callback in real Lightning runs."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from losslab.outcomes import LABELS, DivergenceGuard, Outcome, OutcomeRules, classify

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning")

SEEDS = [0, 1, 2, 3, 4]


def _noisy(y: np.ndarray, seed: int, rel_std: float = 0.02) -> np.ndarray:
    """Multiplicative noise: minibatch noise scales with the loss level."""
    return y * (1 + rel_std * np.random.default_rng(seed).standard_normal(len(y)))


T = np.arange(1000, dtype=np.float64)

# ----------------------------------------------------------------------------- the five labels


@pytest.mark.parametrize("seed", SEEDS)
def test_converged_power_law_with_sgd_noise(seed: int) -> None:
    out = classify(_noisy(1 / (1 + T), seed))
    assert out.label == "converged", out.reason
    assert out.first_bad_step is None and out.drop > 0.9


@pytest.mark.parametrize("seed", SEEDS)
def test_converged_exponential_to_a_floor(seed: int) -> None:
    out = classify(_noisy(0.2 + np.exp(-T / 50), seed))
    assert out.label == "converged", out.reason
    assert abs(out.rel_slope) < 0.05


@pytest.mark.parametrize("seed", SEEDS)
def test_plateaued_constant_with_noise(seed: int) -> None:
    out = classify(_noisy(np.full(1000, 2.3), seed))
    assert out.label == "plateaued", out.reason
    assert abs(out.drop) < 0.05


@pytest.mark.parametrize("seed", SEEDS)
def test_plateaued_after_a_small_drop(seed: int) -> None:
    out = classify(_noisy(0.8 + 0.2 * np.exp(-T / 30), seed))
    assert out.label == "plateaued", out.reason
    assert "converged" in out.reason  # says which threshold it missed


@pytest.mark.parametrize("seed", SEEDS)
def test_diverged_exponential_growth(seed: int) -> None:
    out = classify(_noisy(np.exp(T / 50), seed))
    assert out.label == "diverged", out.reason
    assert out.first_bad_step is not None and 100 < out.first_bad_step < 200


@pytest.mark.parametrize("seed", SEEDS)
def test_diverged_nan_after_a_good_start(seed: int) -> None:
    y = _noisy(1 / (1 + T), seed)
    y[600:] = np.nan
    out = classify(y)
    assert (out.label, out.first_bad_step) == ("diverged", 600)
    assert "nan" in out.reason


@pytest.mark.parametrize("seed", SEEDS)
def test_oscillating_alternation_around_a_level(seed: int) -> None:
    y = _noisy(0.3 + np.exp(-T / 100) + 0.05 * (-1) ** T, seed, rel_std=0.01)
    out = classify(y)
    assert out.label == "oscillating", out.reason
    assert out.autocorr < -0.9


@pytest.mark.parametrize("seed", SEEDS)
def test_still_improving_linear_decrease(seed: int) -> None:
    out = classify(_noisy(1 - 0.9 * T / len(T), seed))
    assert out.label == "still_improving", out.reason
    assert out.rel_slope < -0.05


def test_still_improving_slow_linear_decrease_that_has_not_dropped_half() -> None:
    assert classify(_noisy(1 - 0.4 * T / len(T), 0)).label == "still_improving"


def test_every_label_is_a_public_constant() -> None:
    assert set(LABELS) == {"converged", "diverged", "oscillating", "plateaued", "still_improving"}


def test_reason_states_the_figures() -> None:
    out = classify(_noisy(0.2 + np.exp(-T / 50), 0))
    assert "fell 68" in out.reason and "last 100 steps" in out.reason


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


def test_inf_is_diverged() -> None:
    assert classify([1.0, 0.9, math.inf, 0.5]).first_bad_step == 2


def test_single_point_is_plateaued() -> None:
    out = classify([0.7])
    assert out.label == "plateaued" and "single point" in out.reason


def test_tiny_curves_only_judge_direction() -> None:
    assert classify([1.0, 0.5, 0.2]).label == "still_improving"
    assert classify([1.0, 1.0, 1.0, 1.0]).label == "plateaued"


def test_short_curve_says_so() -> None:
    out = classify(1 / (1 + np.arange(15.0)))
    assert out.label in LABELS and "short curve" in out.reason


def test_loss_falling_to_exactly_zero_is_converged() -> None:
    out = classify(np.maximum(0.0, 1 - T[:300] / 100))
    assert out.label == "converged", out.reason


def test_zero_loss_with_jitter_is_not_diverged_thanks_to_the_floor() -> None:
    y = np.maximum(0.0, 1 - T[:400] / 100)  # exactly 0 from step 100 ...
    y[250:] = 1e-5 * np.abs(np.random.default_rng(0).standard_normal(150))  # ... then tiny jitter
    assert classify(y).label == "converged"
    # without the floor the same jitter is "10x the running minimum"
    assert classify(y, OutcomeRules(min_floor=0.0, abs_floor=0.0)).label == "diverged"


def test_constant_curve_is_plateaued() -> None:
    assert classify(np.zeros(100)).label == "plateaued"
    assert classify(np.full(100, 3.0)).label == "plateaued"


def test_signed_loss_rising_from_minus_two_to_minus_one_is_not_a_blowup() -> None:
    out = classify(_noisy(-1 - np.exp(-T / 50), 0, rel_std=0.01))
    assert out.label == "plateaued" and out.first_bad_step is None, out.reason
    assert "rose" in out.reason


def test_slow_divergence() -> None:
    out = classify(_noisy(1 + 2 * T / len(T), 0))
    assert out.label == "diverged" and "slow divergence" in out.reason
    assert out.first_bad_step is not None and 0 < out.first_bad_step < len(T)


def test_accepts_tensor_curve() -> None:
    assert classify(torch.tensor(1 / (1 + T))).label == "converged"


def test_outcome_is_frozen() -> None:
    out = classify([1.0, 0.5])
    assert isinstance(out, Outcome)
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.label = "converged"  # type: ignore[misc]


# ----------------------------------------------------------------------------- rules from config


def test_rules_from_hydra_dictconfig() -> None:
    cfg = OmegaConf.create({"outcome": {"blowup_factor": 5, "min_window": 20.0}})
    rules = OutcomeRules.from_dict(cfg.outcome)
    assert rules.blowup_factor == 5.0 and rules.min_window == 20 and isinstance(rules.min_window, int)
    assert rules.slope_tol == OutcomeRules().slope_tol


def test_rules_from_none_are_defaults() -> None:
    assert OutcomeRules.from_dict(None) == OutcomeRules()


def test_rules_reject_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown outcome rule"):
        OutcomeRules.from_dict({"blowup_factr": 5})
    with pytest.raises(ValueError, match="blowup_factor"):
        OutcomeRules(blowup_factor=1.0)


def test_rules_change_the_verdict() -> None:
    y = _noisy(0.8 + 0.2 * np.exp(-T / 30), 0)
    assert classify(y, OutcomeRules(min_drop=0.05)).label == "converged"


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
    assert trainer.global_step < 100 and trainer.global_step == state["first_bad_step"] + 1
    assert state["reason"]
    # the guard and the classifier agree on the recorded curve
    out = classify(module.losses)
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
        (np.r_[np.linspace(1, 0.1, 30), np.full(30, 50.0)], None),  # blow-up: step found by classify
        (np.maximum(0.0, 1 - np.arange(80) / 40), None),
    ],
)
@BOTH_PATHS
def test_guard_and_classifier_agree_on_replayed_curves(
    curve: np.ndarray, bad_step: int | None, on_device: bool | None
) -> None:
    guard = DivergenceGuard(OutcomeRules(), on_device=on_device)
    _fit(_Replay(curve), guard, len(curve))
    out = classify(curve)
    assert guard.state()["first_bad_step"] == out.first_bad_step
    assert guard.state()["diverged"] == (out.label == "diverged")
    if bad_step is not None:
        assert out.first_bad_step == bad_step


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
