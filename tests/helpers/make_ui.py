"""`make ui` as the tests start it: over a test store, on a given loopback port, without the install
step, in its own process group so that stopping it stops MLflow's workers too."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import ROOT, stop_group, wait_for


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextmanager
def make_ui_runner(store: str) -> Iterator:
    """Yields start(port, env=None, lines=1) -> the first `lines` lines `make ui` printed, once its
    /health answers; every UI started is stopped (its process group) on exit."""
    started: list[subprocess.Popen] = []

    def start(port: int, env: dict[str, str] | None = None, lines: int = 1) -> list[str]:
        full_env = {**os.environ, **(env or {}), "LOSSLAB_UI_PORT": str(port)}
        proc = subprocess.Popen(
            ["make", "-s", "ui", "SKIP_INSTALL=1", f"VENV={sys.prefix}", f"STORE={store}"],
            cwd=Path(ROOT),
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        started.append(proc)
        assert proc.stdout is not None
        out = [proc.stdout.readline() for _ in range(lines)]
        wait_for(lambda: _healthy(port), timeout=180, every=0.5)
        return out

    try:
        yield start
    finally:
        for proc in started:
            stop_group(proc)
