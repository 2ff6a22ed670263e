"""What LossLab's SLURM launcher (`hydra/launcher=slurm`) adds to hydra-submitit-launcher's, where a
real cluster showed the stock one loses work or hangs. The launcher class itself is
hydra_plugins/losslab_slurm/launcher.py (Hydra takes launchers only from the hydra_plugins package,
and imports every module there at each start, so it stays light and delegates here).

- Job states without an accounting database. submitit asks `sacct`; on a cluster with
  `AccountingStorageType=accounting_storage/none` that fails on every poll (one warning each), the
  state stays UNKNOWN, and a job that dies without writing its result (cancelled, SIGKILLed, node
  lost) keeps the sweep waiting forever. `QueueWatcher` probes `sacct` once and, when there is no
  accounting, reads states from `squeue --states=all` instead (slurmctld keeps finished jobs for
  MinJobAge, 300 s by default); a job gone from squeue is over.
- One failed job does not end the sweep. The stock launcher raises at the first job without a
  result, so the sweep callback never prints its summary while the other jobs keep running on the
  cluster. Here every job is waited for; one without a result gets a result.json (KILLED when
  cancelled, FAILED otherwise, with SLURM's state), its MLflow run is closed if it was left RUNNING,
  and the sweeper receives the usual finite penalty; the summary then exits non-zero.
- DDP in a job. A job is one SLURM task; Lightning, seeing SLURM_NTASKS, refused `devices=2`, and its
  launcher would have re-run submitit's entry point. In the job, Lightning sees no SLURM task layout
  and re-runs the sweep's own script (train.py, losslab-train) for the other ranks.
- Time limit and preemption. SLURM signals the job (SIGUSR2, `signal_delay_s` before `--time`);
  submitit would requeue a preempted job, which would start over as a new run. Here the signal
  stops training like Ctrl-C: the run ends KILLED with its curve kept, and the job is not requeued.
Written by hand because hydra-submitit-launcher has no hooks for any of this (its `launch` waits on
`results()` in a list comprehension, and its `checkpoint` always asks for a requeue).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf
from submitit.slurm.slurm import SlurmInfoWatcher

from losslab.sweep import interrupts

log = logging.getLogger(__name__)

#: SLURM states of a job that ended without finishing its work, as LossLab run statuses
_KILLED_STATES = ("CANCELLED", "PREEMPTED", "DEADLINE")


def run_status(slurm_state: str) -> str:
    """The MLflow status for a job that ended without a result: KILLED if someone stopped it."""
    return "KILLED" if slurm_state.upper().startswith(_KILLED_STATES) else "FAILED"


class QueueWatcher(SlurmInfoWatcher):
    """submitit's state watcher, reading `squeue` when the cluster keeps no accounting."""

    def __init__(self, delay_s: int = 60) -> None:
        super().__init__(delay_s=delay_s)
        self.use_sacct: bool | None = None  # None: not probed yet
        self._seen: set[str] = set()

    def _probe_sacct(self) -> bool:
        try:
            probe = subprocess.run(
                ["sacct", "--noheader", "-X", "-j", "1"], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.SubprocessError):
            return False
        if probe.returncode != 0:
            log.info("no SLURM accounting (%s): job states come from squeue", probe.stderr.strip()[:200])
            return False
        return True

    def _make_command(self) -> list[str] | None:
        command = super()._make_command()
        if command is None:
            return None
        if self.use_sacct is None:
            self.use_sacct = self._probe_sacct()
        if self.use_sacct:
            return command
        ids = sorted({x.split("_")[0] for x in self._registered - self._finished})
        # --array: one line per array task; --states=all: finished jobs too, while slurmctld keeps them
        return ["squeue", "--array", "--states=all", "-o", "%i|%T|%N", "-j", ",".join(ids)]

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        text = string.decode() if isinstance(string, bytes) else string
        if self.use_sacct or not text.startswith("JOBID|"):
            return super().read_info(text)
        info = super().read_info("JobID|State|NodeList\n" + text.split("\n", 1)[1])
        self._seen |= set(info)
        # a job squeue showed before and shows no more ended more than MinJobAge ago
        for job_id in self._registered - self._finished - set(info):
            if job_id in self._seen:
                info[job_id] = {"JobID": job_id, "State": "ENDED", "NodeList": ""}
        return info


#: a PYTHONWARNINGS entry (action:message prefix) for Lightning's hint to start jobs with srun
_SRUN_HINT = "ignore:The `srun` command is available on your system but is not used"


class _Interrupted(KeyboardInterrupt):
    """SLURM's warning signal, raised where training runs so the run closes like after Ctrl-C."""


def _on_slurm_signal(signum: int, frame: Any) -> None:
    raise _Interrupted(
        f"SLURM sent {signal.Signals(signum).name}: the job reached its time limit minus "
        "signal_delay_s, or was preempted; not requeued"
    )


@contextlib.contextmanager
def slurm_signal_stops_training() -> Iterator[None]:
    """In the job: SLURM's warning signal (submitit's SIGUSR2) raises where training runs."""
    usr = getattr(signal, os.environ.get("SUBMITIT_USR_SIG", "SIGUSR2"), signal.SIGUSR2)
    previous = signal.signal(usr, _on_slurm_signal)
    try:
        yield
    finally:
        signal.signal(usr, previous)


def driver_script() -> tuple[str, str | None]:
    """In the driver: the script `-m` ran (path, and module name for `python -m`), for the jobs' DDP."""
    # Deferred: `__main__` is imported where it is read; `train.job` (torch) where a job's penalty is
    # computed, since the sweep driver imports this module and never imports torch; the recorder (MLflow,
    # seconds of imports) where a run is closed, so that importing this module does not import MLflow
    import __main__

    spec = getattr(__main__, "__spec__", None)
    return os.path.abspath(sys.argv[0]), spec.name if spec is not None else None


@contextlib.contextmanager
def run_as_driver_script(script: tuple[str, str | None] | None) -> Iterator[None]:
    """In the job: Lightning's DDP launcher starts the other ranks from the sweep's script.

    It re-runs `sys.argv` (or `python -m <__main__'s module>`), which in a job is submitit's entry
    point; and it takes SLURM_NTASKS for the rank layout, while a LossLab job is one task whose
    ranks Lightning starts itself. Both are put back after the job.
    """
    import __main__

    if script is None:
        yield
        return
    path, module = script
    saved_argv, saved_spec = sys.argv[:], getattr(__main__, "__spec__", None)
    saved_env = {k: os.environ.get(k) for k in ("SLURM_NTASKS", "PYTHONWARNINGS")}
    os.environ.pop("SLURM_NTASKS", None)
    # Lightning then suggests `srun python ...` in every process, ranks included: not for a LossLab job
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [saved_env["PYTHONWARNINGS"], _SRUN_HINT]))
    sys.argv = [path, *sys.argv[1:]]
    __main__.__spec__ = importlib.machinery.ModuleSpec(module, None) if module else None
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_SRUN_HINT.split(":", 1)[1])
            yield
    finally:
        sys.argv, __main__.__spec__ = saved_argv, saved_spec
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _not_a_local_worker() -> Iterator[None]:
    """A SLURM job may run on another node than its driver, whose pid means nothing there: without
    this, LossLab's worker watchdog (losslab.sweep.interrupts) took the driver for dead and killed every
    job at its start. A cluster job outlives its driver; stop a sweep with `scancel`."""
    saved = {k: os.environ.pop(k) for k in (*interrupts.JOB_ENV, interrupts.CLUSTER_ENV) if k in os.environ}
    os.environ[interrupts.CLUSTER_ENV] = "1"  # the sweep callback's on_job_start then hands none back
    try:
        yield
    finally:
        for k in (*interrupts.JOB_ENV, interrupts.CLUSTER_ENV):
            os.environ.pop(k, None)
        os.environ.update(saved)


def penalty_return(overrides: list[str], config: DictConfig) -> JobReturn:
    """A job's return when it did not finish: the finite penalty a failed run hands a sweeper,
    in the bad direction of the task's metric (see `task.config_penalty`)."""
    from losslab.train.job import config_penalty

    value = config_penalty(config)
    return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=value)


def run_interrupted_job(
    call: Callable[[], JobReturn],
    overrides: list[str],
    result_json: Path,
    config: DictConfig,
    script: tuple[str, str | None] | None = None,
) -> JobReturn:
    """Run the job; when SLURM's signal or scancel's SIGTERM stopped it, hand submitit a result.

    By then LossLab closed the run KILLED and wrote result.json; without a result to pickle the
    sweep would wait for one. The reason SLURM gave replaces Lightning's "SystemExit: 1".
    """
    with slurm_signal_stops_training(), run_as_driver_script(script), _not_a_local_worker():
        try:
            return call()
        except (KeyboardInterrupt, SystemExit) as exc:
            cause = exc if isinstance(exc, KeyboardInterrupt) else exc.__context__
            if isinstance(cause, _Interrupted):
                _set_error(result_json, str(cause))
            elif getattr(cause, "signum", None) == signal.SIGTERM or str(cause) == "signal 15":
                _set_error(result_json, "SIGTERM: cancelled (scancel) or ended by SLURM")
            return penalty_return(overrides, config)


def _read_json(path: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        return dict(json.loads(path.read_text()))
    return {}


def _set_error(result_json: Path, error: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        row = json.loads(result_json.read_text())
        row["error"] = error
        result_json.write_text(json.dumps(row, indent=1))


def watch_with_queue(jobs: list[Any]) -> None:
    """Make submitit's jobs read their states through one QueueWatcher."""
    watcher = QueueWatcher()
    for job in jobs:
        job.watcher = watcher


def collect(job: Any, overrides: list[str], job_dir: Path, config: DictConfig) -> JobReturn:
    """A job's return; for a job that ended without one, a result.json and its run closed."""
    try:
        returned = job.results()[0]
        row = _read_json(job_dir / "result.json")
        if row.get("status") in ("KILLED", "FAILED"):  # stopped between opening its run and training
            close_running_child(overrides, row["status"], config)
        if isinstance(returned, JobReturn):
            return returned
    except Exception as exc:  # no result: SLURM ended the job, or it crashed outside training
        slurm_state = job.watcher.get_state(job.job_id, mode="force")
        status = run_status(slurm_state)
        error = f"SLURM job {job.job_id} ended {slurm_state} without a result ({_why(exc)[:200]})"
        log.warning(error)
        record_lost_job(job_dir, overrides, status, error, config)
    return penalty_return(overrides, config)


def _why(exc: Exception) -> str:
    """One line from submitit's error: the job's own exception if it raised one, else the first line."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if "failed during processing" in (lines[0] if lines else ""):
        trace = [line for line in lines if not set(line) <= {"-"} and "check full logs" not in line]
        raised = [line for line in trace if not line.startswith(("File ", "Traceback", "^"))]
        return f"it raised {raised[-1]}" if raised else lines[0]
    return lines[0] if lines else type(exc).__name__


def record_lost_job(job_dir: Path, overrides: list[str], status: str, error: str, config: DictConfig) -> None:
    """result.json for the summary, unless the job wrote one; its run closed if left RUNNING."""
    path = job_dir / "result.json"
    row: dict[str, Any] = _read_json(path) or {"status": status, "name": "-", "run_id": None}
    run_id = close_running_child(overrides, status, config)
    if not path.exists() or row.get("status") == "RUNNING":
        job_dir.mkdir(parents=True, exist_ok=True)
        row.update(status=status, error=error, overrides=overrides, run_id=run_id or row.get("run_id"))
        path.write_text(json.dumps(row, indent=1))


def close_running_child(overrides: list[str], status: str, config: DictConfig) -> str | None:
    """The sweep child with these overrides, if it started and was left RUNNING: closed with `status`."""
    from losslab.tracking import recorder as tracking
    from losslab.tracking.store import open_store, resolve_tracking_uri

    parent = os.environ.get(tracking.PARENT_ENV)
    if not parent:
        return None
    for attempt in range(3):  # a store busy with the other jobs' writes: try again shortly
        try:
            uri = resolve_tracking_uri(OmegaConf.select(config, "tracking.uri"))
            client = open_store(uri)
            runs = client.search_runs(
                [client.get_run(parent).info.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{parent}' and attributes.status = 'RUNNING'",
            )
            mine = [r for r in runs if r.data.tags.get("overrides") == " ".join(overrides)]
            for run in mine:
                client.set_terminated(run.info.run_id, status=status)
            return mine[0].info.run_id if mine else None
        except Exception as exc:  # the summary still reports the job
            log.warning(f"cannot close a lost job's run (try {attempt + 1}/3): {type(exc).__name__}: {exc}")
            time.sleep(2)
    return None
