"""Record the real LossLab curves of the outcome corpus (tests/data/outcome_curves/real_*.json).

Each case is one `python train.py OVERRIDES` run with the divergence guard off (the whole curve is
kept), into a throw-away sqlite store; its `train/loss` and `val/loss` histories are written as JSON
with the command that produced them. The expected label is added by hand after looking at the curve
(see tests/unit/outcomes/test_classify.py), so re-recording never silently changes what the test expects.

    PYTHONPATH=src python scripts/record_outcome_curves.py [NAME ...]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "outcome_curves"

# name -> overrides (the cases first; the studies use 200 / 300 steps)
CASES: dict[str, list[str]] = {
    "bce_rmsprop_lr1e-3_200": [
        "loss=bce_with_logits",
        "optimizer=rmsprop",
        "optimizer.lr=0.001",
        "trainer.max_steps=200",
    ],
    "hinge_m0_breast_cancer_sgd_lr1e-3_300": [
        "loss=hinge",
        "loss.margin=0.0",
        "data=breast_cancer",
        "optimizer=sgd",
        "optimizer.lr=0.001",
        "trainer.max_steps=300",
    ],
    "hinge_m2_breast_cancer_sgd_lr1e-3_300": [
        "loss=hinge",
        "loss.margin=2.0",
        "data=breast_cancer",
        "optimizer=sgd",
        "optimizer.lr=0.001",
        "trainer.max_steps=300",
    ],
    "hinge_breast_cancer_sgd_lr1e-3_300": [
        "loss=hinge",
        "data=breast_cancer",
        "optimizer=sgd",
        "optimizer.lr=0.001",
        "trainer.max_steps=300",
    ],
    "focal_sgd_lr10_200": ["loss=focal", "optimizer=sgd", "optimizer.lr=10", "trainer.max_steps=200"],
    "log_cosh_sgd_lr1_200": ["loss=log_cosh", "optimizer=sgd", "optimizer.lr=1", "trainer.max_steps=200"],
    "mse_rmsprop_lr0.01_200": ["loss=mse", "optimizer=rmsprop", "optimizer.lr=0.01", "trainer.max_steps=200"],
    "mse_adam_lr0.01_2000": ["loss=mse", "optimizer=adam", "optimizer.lr=0.01", "trainer.max_steps=2000"],
    "mse_sgd_lr100_200": ["loss=mse", "optimizer=sgd", "optimizer.lr=100", "trainer.max_steps=200"],
    "bce_rmsprop_lr0.1_200": [
        "loss=bce_with_logits",
        "optimizer=rmsprop",
        "optimizer.lr=0.1",
        "trainer.max_steps=200",
    ],
    "mse_sgd_lr1e-3_200": ["loss=mse", "optimizer=sgd", "optimizer.lr=0.001", "trainer.max_steps=200"],
    "hinge_adam_lr0.1_breast_cancer_300": [
        "loss=hinge",
        "data=breast_cancer",
        "optimizer=adam",
        "optimizer.lr=0.1",
        "trainer.max_steps=300",
    ],
    "huber_adam_lr0.01_500": ["loss=huber", "optimizer=adam", "optimizer.lr=0.01"],
    "squared_hinge_sgd_lr1_200": [
        "loss=squared_hinge",
        "optimizer=sgd",
        "optimizer.lr=1",
        "trainer.max_steps=200",
    ],
}


def _round(v: float) -> float:
    return float(f"{v:.6g}")


def record(name: str, overrides: list[str]) -> None:
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        args = [*overrides, "outcome.stop_on_divergence=false", "tracking.log_curve_png=false"]
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": "corpus"}
        proc = subprocess.run(
            [sys.executable, str(ROOT / "train.py"), *args],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{name}: train.py failed\n{proc.stderr[-3000:]}")
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("corpus")
        (run,) = client.search_runs([exp.experiment_id])
        curves = {
            key: [
                [m.step, _round(m.value)]
                for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
            ]
            for key in ("train/loss", "val/loss")
        }
    path = OUT / f"real_{name}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    doc = {
        "command": "python train.py " + " ".join(args),
        "expected": old.get("expected"),
        "expected_overfitting": old.get("expected_overfitting"),
        "train": curves["train/loss"],
        "val": curves["val/loss"],
    }
    path.write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"{name}: {len(doc['train'])} train points, {len(doc['val'])} val points", flush=True)


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    names = sys.argv[1:] or list(CASES)
    for n in names:
        record(n, CASES[n])
