"""Warm the joblib launcher's worker processes while the sweep driver is still setting up.

A job's imports (torch, Lightning, MLflow, matplotlib: ~8 s of CPU per process here) are paid once
per worker process, which loky reuses for every job of the sweep. Without this, each worker pays
them inside its first job, after the driver has finished its own set-up (MLflow import, parent
run, Hydra composing every job's config to validate the batch). Started from the sweep callback,
the workers import in the background while the driver does that work.

The warm-up goes through joblib's own `Parallel` with the launcher's exact settings, so the
launcher's `Parallel` call finds the same reusable loky executor (joblib reuses it when the
executor arguments are equal) instead of starting new workers. Workers started this early miss
environment variables the driver sets afterwards; the sweep callback hands those to each job in
`on_job_start` instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def warm_imports() -> int:
    """In a worker: import what a training job needs, once. Returns the worker's pid."""
    import torch

    from losslab.tracking import recorder as tracking  # noqa: F401

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # the first optimizer imports torch._dynamo
    return os.getpid()


def joblib_settings(config: DictConfig) -> dict[str, Any] | None:
    """The joblib.Parallel arguments the launcher will use, or None when the launcher is not joblib."""
    launcher = OmegaConf.select(config, "hydra.launcher")
    if not isinstance(launcher, DictConfig) or launcher.get("_target_") != JOBLIB_LAUNCHER:
        return None
    settings = OmegaConf.to_container(launcher, resolve=True)
    assert isinstance(settings, dict)
    settings.pop("_target_", None)
    settings["backend"] = "loky"  # as the launcher does
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg

    process_joblib_cfg(settings)
    return {str(k): v for k, v in settings.items()}


def start_warming(config: DictConfig) -> threading.Thread | None:
    """Start the launcher's workers and their imports in the background; None if not a joblib sweep."""
    settings = joblib_settings(config)
    if settings is None:
        return None

    def warm() -> None:
        from joblib import Parallel, delayed, effective_n_jobs

        with contextlib.suppress(Exception):  # a failed warm-up only means cold workers
            n = effective_n_jobs(settings.get("n_jobs"))
            Parallel(**settings)(delayed(warm_imports)() for _ in range(n))

    thread = threading.Thread(target=warm, name="losslab-warm-workers", daemon=True)
    thread.start()
    return thread


def stop_workers() -> None:
    """After the last job: end the idle loky workers at once instead of at interpreter exit.

    At exit the driver waits for each worker's own orderly shutdown (Python finalisation of a
    process holding torch, Lightning and MLflow): 17.6 s here under load, against 0.6 s to kill
    them. All jobs have returned and closed their runs by now, so nothing is lost.
    """
    loky = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(loky, "_executor", None)
    if executor is not None:
        with contextlib.suppress(Exception):
            executor.shutdown(wait=True, kill_workers=True)


#: the sweep callback's handler for a joblib worker's death (set per sweep by `guard_worker_death`)
_on_worker_death: Callable[..., Any] | None = None
#: pids of workers loky ended itself because another worker died (their jobs are not failed jobs)
ended_by_loky: set[int] = set()
ENDED_JOB_WAIT = 30.0  # seconds an ended worker's job gets to close its run before SIGKILL


def _gentle_kill(kill: Callable[..., Any]) -> Callable[..., Any]:
    """loky's kill_process_tree, preceded by SIGTERM to a worker still running a job.

    When one worker dies, loky SIGKILLs the others at once: their runs would stay RUNNING with
    their buffered points lost. The job's own handler turns SIGTERM into a run closed KILLED with
    every point written (its pid file in the jobs folder goes once it has), then loky's kill
    proceeds. The pid is remembered so the sweep runs that job again instead of counting it failed.
    """

    def kill_process_tree(process: Any, *args: Any, **kwargs: Any) -> Any:
        from losslab.sweep.interrupts import JOBS_ENV
        from losslab.tracking.liveness import pid_alive

        pid = getattr(process, "pid", None)
        jobs = os.environ.get(JOBS_ENV)
        if pid is not None and jobs and (Path(jobs) / str(pid)).exists():
            ended_by_loky.add(pid)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + ENDED_JOB_WAIT
            while time.monotonic() < deadline and (Path(jobs) / str(pid)).exists() and pid_alive(pid):
                time.sleep(0.2)
        return kill(process, *args, **kwargs)

    kill_process_tree._losslab_gentle = True  # type: ignore[attr-defined]
    return kill_process_tree


def guard_worker_death(handler: Callable[..., Any]) -> None:
    """Hand a joblib worker's death (kill -9, out of memory) to `handler` instead of a traceback.

    loky treats one dead worker as a broken pool: it ends the other workers, with their jobs
    (here gently, see `_gentle_kill`), and the launcher raises TerminatedWorkerError out of Hydra.
    `handler(relaunch, job_overrides, initial_job_idx, config, exc)` returns the batch's job
    returns instead, running again (`relaunch`) the jobs that did not get to end. Wraps the
    launcher's `launch` and loky's kill once per process.
    """
    global _on_worker_death
    _on_worker_death = handler
    try:
        from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
        from joblib.externals.loky import process_executor
    except ImportError:  # the plugin is not installed: nothing to guard
        return
    if not getattr(process_executor.kill_process_tree, "_losslab_gentle", False):
        process_executor.kill_process_tree = _gentle_kill(process_executor.kill_process_tree)
    if getattr(JoblibLauncher.launch, "_losslab_guard", False):
        return
    original = JoblibLauncher.launch

    def launch(self: Any, job_overrides: Any, initial_job_idx: int) -> Any:
        from joblib.externals.loky.process_executor import TerminatedWorkerError

        try:
            return original(self, job_overrides, initial_job_idx)
        except TerminatedWorkerError as exc:
            if _on_worker_death is None:
                raise

            def relaunch(overrides: Any, idx: int) -> Any:
                return launch(self, overrides, idx)

            return _on_worker_death(relaunch, list(job_overrides), initial_job_idx, self.config, exc)

    launch._losslab_guard = True  # type: ignore[attr-defined]
    JoblibLauncher.launch = launch  # type: ignore[method-assign]
