"""Two-process DDP on CPU (gloo), single run and inside a Hydra multirun: one MLflow run per job."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import all_runs, run_train

pytestmark = pytest.mark.slow  # each job starts a second Python process that imports torch and Lightning


def _steps(client, run) -> list[int]:
    return [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]


def test_ddp_single_run_is_one_mlflow_run_written_by_rank_zero(store, client, tmp_path: Path):
    proc = run_train(["trainer.devices=2", "trainer.strategy=ddp", "trainer.max_steps=20"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (run,) = all_runs(client)
    assert run.info.status == "FINISHED"
    assert _steps(client, run) == list(range(20))
    assert run.data.params["trainer.devices"] == "2"
    assert "grad/global_norm" in run.data.metrics  # statistics of the synchronised gradient
    assert proc.stdout.count("done: ") == 1  # the second rank prints and records nothing


def test_ddp_inside_a_multirun_runs_each_job_once(store, client, tmp_path: Path):
    args = ["trainer.devices=2", "trainer.strategy=ddp", "trainer.max_steps=15", "seed=0,1", "-m"]
    proc = run_train(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    runs = all_runs(client)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 3 and len(children) == 2  # parent + one run per job, no duplicates from rank 1
    assert sorted(r.data.params["seed"] for r in children) == ["0", "1"]
    for run in children:
        assert run.info.status == "FINISHED"
        assert _steps(client, run) == list(range(15))
