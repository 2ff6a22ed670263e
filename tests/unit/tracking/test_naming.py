"""Run names in a sweep: the design first, the seed last, nothing the sweep holds fixed, so the
MLflow runs table (which cuts names after about 18 characters) still tells the designs apart."""

from __future__ import annotations

from omegaconf import OmegaConf

from losslab.tracking.naming import run_name

CFG = OmegaConf.create(
    {
        "loss": {"_target_": "losslab.losses.Hinge", "margin": 0.0},
        "data": {"weights": "none"},
        "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.1},
        "seed": 4,
    }
)
CHOICES = {"loss": "hinge", "optimizer": "adam", "design": "hinge_m0"}


def test_a_single_run_is_named_by_everything_that_made_it():
    assert run_name(CFG, CHOICES, []) == "hinge-m0-adam-lr0.1-s4"


def test_a_study_over_designs_lr_and_seeds_leads_with_the_design_and_ends_with_the_seed():
    name = run_name(CFG, CHOICES, ["design", "optimizer.lr", "seed"])
    assert name == "hinge_m0-lr0.1-s4"
    assert len(name) <= 18  # the UI's cut keeps all of it


def test_a_grid_over_a_loss_knob_names_the_knob_and_the_seed():
    assert run_name(CFG, CHOICES, ["loss.margin", "seed"]) == "m0-s4"


def test_a_sweep_over_losses_names_each_loss():
    assert run_name(CFG, CHOICES, ["loss", "seed"]) == "hinge-s4"


def test_a_sweep_over_lr_and_seeds_only_leads_with_the_loss():
    assert run_name(CFG, CHOICES, ["optimizer.lr", "seed"]) == "hinge-lr0.1-s4"


def test_another_swept_key_counts_as_design_and_comes_before_lr():
    choices = {**CHOICES, "model": "mlp"}
    assert run_name(CFG, choices, ["model", "optimizer.lr", "seed"]) == "model=mlp-lr0.1-s4"
