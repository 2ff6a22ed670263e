"""`conftest.run_train` forks its command lines from a server that has done the imports: the forked
run must be the command line as a fresh interpreter runs it (output, exit status, import path, time
limit), or every test built on it proves less than it says."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, all_runs, run_train

USER_LOSS = """
import torch


class Doubled(torch.nn.Module):
    def forward(self, y_pred, y_true):
        return 2 * torch.mean((y_pred - y_true) ** 2)
"""


@pytest.mark.parametrize(
    "args",
    [["--help"], ["loss=no_such_loss"], ["optimizer.lr=-1"]],
    ids=["help", "unknown-loss", "negative-lr"],
)
def test_a_forked_run_says_and_exits_as_a_fresh_one(args: list[str], store: str, tmp_path: Path) -> None:
    forked = run_train(args, cwd=tmp_path)
    fresh = run_train(args, cwd=tmp_path, fresh=True)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)


def test_the_case_environment_sets_the_import_path(store: str, client, tmp_path: Path) -> None:
    """PYTHONPATH is read at start-up by a fresh interpreter; the fork applies the case's own."""
    (tmp_path / "userlosses").mkdir()
    (tmp_path / "userlosses" / "doubled.py").write_text(USER_LOSS)
    args = ["loss._target_=doubled.Doubled", "trainer.max_steps=3", "tracking.log_curve_png=false"]
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    missing = run_train(args, cwd=elsewhere)
    assert missing.returncode == 2 and "No module named 'doubled'" in missing.stderr, missing.stderr
    found = run_train(args, cwd=elsewhere, env={"PYTHONPATH": str(tmp_path / "userlosses")})
    assert found.returncode == 0, found.stderr[-2000:]
    assert [r.data.tags["loss"] for r in all_runs(client)] == ["doubled"]


PROBE = """
import logging

import pytorch_lightning as pl


class Probe(pl.Callback):
    def on_fit_start(self, trainer, pl_module):
        for name in ("pytorch_lightning", "lightning_fabric"):
            logger = logging.getLogger(name)
            print(f"PROBE {name} propagate={logger.propagate} handlers={len(logger.handlers)}", flush=True)
"""


def test_lightnings_loggers_propagate_as_in_a_fresh_run(store: str, tmp_path: Path) -> None:
    """Lightning keeps a handler of its own when imported before logging is set up: a fork from an
    interpreter that imported it bare would bypass LossLab's redaction and train.log."""
    (tmp_path / "probe.py").write_text(PROBE)
    probe = "+trainer.callbacks=[{_target_:probe.Probe}]"
    args = ["trainer.max_steps=1", "tracking.log_curve_png=false", "rerun=true", probe]
    env = {"PYTHONPATH": str(tmp_path)}
    runs = [run_train(args, cwd=tmp_path, env=env), run_train(args, cwd=tmp_path, env=env, fresh=True)]
    said = [sorted(line for line in run.stdout.splitlines() if line.startswith("PROBE")) for run in runs]
    expected = [
        "PROBE lightning_fabric propagate=True handlers=0",
        "PROBE pytorch_lightning propagate=True handlers=0",
    ]
    assert said == [expected, expected], said


def test_a_run_past_its_time_limit_is_killed_and_the_next_one_runs(store: str, tmp_path: Path) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        run_train(["trainer.max_steps=10000000", "tracking.log_curve_png=false"], cwd=tmp_path, timeout=3)
    after = run_train(["--help"], cwd=ROOT)
    assert after.returncode == 0 and "loss" in after.stdout


def test_a_reply_to_another_case_is_refused_and_the_server_replaced(tmp_path: Path) -> None:
    """Replies carry their case's id: a server that owes an earlier case's replies is never believed."""
    import sys

    import conftest

    stale = (
        'import sys\nfor _ in sys.stdin:\n    print(\'{"id": "an-earlier-case", "pid": 1}\', flush=True)\n'
    )
    server = conftest._ForkServer()
    server.proc = subprocess.Popen(
        [sys.executable, "-c", stale], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    stale_proc = server.proc
    with pytest.raises(RuntimeError, match="an-earlier-case"):
        server.run(["--help"], tmp_path, {}, timeout=30)
    assert server.proc is None and stale_proc.poll() is not None  # the next case starts a new server
