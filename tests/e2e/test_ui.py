"""The MLflow UI review, as a user does it: a fresh sweep prints a link, `make ui` serves the store,
and a real headless Chromium (Debian's `chromium`) follows the link.

Checked in the browser: the runs table holds the parent and, expanded, its children, whose names
start with what differs (seed included) and whose Dataset column names the data; the parent's page
shows the ranked design table as its note; the report opened in MLflow's artifact viewer shows
every image. Also: `make ui` binds to loopback whatever plain HOST says, and prints the same link.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from conftest import all_runs, free_port, run_train, wait_for
from helpers.chromium import BINARY, Browser
from helpers.make_ui import make_ui_runner

if BINARY is None and os.environ.get("CI") != "true":  # CI installs it (.ci/run); a laptop may not have it
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


def _listening_hosts(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port` (from /proc/net/tcp: what is really bound)."""
    hosts = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if state == "0A" and int(p, 16) == port:
            hosts.add(".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return hosts


@pytest.fixture
def ui_port() -> int:
    return free_port()


@pytest.fixture
def make_ui(store: str, ui_port: int):
    """Starts `make ui` over the test store (no install: SKIP_INSTALL, this interpreter's venv), with
    plain HOST/PORT set to prove they are ignored; yields a function returning its first output line."""
    with make_ui_runner(store) as run:
        yield lambda: run(ui_port, env={"HOST": "0.0.0.0", "PORT": "1"})[0]


EXPAND = """(() => {
  const b = [...document.querySelectorAll('button[data-component-id*="runnamecellrenderer"]')];
  b.forEach(x => x.click());
  return b.length;
})()"""
IMAGES = """JSON.stringify({
  images: document.images.length,
  shown: [...document.images].filter(i => i.complete && i.naturalWidth > 0).length,
  title: document.title})"""


@pytest.mark.slow
def test_a_fresh_sweep_reviewed_in_the_ui_from_the_link_it_prints(
    store, client, tmp_path: Path, ui_port: int, make_ui
):
    env = {"LOSSLAB_UI_PORT": str(ui_port), "HOST": "0.0.0.0"}
    sweep = run_train(
        ["loss=hinge", "loss.margin=0.5,1", "seed=0,1", "trainer.max_steps=20", "-m"], cwd=tmp_path, env=env
    )
    assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-2000:]
    runs = all_runs(client)
    parent = next(r for r in runs if r.data.tags.get("losslab.sweep") == "parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    exp_id = parent.info.experiment_id
    assert len(children) == 4

    # the sweep ends with its report's path and the UI link (port from LOSSLAB_UI_PORT, not PORT/HOST)
    report = re.search(r"^report: (\S+index\.html)$", sweep.stdout, re.M)
    assert report and (tmp_path / report.group(1)).is_file(), sweep.stdout[-1500:]
    link = re.search(r"MLflow UI \(start it with `make ui`\): (\S+)", sweep.stdout)
    assert link, sweep.stdout[-1500:]
    url = link.group(1)
    view = parent.data.tags["losslab.view"]  # the shared view: metric and outcome columns, grouped by design
    base = f"http://127.0.0.1:{ui_port}/#/experiments/{exp_id}/runs?workflowType=machine_learning"
    assert url == f"{base}&viewStateShareKey={view}"

    first_line = make_ui()
    assert first_line.strip() == f"latest sweep, runs table: {url}"  # `make ui` shows the same link
    assert _listening_hosts(ui_port) == {"127.0.0.1"}  # loopback, although HOST=0.0.0.0 is set

    names = sorted(r.info.run_name for r in children)
    assert names == ["m0.5-s0", "m0.5-s1", "m1-s0", "m1-s1"]  # the design first, the seed last
    with Browser(tmp_path / "profile") as page:
        page.open(base)  # the plain runs table: the parent, its children nested
        page.wait_text(parent.info.run_name, "Dataset")
        assert page.js(EXPAND) >= 1  # the parent row's expander: its children appear under it
        text = page.wait_text(*names, "binary (", "Train", "Validation")
        assert "5 matching runs" in text  # the parent and its 4 children
        page.screenshot(tmp_path / "runs_table.png")
    with Browser(tmp_path / "profile2") as page:
        # the printed link (a shared view): runs grouped by design, sorted on the task metric on val
        page.open(url)
        grouped = page.wait_text(
            "Group by: design", "Group: margin=1", "Sort: best/val_accuracy", "best/val_accura", *names
        )
        assert "shared view" in grouped
        page.screenshot(tmp_path / "runs_grouped.png")

        page.open(
            f"http://127.0.0.1:{ui_port}/#/experiments/{exp_id}/runs/{parent.info.run_id}?{url.split('?')[1]}"
        )
        note = page.wait_text("Best: margin=", "margin=0.5", "margin=1", "Val accuracy", "best/val_accuracy")
        assert "Description" in note
        page.screenshot(tmp_path / "parent_note.png")

        page.open(
            f"http://127.0.0.1:{ui_port}/#/experiments/{exp_id}/runs/{parent.info.run_id}"
            "/artifacts/report/index.html?workflowType=machine_learning"
        )
        page.wait_text("report/index.html")
        shown = wait_for(lambda: _report_images(page), timeout=60)
        assert shown["images"] >= 1 and shown["shown"] == shown["images"], shown
        assert shown["title"].startswith("LossLab report")
        page.screenshot(tmp_path / "report_in_mlflow.png")
    print(f"screenshots: {tmp_path}")


def _report_images(page: Browser) -> dict | None:
    """Images in the report's frame inside MLflow's artifact viewer, once the frame has loaded."""
    import json

    for frame in page.frames()[1:]:
        value = json.loads(page.js(IMAGES, page.frame_context(frame["id"])))
        if value["title"].startswith("LossLab report") and value["images"]:
            return value
    return None
