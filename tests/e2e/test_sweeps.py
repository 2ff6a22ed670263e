"""Real Hydra multiruns in subprocesses: parallel workers, failing jobs, resuming, studies."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT, all_runs, run_train


def _children(client, experiment: str = "losslab") -> tuple[list, list]:
    runs = all_runs(client, experiment)
    parents = [r for r in runs if r.data.tags.get("losslab.sweep") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def _points(client, run_id: str, key: str = "train/loss") -> list[int]:
    return [m.step for m in client.get_metric_history(run_id, key)]


def test_joblib_workers_share_one_fresh_store_and_one_parent(store, client, tmp_path: Path):
    """8 jobs on 2 reused loky workers into a brand-new sqlite file: no schema race, no run leak."""
    proc = run_train(
        ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=range(8)", "trainer.max_steps=40", "-m"],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    parents, children = _children(client)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 8
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted(int(r.data.params["seed"]) for r in children) == list(range(8))
    for run in children:
        assert run.info.status == "FINISHED"
        assert _points(client, run.info.run_id) == list(range(40))  # exactly one point per step
    assert "[8/8]" in proc.stdout


@pytest.mark.slow  # 21 s; a failing job in a real multirun is also in test_compare (report)
def test_a_failing_job_is_recorded_and_the_sweep_goes_on(store, client, tmp_path: Path):
    args = [
        "loss._target_=tests.helpers.custom_losses.FailAt",
        "+loss.fail_at=5,-1",
        "trainer.max_steps=30",
        "-m",
    ]
    proc = run_train(args, cwd=ROOT, env={"MLFLOW_EXPERIMENT_NAME": "failing"})
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Sweep summary" in proc.stdout and "1 of 2 jobs failed" in proc.stderr
    parents, children = _children(client, "failing")
    assert parents[0].info.status == "FAILED"
    by_status = {r.info.status: r for r in children}
    assert set(by_status) == {"FAILED", "FINISHED"}
    failed = by_status["FAILED"]
    assert "deliberate failure" in failed.data.tags["error"]
    assert _points(client, failed.info.run_id) == list(range(5))  # steps 0-4, up to the failing step
    assert len(_points(client, by_status["FINISHED"].info.run_id)) == 30
    summary = client.download_artifacts(parents[0].info.run_id, "summary.txt", str(tmp_path))
    assert "deliberate failure" in Path(summary).read_text()

    # resume: the finished config is skipped, the failed one runs again (and fails again)
    again = run_train(args, cwd=ROOT, env={"MLFLOW_EXPERIMENT_NAME": "failing"})
    assert again.returncode == 1
    assert "skip:" in again.stdout
    _, children2 = _children(client, "failing")
    assert len(children2) == 3
    assert sum(r.info.status == "FINISHED" for r in children2) == 1


@pytest.mark.slow  # 24 s; resume with nothing to do is also in test_parent and test_resume_source
def test_rerunning_a_finished_sweep_adds_no_runs(store, client, tmp_path: Path):
    args = ["loss=mse", "seed=0,1", "trainer.max_steps=10", "-m"]
    assert run_train(args, cwd=tmp_path).returncode == 0
    _, first = _children(client)
    again = run_train(args, cwd=tmp_path)
    assert again.returncode == 0
    # nothing left to do: no job runs, and no new (empty) parent run is made
    assert "all 2 configs of this sweep are done" in again.stdout and "skip:" not in again.stdout
    assert len(_children(client)[0]) == 1
    _, second = _children(client)
    assert len(second) == len(first) == 2
    forced = run_train([*args[:-1], "rerun=true", "-m"], cwd=tmp_path)
    assert forced.returncode == 0
    assert len(_children(client)[1]) == 4


def test_devices_study_refuses_gpu_without_one_and_runs_cpu(store, client, tmp_path: Path):
    import torch

    proc = run_train(["+experiment=devices", "trainer.max_steps=20", "seed=0", "-m"], cwd=tmp_path)
    parents, children = _children(client, "devices")
    if torch.cuda.is_available():  # pragma: no cover - only on a GPU machine
        assert proc.returncode == 0
        assert len(children) == 2
        return
    assert proc.returncode == 1
    assert "trainer.accelerator=gpu but no CUDA GPU is visible" in proc.stdout
    assert [r.data.params["trainer.accelerator"] for r in children] == ["cpu"]
    assert children[0].info.status == "FINISHED"
    assert parents[0].data.tags["jobs_failed"] == "1"


@pytest.mark.slow
def test_optuna_search_survives_a_diverging_trial(store, client, tmp_path: Path):
    """A trial at a huge learning rate diverges; the search returns a finite value and goes on."""
    args = [
        "+experiment=hinge_optuna",
        "hydra.sweeper.n_trials=3",
        "trainer.max_steps=30",
        "optimizer.lr=choice(1000.0,0.01)",
        "tracking.report_on_sweep_end=false",
        "-m",
    ]
    proc = run_train(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Best value" in proc.stdout + proc.stderr
    _, children = _children(client, "hinge_optuna")
    assert len(children) == 3 and all(r.info.status == "FINISHED" for r in children)
    assert any(
        r.data.tags["outcome"] == "diverged" for r in children if r.data.params["optimizer.lr"] == "1000.0"
    )
