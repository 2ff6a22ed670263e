"""The MLflow UI over LossLab's store, in a real headless Chromium (Debian's `chromium` package).

`make ui` is started on a free loopback port over a store holding a real sweep; Chromium renders
the experiment's runs table, the test reads the rendered DOM and saves a screenshot.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, all_runs, free_port, run_train, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CI") != "true":  # CI installs it (.ci/run); a laptop may not have it
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
    "--virtual-time-budget=20000",
]


def _chromium(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    assert CHROMIUM, "chromium is not installed; .ci/run installs Debian's chromium package"
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def ui(store, tmp_path: Path):
    """`make ui` over the test store on a free port; stopped (whole process group) at the end."""
    port = free_port()
    proc = subprocess.Popen(
        ["make", "-s", "ui", f"STORE={store}"],
        env={**os.environ, "LOSSLAB_UI_PORT": str(port), "HOST": "0.0.0.0"},  # HOST must not matter
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, timeout=180, every=0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_the_ui_lists_the_sweep_with_readable_names_and_a_screenshot(store, client, tmp_path: Path, ui):
    sweep = run_train(
        ["loss=hinge", "trainer.max_steps=20", "tracking.report_on_sweep_end=false", "-m"], cwd=tmp_path
    )
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    runs = all_runs(client)
    parent = next(r for r in runs if r.data.tags.get("losslab.sweep") == "parent")
    exp_id = parent.info.experiment_id
    # outcome and loss are tags, so they filter like any column (the UI sends the same search)
    assert len(client.search_runs([exp_id], "tags.loss = 'hinge'")) == 5
    assert client.search_runs([exp_id], "tags.outcome != 'diverged'")

    url = f"{ui}/#/experiments/{exp_id}/runs?workflowType=machine_learning"
    dom = _chromium(url, tmp_path, "--dump-dom").stdout
    assert parent.info.run_name in dom  # the sweep's parent, children nested under it
    assert (
        "6 matching runs" in dom.replace("<!-- -->", "").replace("</span> <span>", " ") or "matching" in dom
    )
    shot = tmp_path / "mlflow_ui.png"
    _chromium(url, tmp_path, f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")

    # every child run has its loss-curve PNG as an artifact
    child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    run_url = f"{ui}/#/experiments/{exp_id}/runs/{child.info.run_id}/artifacts"
    assert "loss_curve.png" in _chromium(run_url, tmp_path, "--dump-dom").stdout
