"""Lightning conventions: the config's callbacks, logger and checkpointing are merged, never dropped.

Real Lightning callbacks and loggers, real runs into a real sqlite store; the EarlyStopping test
goes through `python train.py` in a subprocess (real Hydra override parsing).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from conftest import compose, run_train
from losslab.train import job as task


def _only_run(client):
    exp = client.get_experiment_by_name("losslab")
    (run,) = client.search_runs([exp.experiment_id])
    return run


def test_configured_early_stopping_stops_a_run_early(store, client, tmp_path: Path):
    callback = (
        "+trainer.callbacks=[{_target_:pytorch_lightning.callbacks.EarlyStopping,"
        "monitor:val/loss,patience:1,min_delta:100.0}]"
    )
    proc = run_train(["loss=mse", "trainer.max_steps=3000", callback], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run = _only_run(client)
    # no validation improves by 100: stopped at the second validation (2 epochs of 10 batches)
    assert run.data.metrics["final/steps"] == 20
    assert run.data.tags["stopped_early"] == "early_stopping"
    assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 2


def test_early_stopping_config_group_monitors_a_task_metric(store, client):
    result = task.train(
        compose(
            [
                "loss=hinge",
                "data=breast_cancer",
                "trainer=early_stopping",
                "trainer.callbacks.0.monitor=val/accuracy",
                "trainer.callbacks.0.mode=max",
                "trainer.callbacks.0.patience=2",
            ]
        )
    )
    run = client.get_run(result.run_id)
    assert run.data.tags["stopped_early"] == "early_stopping"
    assert run.data.metrics["final/steps"] < 5000


def test_model_checkpoint_monitors_val_accuracy_and_a_logger_gets_self_log(store, client, tmp_path: Path):
    ckpt_dir, log_dir = tmp_path / "ckpt", tmp_path / "logs"
    result = task.train(
        compose(
            [
                "loss=bce_with_logits",
                "data=breast_cancer",
                "trainer.max_steps=60",
                "+trainer.callbacks=[{_target_:pytorch_lightning.callbacks.ModelCheckpoint,"
                f"monitor:val/accuracy,mode:max,dirpath:'{ckpt_dir}',filename:best}}]",
                f"+trainer.logger={{_target_:pytorch_lightning.loggers.CSVLogger,save_dir:'{log_dir}'}}",
            ]
        )
    )
    m = client.get_run(result.run_id).data.metrics
    assert (ckpt_dir / "best.ckpt").is_file()
    import torch

    saved = torch.load(ckpt_dir / "best.ckpt", map_location="cpu", weights_only=False)
    (state,) = [v for k, v in saved["callbacks"].items() if "ModelCheckpoint" in k]
    # Lightning's choice on val/accuracy is LossLab's selection (max, first of ties)
    assert float(state["best_model_score"]) == pytest.approx(m["best/val_accuracy"])
    (metrics_csv,) = log_dir.rglob("metrics.csv")
    rows = list(csv.DictReader(metrics_csv.open()))
    logged = [float(r["val/accuracy"]) for r in rows if r.get("val/accuracy")]
    history = [p.value for p in client.get_metric_history(result.run_id, "val/accuracy")]
    assert logged == pytest.approx(history)  # the same values reach the user's logger and MLflow
    assert {"val/loss", "val/auc"} <= set(rows[0])


def test_a_bad_callback_entry_is_a_config_error(store, client, tmp_path: Path):
    proc = run_train(["trainer.max_steps=5", "+trainer.callbacks=[3]"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "Error:" in proc.stderr and "trainer.callbacks" in proc.stderr and "_target_" in proc.stderr
