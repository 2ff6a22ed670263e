"""gradcheck: built-in losses pass, kinks are handled, wrong derivatives are caught, the CLI behaves."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from helpers.custom_losses import (
    DoubledGradMSE,
    ForgetfulSigmoidL1,
    FrozenHessianMSE,
    PlainHinge,
    PlainSigmoidL1,
    UnreshapedWeights,
)
from losslab.gradcheck import builtin_losses, config_dir, main
from losslab.losses import Hinge, SigmoidWeightedL1, WeightedMSE
from losslab.losses.fd_check import check_configured_loss, check_loss

ROOT = Path(__file__).resolve().parents[2]
BUILTINS = {
    "mse", "weighted_mse", "hinge", "sigmoid_weighted_l1", "huber",
    "bce_with_logits", "focal", "squared_hinge", "log_cosh",
}  # fmt: skip
FEW = "gradcheck.points=3"  # one point per default shape: fast
HELPERS = "tests.helpers.custom_losses"


def _labels(n: int) -> torch.Tensor:
    return torch.tensor([1.0, -1.0] * (n // 2), dtype=torch.float64)


def test_every_builtin_loss_has_a_config() -> None:
    assert set(builtin_losses()) >= BUILTINS


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_loss_passes(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([f"loss={name}", FEW]) == 0, capsys.readouterr().out


def test_hinge_points_on_the_kink_are_moved_and_pass() -> None:
    y = _labels(8)
    on_kink = [(2.0 * y, y)]  # 1 - y*f + margin == 0 with margin 1
    hinge = Hinge(margin=1.0)
    assert bool((hinge.kink_distance(*on_kink[0]) == 0).all())
    report = check_loss(hinge, inputs=on_kink)
    grad = report.rows[0]
    assert report.passed, report.table()
    assert grad.declared_moves == 8 and grad.detected_moves == 0
    # why the moves matter: on the kink a central difference returns the average of the two slopes
    assert not check_loss(hinge, inputs=on_kink, kink_aware=False).passed


def test_kinks_are_detected_for_losses_that_do_not_declare_them() -> None:
    y = _labels(8)
    on_kink = [(y.clone(), y)]  # margin - y*f == 0
    report = check_loss(PlainHinge(), inputs=on_kink, targets="pm1")
    grad = report.rows[0]
    assert report.passed, report.table()
    assert grad.declared_moves == 0 and grad.detected_moves == 8
    assert "0+8" in report.table()
    assert not check_loss(PlainHinge(), inputs=on_kink, targets="pm1", kink_aware=False).passed


def test_sigmoid_weighted_l1_at_zero_error_passes_both_orders() -> None:
    t = torch.linspace(-1, 1, 6, dtype=torch.float64)
    report = check_loss(SigmoidWeightedL1(), inputs=[(t.clone(), t)])  # |e| = 0: the gradient jumps
    assert report.passed, report.table()
    assert [r.status for r in report.rows] == ["PASS"] * 4
    assert all(r.declared_moves == 6 for r in report.rows)


def test_gradient_jumps_are_detected_for_the_second_order_check() -> None:
    """At e = 0 autograd's |e|' is 0, the midpoint of the jump, so only the loss's own kink shows it."""
    t = torch.linspace(-1, 1, 6, dtype=torch.float64)
    report = check_loss(PlainSigmoidL1(), inputs=[(t.clone(), t)])
    hessian = next(r for r in report.rows if r.case == "hessian")
    assert report.passed, report.table()
    assert hessian.detected_moves == 6
    assert not check_loss(PlainSigmoidL1(), inputs=[(t.clone(), t)], kink_aware=False).passed


def test_doubled_gradient_is_caught(capsys: pytest.CaptureFixture[str]) -> None:
    report = check_loss(DoubledGradMSE(), points=3)
    assert not report.passed
    assert report.rows[0].max_rel == pytest.approx(1.0)  # autograd = 2 * fd
    assert "2 of 2 checks failed: grad: point" in report.summary()
    assert main(["loss._target_=tests.helpers.custom_losses.DoubledGradMSE", FEW]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_dropped_sigmoid_derivative_is_caught() -> None:
    report = check_loss(ForgetfulSigmoidL1(), points=3)
    assert not report.passed
    assert report.rows[0].status == "FAIL" and "d/dy_pred" in report.rows[0].worst


def test_wrong_second_derivative_is_caught() -> None:
    report = check_loss(FrozenHessianMSE(), points=3)
    status = {r.case: r.status for r in report.rows}
    assert status == {
        "grad": "PASS",
        "grad, weighted": "SKIP",
        "hessian": "FAIL",
        "hessian, weighted": "SKIP",
    }


def test_a_loss_that_raises_names_the_point_that_raised() -> None:
    """Weighted, the (4, 3) point raises; the row must name it, not the worst of the points before."""
    report = check_loss(UnreshapedWeights(), points=3)  # points 0, 1, 2 have shapes (16,), (8, 1), (4, 3)
    grad, weighted = report.rows[0], report.rows[1]
    assert grad.status == "PASS" and weighted.status == "FAIL" and weighted.raised
    assert weighted.note.startswith("raised at point 2 shape (4, 3) with per-sample weights: RuntimeError")
    assert weighted.worst == ""  # points 0 and 1 passed: naming one of them would point at the wrong place
    line = next(x for x in report.table().splitlines() if "grad, weighted" in x)
    assert "point 0" not in line and "point 1" not in line
    assert report.summary().startswith(
        "UnreshapedWeights: 1 of 2 checks failed: grad, weighted: raised at point 2"
    )


def test_a_fail_row_of_a_loss_that_raised_prints_no_error_figures(capsys: pytest.CaptureFixture[str]) -> None:
    """A loss returning per-sample losses fails every case before any error is measured: its row
    must show '-', not the 0.00e+00 of a perfect pass."""
    assert main(["loss._target_=tests.helpers.custom_losses.WrongShape", FEW]) == 1
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith(f"{HELPERS}.WrongShape")]
    fails = [r for r in rows if "FAIL" in r]
    assert len(fails) == 2 and "0.00e+00" not in out
    for r in fails:
        assert r[r.index("FAIL") - 3 : r.index("FAIL")] == ["-", "-", "-"], r  # errors and moves
    assert "raised at point 0 shape (16,): TypeError: the loss must return a 0-dim tensor" in out
    assert "max abs err 0.00e+00" not in check_loss(UnreshapedWeights(), points=3).summary()


def test_user_loss_through_target_override(capsys: pytest.CaptureFixture[str]) -> None:
    args = [f"loss._target_={HELPERS}.PlainHinge", "+loss.margin=0.5", "gradcheck.targets=pm1", FEW]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "tests.helpers.custom_losses.PlainHinge" in out
    assert "first order only" in out  # no twice_differentiable attribute
    assert main(["loss._target_=tests.helpers.custom_losses.ScaledLogCosh", "+loss.scale=3", FEW]) == 0


def test_configured_loss_is_checked_on_a_copy() -> None:
    loss = WeightedMSE(weights=[1.0, 2.0, 0.5])  # full-batch weights: the batch size is pinned to 3
    report = check_configured_loss(loss)
    assert report.passed, report.table()
    assert report.summary() == "WeightedMSE: 4 of 4 checks passed"
    assert loss.weights.dtype == torch.float32  # the training module keeps its dtype


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("loss=no_such_loss", "unknown loss 'no_such_loss'"),
        ("loss._target_=tests.helpers.custom_losses.NoSuchLoss", "cannot be imported"),
        ("gradcheck.targets=complex", "targets must be one of"),
        ("loss=hinge ~loss", "left no loss to check"),
    ],
)
def test_bad_input_exits_2_with_one_paragraph(
    arg: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(arg.split()) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err and err.strip().count("\n") == 0


def test_yaml_settings_mirror_check_loss_defaults() -> None:
    """Training's check_grads=true uses the Python defaults; the CLI uses the YAML: keep them equal."""
    yaml = OmegaConf.to_container(OmegaConf.load(config_dir() / "gradcheck.yaml").gradcheck)
    params = inspect.signature(check_loss).parameters
    assert set(yaml) == set(params) - {"loss", "inputs", "name"}
    for key, value in yaml.items():
        default = params[key].default
        if key == "shapes":
            default = [list(s) for s in default]
        assert value == default, key


def test_cli_checks_hinge_without_importing_heavy_packages() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "losslab.gradcheck", "loss=hinge"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "max abs err" in proc.stdout and "PASS" in proc.stdout
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line
    }
    assert "torch" in imported and not imported & {"mlflow", "pytorch_lightning", "lightning"}
