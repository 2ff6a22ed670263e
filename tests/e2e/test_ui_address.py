"""Links follow the UI to where it really serves: a sweep made before any UI links to 127.0.0.1:5000;
`LOSSLAB_UI_PORT=N make ui` (a real MLflow UI on a free loopback port) records N beside the store and
says the sweep's report links elsewhere; from then on, with no LOSSLAB_UI_* set, `python -m
losslab.compare` writes the report with links to N, and the links printed later point there too."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import all_runs, free_port, run_train
from helpers.make_ui import make_ui_runner
from losslab import links

SWEEP = ["seed=0,1", "grid=none", "trainer.max_steps=5", "-m"]


@pytest.fixture
def make_ui(store: str):
    """`make ui` over the test store on a free port: a function starting it, returning its port and its
    first two output lines once it answers; stopped at the end."""
    with make_ui_runner(store) as run:

        def start() -> tuple[int, list[str]]:
            port = free_port()
            return port, run(port, lines=2)

        yield start


def test_links_follow_the_ui_make_ui_serves(store, client, tmp_path: Path, make_ui, monkeypatch):
    for key in ("LOSSLAB_UI_HOST", "LOSSLAB_UI_PORT"):
        monkeypatch.delenv(key, raising=False)
    first = run_train(SWEEP, cwd=tmp_path)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    (top,) = [r for r in all_runs(client) if r.data.tags.get("losslab.sweep") == "parent"]
    exp_id, parent_id = top.info.experiment_id, top.info.run_id
    report = tmp_path / "reports" / top.info.run_name / "index.html"
    assert top.data.tags[links.UI_TAG] == "http://127.0.0.1:5000"  # no UI yet: the default
    assert "http://127.0.0.1:5000/#/experiments/" in report.read_text()

    port, said = make_ui()
    base = f"http://127.0.0.1:{port}"
    view = top.data.tags[links.VIEW_TAG]
    assert said[0].strip() == (
        f"latest sweep, runs table: {base}/#/experiments/{exp_id}/runs?workflowType=machine_learning"
        f"&viewStateShareKey={view}"
    )
    assert said[1].strip() == (
        "note: this sweep's report and note link to http://127.0.0.1:5000, the UI's address when they were "
        f"written; `.venv/bin/python -m losslab.compare --sweep {parent_id}` writes its report again with "
        f"links to {base}."
    )
    noted = tmp_path / links.UI_FILE
    assert links.ui_choice(store) == (
        base,
        f"Links use {base}, where `make ui` serves this store (running; noted in {noted}).",
    )

    # the report written again links to the running UI; nothing in it points at 5000 any more
    again = subprocess.run(
        [sys.executable, "-m", "losslab.compare", "--sweep", parent_id],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("LOSSLAB_UI_")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    page = report.read_text()
    assert f"{base}/#/experiments/{exp_id}/runs?workflowType=machine_learning" in page
    assert not re.search(r"http://127\.0\.0\.1:5000/", page)

    # what a later sweep's messages link to (links.main derives them as the sweep does), no LOSSLAB_UI_*
    later = subprocess.run(
        [sys.executable, "-m", "losslab.links", "--store", store],
        env={k: v for k, v in os.environ.items() if not k.startswith("LOSSLAB_UI_")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert later.stdout.strip() == said[0].strip(), later.stdout + later.stderr
