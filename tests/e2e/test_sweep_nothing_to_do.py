"""`make sweep` run again with every job FINISHED: the same message, exit 0, no new run, and the driver
never imports torch, Lightning or MLflow (the store's tables answer; docs/performance.md has its time).
Not timed here: `make bench` (row 4.nothing_to_do) times it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import all_runs, run_train

SWEEP = ["optimizer=adam,sgd", "seed=0,1", "grid=none", "trainer.max_steps=5", "-m"]  # 2 shapes x 2 seeds
HEAVY = ("torch", "lightning", "pytorch_lightning", "mlflow", "sqlalchemy")
# `python train.py ARGS` with, at exit, the heavy modules the process imported
DRIVER = (
    "import atexit, sys; "
    f"atexit.register(lambda: print('imported:', sorted(m for m in {HEAVY!r} if m in sys.modules))); "
    "sys.argv = ['train.py', *sys.argv[1:]]; "
    "from losslab.__main__ import main; main()"
)


def test_a_sweep_with_nothing_to_do_says_so_without_importing_torch_or_mlflow(store, client, tmp_path: Path):
    first = run_train(SWEEP, cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    runs = all_runs(client)
    (top,) = [r for r in runs if r.data.tags.get("losslab.sweep") == "parent"]
    assert len(runs) == 5

    again = subprocess.run(
        [sys.executable, "-c", DRIVER, *SWEEP], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    said = again.stdout + again.stderr
    assert again.returncode == 0, said[-3000:]
    name = top.info.run_name
    assert (
        "all 4 configs of this sweep are done (FINISHED runs in experiment "
        f"{top.info.experiment_id}); nothing to run and no new parent run. Their report: "
        f"reports/{name}/index.html (also on parent run {top.info.run_id}: "
        f"http://127.0.0.1:5000/#/experiments/{top.info.experiment_id}/runs/{top.info.run_id}"
        "?workflowType=machine_learning). rerun=true runs them again."
    ) in said, said[-3000:]
    assert "imported: []" in again.stdout, said[-3000:]
    assert len(all_runs(client)) == 5  # no new parent, no new child
    logs = sorted(tmp_path.glob("multirun/*/*/sweep.log"))  # the message is in the new sweep's log too
    assert len(logs) == 2 and "all 4 configs of this sweep are done" in logs[-1].read_text()

    # a FAILED config is not done: the sweep runs (that job only) and MLflow is imported for it
    child = next(r for r in runs if r.data.tags.get("mlflow.parentRunId") == top.info.run_id)
    client.set_terminated(child.info.run_id, status="FAILED")
    third = run_train(SWEEP, cwd=tmp_path)
    assert third.returncode == 0, third.stdout[-2000:] + third.stderr[-2000:]
    assert "configs of this sweep are done" not in third.stdout
    now = all_runs(client)
    assert len([r for r in now if r.data.tags.get("losslab.sweep") == "parent"]) == 2
    h = child.data.tags["losslab.config_hash"]
    assert [r.info.status for r in now if r.data.tags.get("losslab.config_hash") == h] == [
        "FINISHED",
        "FAILED",
    ]
