"""The multiclass task end to end: `train.py` in a subprocess into a temp sqlite store, and its bad input.

Each case is a real process (Hydra, Lightning, MLflow); MNIST-1D is generated small (400 rows) into
a private cache, so nothing here writes to ~/.cache.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, all_runs, run_train, train_cmd
from losslab.vocab import TASK_METRICS

METRICS = TASK_METRICS["multiclass"]


def _train(tmp: Path, args: list[str]) -> tuple[subprocess.CompletedProcess, MlflowClient]:
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri, "LOSSLAB_CACHE_DIR": str(tmp / "cache")}
    proc = run_train([*args, "trainer.enable_progress_bar=false"], cwd=tmp, env=env)
    return proc, MlflowClient(uri)


@pytest.mark.parametrize(
    "args",
    [
        ["data=digits", "model=mlp", "loss=gce", "trainer.max_steps=30"],
        ["data=mnist1d", "data.num_samples=500", "model=cnn1d", "loss=cross_entropy", "trainer.max_steps=12"],
    ],
    ids=["digits-mlp-gce", "mnist1d-cnn1d-ce"],
)
def test_a_multiclass_run_logs_every_task_metric_on_val_test_and_test_last(args, tmp_path: Path):
    proc, client = _train(tmp_path, args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = all_runs(client)
    assert run.info.status == "FINISHED"
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["task"] == "multiclass" and tags["labels"] == "classes"
    assert tags.get("outcome") in ("converged", "still_improving", "plateaued", "oscillating", "diverged")
    for m in METRICS:
        for key in (f"val/{m}", f"best/val_{m}", f"test/{m}", f"test_last/{m}"):
            assert key in metrics, key
    assert 0.0 <= metrics["test/accuracy"] <= 1.0 and 0.0 <= metrics["test/ece"] <= 1.0
    assert metrics["test/nll"] > 0 and 0.0 <= metrics["test_last/brier"] <= 2.0
    assert metrics["best/val_accuracy"] > 0.1  # above chance after a few steps
    if "data=mnist1d" in args:
        assert list((tmp_path / "cache" / "mnist1d").glob("*.npz"))  # generated into the given cache


BAD = {
    "multiclass-loss-on-binary-data": (
        ["loss=cross_entropy", "data=breast_cancer"],
        ["CrossEntropy is a multiclass loss", "data=breast_cancer is a binary set", "data=digits"],
    ),
    "multiclass-loss-on-regression-data": (
        ["loss=gce", "data=diabetes"],
        ["GCE is a multiclass loss", "data=diabetes is a regression set", "data=mnist1d"],
    ),
    "binary-loss-on-multiclass-data": (
        ["loss=hinge", "data=digits"],
        ["Hinge is a binary loss", "data=digits is a multiclass set", "loss=cross_entropy"],
    ),
    "labels-outside-k": (
        ["loss=cross_entropy", "data=digits", "loss.num_classes=5"],
        ["labels {5, 6, 7, 8, 9} are outside [0, 5)", "integer class indices in [0, 5)"],
    ),
}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory) -> tuple[dict[str, subprocess.CompletedProcess], str]:
    tmp = tmp_path_factory.mktemp("multiclass_bad")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "LOSSLAB_CACHE_DIR": str(tmp / "cache")}
    env.pop("HYDRA_FULL_ERROR", None)

    def one(args: list[str]) -> subprocess.CompletedProcess:
        cmd = train_cmd(*args, "trainer.max_steps=5")
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = dict(zip(BAD, pool.map(one, [a for a, _ in BAD.values()]), strict=True))
    return procs, uri


@pytest.mark.parametrize("case", list(BAD))
def test_bad_multiclass_input_is_one_error_paragraph_exit_2_and_no_run(case, bad_runs):
    procs, uri = bad_runs
    proc = procs[case]
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    assert proc.stdout == "" and proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, output
    for text in BAD[case][1]:
        assert text in proc.stderr, f"{text!r} missing from:\n{proc.stderr}"
    # refused before any run existed (RUNNING or not): the store was never even opened
    store = Path(uri.removeprefix("sqlite:///"))
    assert not store.exists() or all_runs(MlflowClient(uri)) == []
