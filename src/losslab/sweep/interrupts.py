"""Signals in sweeps: every job of an interrupted sweep ends KILLED with its points written.

Launchers differ in who gets a signal: a terminal's Ctrl-C reaches the whole process group
(driver, joblib/loky workers, submitit controllers and tasks); `kill` reaches one process. Their
own reactions lose data: joblib kills its workers with SIGKILL when the driver is interrupted,
submitit's controller follows SIGINT with SIGKILL after one second, and loky workers outlive a
driver killed with SIGKILL and keep taking queued jobs. So LossLab does it itself:

- A job (`JobSignals`) turns the first SIGINT/SIGTERM/SIGHUP into KeyboardInterrupt (its run then
  ends KILLED, buffered points flushed) and ignores the rest while the run closes (`deferred`).
  It registers its pid in the sweep's jobs folder while it runs.
- The driver (`DriverSignals`) on a signal marks the sweep as stopping (a file), sends SIGTERM to
  every registered job, waits until they have closed their runs and exited, then stops the sweep.
- A worker whose job was interrupted asks whether the sweep is stopping (the file, or the driver
  gone): then it exits; otherwise only its job died, which the sweep reports as a failed job.
- A worker watches its driver (`watch_driver`): when the driver is gone (even kill -9), the running
  job is interrupted and closed, and the worker exits instead of taking another job.
Process-level state here (one watchdog, the current job) belongs to the process, not to a job.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from losslab.tracking.liveness import pid_alive, process_start

DRIVER_ENV = "LOSSLAB_DRIVER"  # "pid:start" of the sweep's driver process
STOP_ENV = "LOSSLAB_STOP_FILE"  # exists once the driver is stopping the sweep
JOBS_ENV = "LOSSLAB_JOBS_DIR"  # a file per running job: its pid
JOB_ENV = (DRIVER_ENV, STOP_ENV, JOBS_ENV)  # what a job process needs from its driver
CLUSTER_ENV = "LOSSLAB_CLUSTER_JOB"  # "1" in a SLURM job: its driver may be on another node, unwatched
SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)
CLOSE_WAIT = 120.0  # seconds the driver waits for its jobs to close their runs

_current: JobSignals | None = None
_watchdog: threading.Thread | None = None
_job_done = threading.Event()
_job_done.set()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def driver() -> tuple[int, str] | None:
    value = os.environ.get(DRIVER_ENV, "")
    pid, _, start = value.partition(":")
    return (int(pid), start) if pid.isdigit() else None


def in_worker() -> bool:
    """True in a job process started by a sweep's driver (joblib/loky worker, submitit task)."""
    d = driver()
    return d is not None and d[0] != os.getpid()


def driver_alive() -> bool:
    d = driver()
    return d is None or pid_alive(d[0], d[1] or None)


def sweep_stopping(wait: float = 0.0) -> bool:
    """True once the driver stops the sweep (or is gone); polls up to `wait` seconds for it."""
    deadline = time.monotonic() + wait
    stop_file = os.environ.get(STOP_ENV)
    while True:
        if (stop_file and Path(stop_file).exists()) or not driver_alive():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


class JobSignals:
    """One job: first SIGINT/SIGTERM/SIGHUP -> KeyboardInterrupt, later ones ignored; pid registered."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._raised = False
        self._deferring = 0
        self._previous: dict[int, Any] = {}
        self._pid_file: Path | None = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        if self._raised or self._deferring:
            return  # the run is closing: a second Ctrl-C must not cut its last flush short
        self._raised = True
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Signals arriving inside are remembered, not raised (the run's closing writes)."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1

    def __enter__(self) -> JobSignals:
        global _current
        _current = self
        _job_done.clear()
        if _main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        jobs = os.environ.get(JOBS_ENV)
        if jobs and in_worker():
            with contextlib.suppress(OSError):
                Path(jobs).mkdir(parents=True, exist_ok=True)
                self._pid_file = Path(jobs) / str(os.getpid())
                self._pid_file.write_text(process_start(os.getpid()) or "")
        return self

    def __exit__(self, *exc: object) -> None:
        global _current
        for sig, previous in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        if self._pid_file is not None:
            with contextlib.suppress(OSError):
                self._pid_file.unlink()
        _current = None
        _job_done.set()


def current() -> JobSignals | None:
    return _current


@contextlib.contextmanager
def closing() -> Iterator[None]:
    """Defer signals while a run writes its last points and status (no-op outside a job)."""
    job = _current
    if job is None:
        yield
        return
    with job.deferred():
        yield


def exit_worker(code: int = 130) -> None:
    """Leave a worker process at once (it must not take another job of a stopping sweep)."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def watch_driver(every: float = 1.0) -> None:
    """In a worker: once the driver is gone, interrupt the running job, then exit the process."""
    global _watchdog
    if _watchdog is not None or not in_worker():
        return

    def watch() -> None:
        while driver_alive():
            time.sleep(every)
        if not _job_done.is_set():
            os.kill(os.getpid(), signal.SIGTERM)  # the job's handler: KeyboardInterrupt, run closed KILLED
            _job_done.wait(CLOSE_WAIT)
        exit_worker(143)

    _watchdog = threading.Thread(target=watch, name="losslab-driver-watch", daemon=True)
    _watchdog.start()


class DriverSignals:
    """The sweep's driver: on a signal, stop every running job cleanly, then stop the sweep."""

    def __init__(self, sweep_dir: Path) -> None:
        self.stop_file = sweep_dir / ".losslab-stopping"
        self.jobs_dir = sweep_dir / ".losslab-jobs"
        self.stopping = False
        os.environ[DRIVER_ENV] = f"{os.getpid()}:{process_start(os.getpid()) or ''}"
        os.environ[STOP_ENV] = str(self.stop_file)
        os.environ[JOBS_ENV] = str(self.jobs_dir)
        if _main_thread():
            for sig in SIGNALS:
                signal.signal(sig, self._handler)

    def running_jobs(self) -> list[int]:
        pids = []
        for path in self.jobs_dir.glob("*") if self.jobs_dir.is_dir() else []:
            with contextlib.suppress(OSError, ValueError):
                pid = int(path.name)
                if pid != os.getpid() and pid_alive(pid, path.read_text().strip() or None):
                    pids.append(pid)
        return pids

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:
            return
        self.stopping = True
        with contextlib.suppress(OSError):
            self.stop_file.parent.mkdir(parents=True, exist_ok=True)
            self.stop_file.write_text(f"signal {signum}\n")
        name = signal.Signals(signum).name
        jobs = self.running_jobs()
        print(f"\n{name}: stopping the sweep; closing {len(jobs)} running job(s) as KILLED ...", flush=True)
        for pid in jobs:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + CLOSE_WAIT
        while time.monotonic() < deadline and self.running_jobs():
            time.sleep(0.2)
        raise KeyboardInterrupt(f"sweep stopped by {name}")


class _SubprocessSigintIgnored:
    """`subprocess` for submitit's local launcher: the processes it starts ignore SIGINT."""

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("preexec_fn", _ignore_sigint)
        return subprocess.Popen(*args, **kwargs)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def quiet_submitit_controllers() -> None:
    """A terminal's Ctrl-C must not print a traceback from submitit's local controller processes.

    Each submitit_local job runs under a controller (`python -m submitit.local._local`) in the
    sweep's process group; Ctrl-C raised KeyboardInterrupt in its polling loop, which printed a
    traceback to the terminal and sent its task SIGKILL one second later. Started with SIGINT
    ignored (inherited by its task until the job's own handler takes over), the controller waits
    for its task, which closes its run KILLED on the same Ctrl-C (or on the driver's SIGTERM),
    then exits quietly. Only the controller's launch in the driver is affected.
    """
    # submitit is imported only by a sweep on its launcher (and may be absent), not by other sweeps' drivers
    with contextlib.suppress(ImportError):
        from submitit.local import local

        if not isinstance(getattr(local, "subprocess", None), _SubprocessSigintIgnored):
            local.subprocess = _SubprocessSigintIgnored()  # type: ignore[assignment]
