"""A resumed sweep's "anything to do?" read straight from a sqlite store's tables (`parent.done_in_sqlite`,
`store.SqliteRunsReader`) gives the answer MLflow's search gives (`parent.pending_jobs`), on a real store
holding runs recorded as a sweep records them: every config FINISHED, one FAILED, one made from other loss
code, a RUNNING run (left to MLflow's path, which first checks it for staleness), a deleted experiment, a
store at an older schema. No job is trained: the runs carry the config hashes and fingerprints of the
sweep's composed configs."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from losslab import CONF_DIR
from losslab.sweep import parent
from losslab.tracking import fingerprint
from losslab.tracking.naming import config_hash
from losslab.tracking.store import SqliteRunsReader, ensure_experiment, mlflow_head_revision, open_store

JOBS = [[f"+design={d}", f"seed={s}"] for d in ("hinge_m0", "focal") for s in (0, 1)]


@pytest.fixture
def master() -> Iterator[DictConfig]:
    """The sweep's master config, with Hydra initialised as in the sweep driver."""
    from hydra_plugins.losslab_sweeper import sweeper

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["data=breast_cancer", "grid=none"], return_hydra_config=True)
        assert sweeper.validate_before_start(cfg, JOBS) is None  # what the driver composes first
        yield cfg


def _record_sweep(client, exp_id: str, master: DictConfig, status: str = "FINISHED") -> tuple[str, list[str]]:
    """A parent run and one child per job, tagged as a sweep's jobs tag themselves; (parent id, child ids)."""
    from hydra_plugins.losslab_sweeper.sweeper import job_configs

    top = client.create_run(exp_id, run_name="study-20260101-000000", tags={"losslab.sweep": "parent"})
    children = []
    loader = GlobalHydra.instance().config_loader()
    for job in job_configs(loader, master, JOBS):  # one config per shape, its numbers set in place
        with open_dict(job):
            job.pop("hydra", None)
        tags = {"losslab.config_hash": config_hash(job), "mlflow.parentRunId": top.info.run_id}
        tags.update(fingerprint.current(job))
        run = client.create_run(exp_id, tags=tags)
        client.set_terminated(run.info.run_id, status=status)
        children.append(run.info.run_id)
    client.set_terminated(top.info.run_id, status="FINISHED")
    return top.info.run_id, children


def _mlflow_says(client, exp_id: str, master: DictConfig):
    done = parent.pending_jobs(master, client, exp_id, JOBS)
    if done is None:
        return None
    last = parent.latest_parent(client, done[1])
    return parent.AllDone(exp_id, done[0], last.info.run_id, last.info.run_name)


def test_the_stores_tables_answer_as_mlflows_search_does(tmp_path: Path, master: DictConfig):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = open_store(uri)
    exp_id = ensure_experiment(client, "losslab")
    # a brand-new experiment with nothing FINISHED: something to do, in both readings
    assert parent.done_in_sqlite(master, uri, "losslab", JOBS) == parent.WORK_LEFT
    assert _mlflow_says(client, exp_id, master) is None
    old_parent, _ = _record_sweep(client, exp_id, master)
    new_parent, children = _record_sweep(client, exp_id, master)

    # every config FINISHED: the same answer, naming the newest sweep that covers them
    quick = parent.done_in_sqlite(master, uri, "losslab", JOBS)
    assert quick == _mlflow_says(client, exp_id, master)
    assert quick == parent.AllDone(exp_id, 4, new_parent, "study-20260101-000000")
    assert parent.done_in_sqlite(master, uri, "another", JOBS) is None  # no such experiment: MLflow's path

    # a config whose only run FAILED (or was KILLED) runs again
    client.set_terminated(children[1], status="FAILED")
    client.delete_run(_older_twin(client, exp_id, children[1]))
    assert parent.done_in_sqlite(master, uri, "losslab", JOBS) == parent.WORK_LEFT
    assert _mlflow_says(client, exp_id, master) is None

    # a config whose FINISHED run came from other loss code runs again
    client.set_terminated(children[1], status="FINISHED")
    assert parent.done_in_sqlite(master, uri, "losslab", JOBS) == _mlflow_says(client, exp_id, master)
    client.set_tag(children[2], "loss_source_sha", "0123456789abcdef")
    client.delete_run(_older_twin(client, exp_id, children[2]))
    assert parent.done_in_sqlite(master, uri, "losslab", JOBS) == parent.WORK_LEFT
    assert _mlflow_says(client, exp_id, master) is None

    # rerun=true: always something to do
    with open_dict(master):
        master.rerun = True
    assert parent.done_in_sqlite(master, uri, "losslab", JOBS) == parent.WORK_LEFT
    assert old_parent != new_parent


def test_a_running_run_a_deleted_experiment_or_an_older_schema_leave_it_to_mlflow(
    tmp_path: Path, master: DictConfig
):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = open_store(uri)
    exp_id = ensure_experiment(client, "losslab")
    _record_sweep(client, exp_id, master)
    assert isinstance(parent.done_in_sqlite(master, uri, "losslab", JOBS), parent.AllDone)

    # a RUNNING run: the sweep first marks it KILLED if its process is gone (and says so): MLflow's path
    running = client.create_run(exp_id)
    assert parent.done_in_sqlite(master, uri, "losslab", JOBS) is None
    client.set_terminated(running.info.run_id, status="KILLED")
    assert isinstance(parent.done_in_sqlite(master, uri, "losslab", JOBS), parent.AllDone)

    # a store at an older schema is upgraded by open_store (MLflow's path), never read here
    older = tmp_path / "older.db"
    shutil.copy(tmp_path / "mlflow.db", older)
    with sqlite3.connect(older) as con:
        con.execute("UPDATE alembic_version SET version_num = 'an-older-one'")
    assert SqliteRunsReader.open(f"sqlite:///{older}") is None
    assert SqliteRunsReader.open("http://127.0.0.1:5000") is None  # a tracking server: MLflow's path
    assert SqliteRunsReader.open(f"sqlite:///{tmp_path / 'absent.db'}") is None

    # a deleted experiment is restored by ensure_experiment (MLflow's path)
    client.delete_experiment(exp_id)
    assert parent.done_in_sqlite(master, uri, "losslab", JOBS) is None


def test_the_head_schema_revision_read_from_mlflows_scripts_is_mlflows_own():
    from mlflow.store.db.utils import _get_latest_schema_revision

    assert mlflow_head_revision() == _get_latest_schema_revision()


def _older_twin(client, exp_id: str, run_id: str) -> str:
    """The first recorded sweep's run of the same config as `run_id` (the second sweep's)."""
    h = client.get_run(run_id).data.tags["losslab.config_hash"]
    runs = client.search_runs([exp_id], filter_string=f"tags.`losslab.config_hash` = '{h}'")
    (twin,) = [r.info.run_id for r in runs if r.info.run_id != run_id]
    return twin
