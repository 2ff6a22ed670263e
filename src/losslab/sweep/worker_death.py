"""A joblib worker died (kill -9, out of memory): its job is a failed job, the sweep goes on.

loky cannot lose one worker: it ends the others (LossLab first lets their jobs close their runs
KILLED with every point, `patches._gentle_kill`) and the launcher raises. This sorts the batch's
jobs from their result.json files and the store: a job that ended (finished, failed, or was
signalled on its own) keeps its result; a job whose run was left RUNNING by a dead worker is the
failed job (its run closed KILLED, a result.json saying so); the jobs loky ended and those not yet
started run again in a new pool. Hand-written: neither joblib nor Hydra's launcher can resume a
batch whose pool broke.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig

from losslab.sweep import patches
from losslab.tracking.liveness import PID_TAG
from losslab.tracking.params import redact_overrides

MAX_DEATHS = 5  # worker deaths one sweep recovers from; past that it stops (a job killing its worker)


def exit_codes(exc: BaseException) -> str:
    found = re.search(r"exit codes of the workers are (\{[^}]*\})", str(exc))
    return found.group(1) if found else type(exc).__name__


def _row(job_dir: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        return dict(json.loads((job_dir / "result.json").read_text()))
    return {}


def _returned(overrides: list[str], row: dict[str, Any]) -> JobReturn:
    """The job's return as the launcher would have handed it (the sweeper's objective)."""
    # Deferred: `train.job` (torch) because this runs in the sweep driver, which never imports torch;
    # the recorder (MLflow) and slurm (submitit) so that importing this module imports neither
    from losslab.train.job import Result

    names = {f.name for f in dataclasses.fields(Result)}
    result = Result(**{k: v for k, v in row.items() if k in names})
    return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=result.objective)


def _ended_by_loky(client: Any, ended: set[int]) -> set[str]:
    """The overrides tags of this sweep's runs whose worker loky ended (not signalled on its own).

    Such a job wrote a KILLED result.json without its run id (the signal came before the run
    handed it back), so its run is found by the worker's pid tag; its config runs again.
    """
    from losslab.tracking import recorder as tracking

    parent = os.environ.get(tracking.PARENT_ENV)
    if client is None or not parent or not ended:
        return set()
    with contextlib.suppress(Exception):
        runs = client.search_runs(
            [client.get_run(parent).info.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent}' and attributes.status = 'KILLED'",
        )
        return {
            r.data.tags.get("overrides", "")
            for r in runs
            if r.data.tags.get(PID_TAG, "").isdigit() and int(r.data.tags[PID_TAG]) in ended
        }
    return set()


def recover(
    relaunch: Callable[[list[list[str]], int], list[JobReturn]],
    job_overrides: list[list[str]],
    first_idx: int,
    config: DictConfig,
    exc: BaseException,
    *,
    sweep_dir: Path,
    client: Any,
    log: logging.Logger,
    reap: Callable[[], Any],
) -> list[JobReturn]:
    """The batch's returns after a worker died: failed job(s) recorded, the rest run again."""
    from losslab.sweep.slurm import close_running_child, penalty_return

    returns: dict[int, JobReturn] = {}
    again: list[int] = []
    failed: list[str] = []
    by_loky = _ended_by_loky(client, patches.ended_by_loky)
    for i, overrides in enumerate(job_overrides):
        job_dir = sweep_dir / str(first_idx + i)
        row = _row(job_dir)
        tags = {" ".join(overrides), " ".join(redact_overrides(list(overrides)))}
        again_after_loky = row.get("status") == "KILLED" and bool(tags & by_loky)
        if row.get("status") not in (None, "RUNNING") and not again_after_loky:
            returns[i] = _returned(overrides, row)
            continue
        run_id = close_running_child(list(overrides), "KILLED", config)
        if run_id is None:  # never started, or ended by loky after closing its run: run it again
            again.append(i)
            continue
        name = client.get_run(run_id).info.run_name if client is not None else "-"
        error = f"its joblib worker died (exit codes {exit_codes(exc)})"
        job_dir.mkdir(parents=True, exist_ok=True)
        row = {"status": "KILLED", "name": name, "run_id": run_id, "error": error}
        (job_dir / "result.json").write_text(json.dumps({**row, "overrides": redact_overrides(overrides)}))
        failed.append(f"job {first_idx + i} ({name})")
        returns[i] = penalty_return(list(overrides), config)
    log.warning(
        "a joblib worker died (exit codes %s): %s failed, run closed KILLED. joblib ended the other "
        "workers; their jobs closed their runs KILLED. The sweep goes on: %d job(s) run again or for "
        "the first time.",
        exit_codes(exc),
        ", ".join(failed) or "no running job",
        len(again),
    )
    patches.ended_by_loky.clear()
    reap()  # a dead worker's run the overrides did not identify (a redacted secret): KILLED now
    start = 0
    while start < len(again):  # contiguous job numbers go to the launcher together
        end = start + 1
        while end < len(again) and again[end] == again[end - 1] + 1:
            end += 1
        segment = again[start:end]
        rets = relaunch([job_overrides[i] for i in segment], first_idx + segment[0])
        returns.update(zip(segment, rets, strict=True))
        start = end
    return [returns[i] for i in range(len(job_overrides))]


def wait_gone(running: Callable[[], list[int]], timeout: float = 45.0) -> None:
    """Until the jobs loky ended have exited (each first closes its run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running():
        time.sleep(0.2)
