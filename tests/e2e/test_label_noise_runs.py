"""Label noise and class imbalance end to end: `train.py` in a subprocess into a temp sqlite store, and
their bad input (one `Error:` paragraph, exit 2, no run)."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, all_runs, run_train, train_cmd
from losslab.vocab import FIT_CLEAN, FIT_NOISY, NOISE_RATE


def test_a_noisy_run_logs_its_noise_rate_and_memorisation_along_training(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [
        "data=digits",
        "model=mlp",
        "loss=gce",
        "trainer.max_steps=60",
        "trainer.enable_progress_bar=false",
    ]
    args += ["data.label_noise.kind=symmetric", "data.label_noise.rate=0.4", "data.imbalance_ratio=2"]
    args += ["loss.class_weights=inverse_frequency"]
    proc = run_train(args, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    client = MlflowClient(uri)
    (run,) = all_runs(client)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert abs(metrics[NOISE_RATE] - 0.4) < 0.1 and "data/noise_rate_val" in metrics
    assert metrics["data/imbalance_ratio"] == pytest.approx(2.0, rel=0.1)
    for name in (FIT_NOISY, FIT_CLEAN):
        history = client.get_metric_history(run.info.run_id, name)
        assert len(history) >= 2 and all(0.0 <= m.value <= 1.0 for m in history), name
        assert sorted({m.step for m in history})[-1] <= 60
    assert run.data.params["data.label_noise.kind"] == "symmetric"
    assert "test/accuracy" in metrics and "test_last/accuracy" in metrics  # the best-vs-last gap


def test_a_sweep_over_noise_rates_reports_each_and_a_summary_across_them(tmp_path: Path):
    """Two noise settings (each its own data.name) x 2 losses x 2 seeds: one report per setting, and the
    summary page across them, printed, written and logged on the parent run."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = [
        "data=digits",
        "model=mlp",
        "loss=cross_entropy,gce",
        "data.label_noise.kind=symmetric",
        "data.label_noise.rate=0.0,0.3",
        "data.name=digits_n${data.label_noise.rate}",
        "seed=0,1",
        "grid=none",
        "trainer.max_steps=20",
        "-m",
    ]
    proc = run_train(args, cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("summary across data sets: "))
    page = tmp_path / line.split(": ", 1)[1]
    text = page.read_text()
    assert "digits_n0.0" in text and "digits_n0.3" in text and "data.label_noise.rate" in text
    assert "GCE" in text and "CrossEntropy" in text and "Memorisation" in text
    client = MlflowClient(uri)
    parent = next(r for r in all_runs(client) if r.data.tags.get("losslab.sweep") == "parent")
    logged = [f.path for f in client.list_artifacts(parent.info.run_id, "report-summary")]
    assert "report-summary/index.html" in logged and "report-summary/summary.csv" in logged


BAD = {
    "rate-one": (
        ["data=digits", "loss=gce", "data.label_noise.kind=symmetric", "data.label_noise.rate=1"],
        ["rate=1", "[0, 1)"],
    ),
    "unknown-kind": (["data=digits", "loss=gce", "data.label_noise.kind=pair"], ["kind='pair'", "symmetric"]),
    "asymmetric-without-map": (
        [
            "data=digits",
            "loss=gce",
            "data.name=custom",
            "data.label_noise.kind=asymmetric",
            "data.label_noise.rate=0.2",
        ],
        ["kind='asymmetric'", "no standard asymmetric map", "data.label_noise.map"],
    ),
    "map-class-out-of-range": (
        [
            "data=breast_cancer",
            "loss=hinge",
            "data.label_noise.kind=asymmetric",
            "data.label_noise.map={1:5}",
        ],
        ["label_noise.map", "[0, 2)", "1 = the positive"],
    ),
    "noise-on-regression": (
        ["data=regression", "+data.label_noise.kind=symmetric", "+data.label_noise.rate=0.2"],
        ["needs classification data", "data=regression"],
    ),
    "ratio-below-one": (
        ["data=digits", "loss=gce", "data.imbalance_ratio=0.5"],
        ["imbalance_ratio=0.5", ">= 1"],
    ),
    "ratio-empties-a-class": (
        ["data=digits", "loss=gce", "data.imbalance_ratio=1000"],
        ["no training sample", "accepted: a ratio below"],
    ),
}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory) -> tuple[dict[str, subprocess.CompletedProcess], str]:
    tmp = tmp_path_factory.mktemp("label_noise_bad")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env.pop("HYDRA_FULL_ERROR", None)

    def one(args: list[str]) -> subprocess.CompletedProcess:
        cmd = train_cmd(*args, "trainer.max_steps=5")
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = dict(zip(BAD, pool.map(one, [a for a, _ in BAD.values()]), strict=True))
    return procs, uri


@pytest.mark.parametrize("case", list(BAD))
def test_bad_noise_or_imbalance_is_one_error_paragraph_exit_2_and_no_run(case, bad_runs):
    procs, uri = bad_runs
    proc = procs[case]
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    assert proc.stdout == "" and proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, output
    for text in BAD[case][1]:
        assert text in proc.stderr, f"{text!r} missing from:\n{proc.stderr}"
    store = Path(uri.removeprefix("sqlite:///"))
    assert not store.exists() or all_runs(MlflowClient(uri)) == []
