"""Shared fixtures: a real sqlite MLflow store per test, Hydra composition, subprocess runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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


def run_train(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    """Run `python train.py ARGS` in a subprocess (real Hydra), output captured."""
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        train_cmd(*args), cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


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
