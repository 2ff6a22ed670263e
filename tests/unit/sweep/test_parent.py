"""A sweep's parent run and its children as the MLflow UI reads them, from a real Hydra multirun:
names, note, best-design metrics, MLflow's standard tags, dataset inputs, logs, and a resume with
nothing left to do (no new parent)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from conftest import ROOT, all_runs, run_train

SWEEP = [
    "loss._target_=helpers.custom_losses.ScaledLogCosh",
    "+loss.scale=0.5,2",
    "seed=0,1",
    "trainer.max_steps=20",
    "-m",
]
# the user's loss module is importable as it would be in their project (tests/ on the path)
ENV = {"PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}


def test_a_custom_loss_sweep_its_parent_children_and_a_resume_with_nothing_to_do(
    store, client, tmp_path: Path
):
    first = run_train(SWEEP, cwd=tmp_path, env=ENV)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    runs = all_runs(client)
    parents = [r for r in runs if r.data.tags.get("losslab.sweep") == "parent"]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]

    # named after the user's loss class, not the default loss
    assert parent.info.run_name.startswith("scaledlogcosh-sweep-"), parent.info.run_name
    # what differs (the loss's own knob), then the seed; what the sweep holds fixed is in the parent
    assert sorted(r.info.run_name for r in children) == [
        "scale0.5-s0",
        "scale0.5-s1",
        "scale2-s0",
        "scale2-s1",
    ]
    # each child carries its design, which the printed runs link groups by (a shared view)
    assert sorted(r.data.tags["design"] for r in children) == ["scale=0.5"] * 2 + ["scale=2"] * 2
    # the parent carries the result: the ranked design table as its note, the best design's numbers
    note = parent.data.tags["mlflow.note.content"]
    assert "scale=0.5" in note and "scale=2" in note and "|" in note
    assert parent.data.tags["best.label"] in ("scale=0.5", "scale=2")
    assert parent.data.metrics["best/runs"] == 2
    assert any(k.startswith("best/val_") for k in parent.data.metrics)
    artifacts = [f.path for f in client.list_artifacts(parent.info.run_id, "report")]
    assert "report/index.html" in artifacts
    # MLflow's own context tags and the data as inputs (the UI's User, Source and Dataset columns)
    for run in [parent, *children]:
        assert run.data.tags["mlflow.user"] and run.data.tags["mlflow.source.type"] == "LOCAL"
        assert run.data.tags["mlflow.source.name"].endswith("train.py")
        assert len(run.data.tags["mlflow.source.git.commit"]) == 40
    for child in children:
        inputs = child.inputs.dataset_inputs
        assert {i.dataset.name for i in inputs} == {"regression"}
        assert {t.value for i in inputs for t in i.tags} == {"train", "validation", "test"}
        assert all(i.dataset.digest and "tensorspec" in i.dataset.schema for i in inputs)

    # the end of the sweep says where the report and the runs table are; the logs hold the lines
    assert "report: reports/scaledlogcosh-sweep-" in first.stdout
    view = parent.data.tags["losslab.view"]
    runs_link = f"/#/experiments/{parent.info.experiment_id}/runs?workflowType=machine_learning"
    assert f"{runs_link}&viewStateShareKey={view}" in first.stdout
    assert f"mlflow.sharedViewState.{view}" in client.get_experiment(parent.info.experiment_id).tags
    sweep_log = next(tmp_path.glob("multirun/*/*/sweep.log")).read_text()
    assert "Sweep summary" in sweep_log and "report: " in sweep_log
    job_logs = sorted(tmp_path.glob("multirun/*/*/*/train.log"))
    assert len(job_logs) == 4 and all("done: scale" in p.read_text() for p in job_logs)

    started = time.monotonic()
    again = run_train(SWEEP, cwd=tmp_path, env=ENV, fresh=True)  # a cold start: what it imports counts
    took = time.monotonic() - started
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert took < 30, took  # about 4 s on an idle machine: no torch, no report, one compose per shape
    assert "all 4 configs of this sweep are done" in again.stdout
    assert f"reports/{parent.info.run_name}/index.html" in again.stdout
    assert len(all_runs(client)) == len(runs)  # no new parent, no new child


def test_a_study_that_declares_report_tune_gets_a_tuned_report_at_sweep_end(store, client, tmp_path: Path):
    """`tracking.report_tune` (the shootouts set [optimizer.lr]): the sweep's own report picks each
    design's lr on val and says the budget, as `compare --tune optimizer.lr` would."""
    args = ["loss=hinge", "loss.margin=0.5,1", "optimizer.lr=0.001,0.01", "seed=0,1", "trainer.max_steps=10"]
    done = run_train([*args, "tracking.report_tune=[optimizer.lr]", "-m"], cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    parent = next(r for r in all_runs(client) if r.data.tags.get("losslab.sweep") == "parent")
    note = parent.data.tags["mlflow.note.content"]
    assert "Budget: 2 configs of optimizer.lr tried per design (equal budget)." in note
    # each design with its chosen lr
    assert "margin=0.5 (lr=" in note and "margin=1 (lr=" in note, note
    assert f"python -m losslab.compare --sweep {parent.info.run_id} --tune optimizer.lr" in done.stdout


def test_a_sweep_over_several_data_sets_gets_one_report_per_data_set(store, client, tmp_path: Path):
    """Each loss on its own data, as optimizer_stability runs (mse: regression, hinge: binary, BCE:
    binary01): a metric is ranked only among runs on the same data (never across tasks), one report
    each, every table in the parent's note; compare does the same, or one subset with --data/--task."""
    args = ["loss=mse,hinge,bce_with_logits", "seed=0,1", "trainer.max_steps=10", "grid=none", "-m"]
    done = run_train(args, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "no report for this sweep" not in done.stdout + done.stderr
    parent = next(r for r in all_runs(client) if r.data.tags.get("losslab.sweep") == "parent")
    note = parent.data.tags["mlflow.note.content"]
    assert all(f"### {d}\n" in note for d in ("binary", "binary01", "regression")), note
    assert "Val accuracy" in note and "Val rmse" in note
    name = parent.info.run_name
    for data in ("binary", "binary01", "regression"):
        assert (tmp_path / "reports" / f"{name}-{data}" / "index.html").is_file()
        logged = [f.path for f in client.list_artifacts(parent.info.run_id, f"report-{data}")]
        assert f"report-{data}/index.html" in logged

    from losslab import compare

    out = tmp_path / "again"
    assert compare.main(["--sweep", parent.info.run_id, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        f"{name}-binary",
        f"{name}-binary01",
        f"{name}-regression",
    ]
    one = tmp_path / "one"
    assert compare.main(["--sweep", parent.info.run_id, "--data", "binary01", "--out", str(one)]) == 0
    assert [p.name for p in one.iterdir()] == [f"{name}-binary01"]
    assert compare.main(["--sweep", parent.info.run_id, "--task", "binary", "--data", "regression"]) == 2
    # --task alone: that task's runs, still one report per data set (binary and binary01 never mixed)
    task = tmp_path / "task"
    assert compare.main(["--sweep", parent.info.run_id, "--task", "binary", "--out", str(task)]) == 0
    assert sorted(p.name for p in task.iterdir()) == [f"{name}-binary", f"{name}-binary01"]


def test_the_jobs_note_stays_under_mlflows_tag_limit_and_says_what_it_left_out():
    from losslab.sweep.parent import summary_markdown

    rows = [
        {"job": i, "name": f"lr0.1-s{i} ({'x' * 40})", "status": "FINISHED", "val_loss": 0.1}
        for i in range(360)
    ]
    text = summary_markdown(rows)
    assert len(text) <= 4000
    shown = text.count("| FINISHED |")
    assert text.endswith(f"{360 - shown} more jobs: all 360 in summary.txt on this run.")
    assert summary_markdown(rows[:3]).count("| FINISHED |") == 3
