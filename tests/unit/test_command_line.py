"""`losslab-train`'s command line: -m anywhere, and --help naming the store runs really go to."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT
from losslab.__main__ import multirun_first


def test_multirun_is_accepted_anywhere_on_the_command_line():
    assert multirun_first(["loss=hinge", "-m", "trainer.max_steps=100"]) == [
        "-m",
        "loss=hinge",
        "trainer.max_steps=100",
    ]
    assert multirun_first(["a=1", "--multirun"]) == ["-m", "a=1"]
    assert multirun_first(["loss=hinge"]) == ["loss=hinge"]
    # a flag's value stays with its flag
    assert multirun_first(["-cd", "mine", "x=1", "-m"]) == ["-m", "-cd", "mine", "x=1"]


def test_an_override_after_m_reaches_the_checks_not_argparse():
    from losslab.config.commandline import check

    args = multirun_first(["loss=hinge", "-m", "trainer.max_steps=100", "loss.margin=0,1"])
    assert check(args) == args  # composes; argparse no longer sees positionals on both sides of -m


def test_help_names_the_store_runs_go_to(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/elsewhere.db"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"Runs go to MLflow: sqlite:///{tmp_path}/elsewhere.db" in out.stdout
    default = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--help"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"Runs go to MLflow: sqlite:///{ROOT}/mlflow.db" in default.stdout  # the checkout's, not cwd's
