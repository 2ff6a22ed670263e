"""Shared fixtures: a real sqlite MLflow store per test, Hydra composition, subprocess runs."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig

from losslab import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
CONF = CONF_DIR  # the configs ship inside the package


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh sqlite MLflow store in tmp_path, made the current one via MLFLOW_TRACKING_URI."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("LOSSLAB_PARENT_RUN_ID", raising=False)
    return uri


@pytest.fixture
def client(store: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store)


def compose(overrides: list[str] | None = None) -> DictConfig:
    """The training config exactly as `python train.py OVERRIDES` would compose it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides or []))


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *args]


def run_train(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300, fresh: bool = False
):
    """Run `python train.py ARGS` in a process of its own (real Hydra), output captured.

    The process is forked from an interpreter that has already imported torch, Lightning and MLflow
    (`tests/helpers/forked_cli.py --serve`, one per test process), so the ~5 s of imports a cold
    `python train.py` pays is paid once per test process; the child is otherwise the command line as
    a fresh interpreter runs it (test_forked_runs and test_bad_input compare the two; what a fork
    cannot take from its case is listed in forked_cli.py). `fresh=True`, or LOSSLAB_TEST_FRESH=1 for
    every call, starts a new interpreter instead.
    """
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    if fresh or os.environ.get("LOSSLAB_TEST_FRESH") == "1":
        return subprocess.run(
            train_cmd(*args), cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
        )
    return _SERVER.run(list(args), Path(cwd), full_env, timeout)


class _ForkServer:
    """The `forked_cli.py --serve` process of this test process, started on first use."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.pending = b""

    def _start(self) -> subprocess.Popen[bytes]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "tests" / "helpers" / "forked_cli.py"), "--serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            self.pending = b""
        return self.proc

    def _reply(self, proc: subprocess.Popen[bytes], timeout: float) -> dict | None:
        """The server's next reply line, or None after `timeout` seconds without one."""
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while b"\n" not in self.pending:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"the fork server ended (exit {proc.wait()}); see its stderr")
                self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def _expect(self, proc: subprocess.Popen[bytes], case_id: str, key: str, timeout: float) -> dict | None:
        reply = self._reply(proc, timeout)
        if reply is not None and (reply.get("id") != case_id or key not in reply):
            raise RuntimeError(f"the fork server answered {reply} to case {case_id}")
        return reply

    def run(self, args: list[str], cwd: Path, env: dict[str, str], timeout: float):
        """As subprocess.run(train_cmd(*args), ..., timeout=timeout); the limit counts from the fork."""
        proc = self._start()
        assert proc.stdin is not None
        out = Path(tempfile.mkdtemp(prefix="losslab-forked-"))
        case_id = out.name  # unique: a reply to another case is never taken for this one's

        def output(suffix: str) -> str:  # what the child wrote; nothing when it died before opening it
            path = out / f"{case_id}.{suffix}"
            return path.read_text(errors="replace") if path.exists() else ""

        clean = False
        try:
            case = {"id": case_id, "args": args, "env": env, "cwd": str(cwd), "out": str(out)}
            proc.stdin.write((json.dumps(case) + "\n").encode())
            proc.stdin.flush()
            forked = self._expect(proc, case_id, "pid", 120)  # the server's own imports come first
            if forked is None:
                raise RuntimeError("the fork server did not fork within 120 s")
            done = self._expect(proc, case_id, "returncode", timeout)
            if done is None:  # as subprocess.run's timeout: kill the child, then raise
                with contextlib.suppress(ProcessLookupError):
                    os.kill(forked["pid"], signal.SIGKILL)
                clean = self._expect(proc, case_id, "returncode", 30) is not None
                raise subprocess.TimeoutExpired(train_cmd(*args), timeout, output("out"), output("err"))
            clean = True
            return subprocess.CompletedProcess(
                train_cmd(*args), done["returncode"], output("out"), output("err")
            )
        finally:
            if not clean:  # the server may still owe replies: start a new one for the next case
                self.close(kill=True)
            shutil.rmtree(out, ignore_errors=True)

    def close(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=0 if kill else 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


_SERVER = _ForkServer()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop this test process's fork server (tests stop what they start)."""
    _SERVER.close()


def free_port() -> int:
    """A free TCP port on the loopback interface (servers in tests bind to 127.0.0.1 only)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def all_runs(client, experiment: str = "losslab") -> list:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], max_results=5000)


def wait_for(predicate: Callable[[], object], timeout: float = 120.0, every: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def popen_cleanup() -> Iterator[list[subprocess.Popen]]:
    """Processes a test starts; all are stopped at the end whatever happened."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)


def stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a process started with start_new_session and everything in its group: SIGTERM, then
    SIGKILL if it has not exited within `timeout` seconds."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
