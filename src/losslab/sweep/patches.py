"""Every change LossLab makes to third-party code at run time, in one module, pinned to the versions
it was tested with (`TESTED`); tests/unit/sweep/test_patches.py fails when an installed version or a
patched name changes under it.

Why patches and not subclasses or hooks:
- loky (inside joblib) ends every worker with `process_executor.kill_process_tree` (SIGKILL) when one
  worker dies; it offers no hook, so `_gentle_kill` wraps that function to SIGTERM a worker still
  running a job first, letting the job close its run KILLED with its points.
- hydra-joblib-launcher lets `TerminatedWorkerError` escape `JoblibLauncher.launch`; users pick the
  launcher by its own config name (`hydra/launcher=joblib`), so a subclass would need a replacement
  config under the plugin's name. Wrapping `launch` keeps the user's config and the plugin's
  options exactly as documented.
- `process_joblib_cfg` (a private function of the plugin) turns the launcher's config into
  joblib.Parallel's arguments; the warm-up (`workers.start_warming`) must use the very same ones so
  that loky reuses its executor.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from losslab.sweep.interrupts import JOBS_ENV
from losslab.tracking.liveness import pid_alive

#: the distributions whose internals this module touches, and the release series it was tested with
#: (pyproject.toml pins the same series)
TESTED = {"joblib": "1.6", "hydra-joblib-launcher": "1.2"}


def process_joblib_cfg(settings: dict[str, Any]) -> None:
    """The joblib launcher's own conversion of its config into joblib.Parallel arguments (in place)."""
    # joblib and its Hydra plugin are imported only where a joblib sweep needs them (a basic-launcher
    # sweep's driver does not pay their import), and may be absent (see guard_worker_death)
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg as convert

    convert(settings)


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
