"""The benchmark's plumbing at smoke-test sizes: every section lands in the JSON. No timing asserts.

The fast test runs sections 1, 2 and 5 for real and replaces only the subprocess parts (a
`mlflow server`, two Hydra sweeps, the ceiling's loop processes: ~10-25 s each just to import
torch, Lightning and MLflow on a busy 2-core machine); the ceiling's processes run for real in
their own test, and the slow test runs `python -m losslab.bench --quick` exactly as `make bench`.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT
from losslab.bench import ceiling, harness, http_store, soak, sweep
from losslab.bench import main as cli

SECTION_KEYS = {"1", "2", "3", "4", "5", "6", "syncs"}
#: what the issue-14 table needs from one run
ISSUE_ROWS = {
    "4.ceiling",
    "4.startup.basic",
    "4.startup.joblib",
    "4.overhead",
    "4.speedup",
    "4.speedup_total",
    "4.nothing_to_do",
}
ISSUE_ROWS |= {"1.small", "1.small.lightning", "1.big.lightning", "3"}


def _check_document(doc: dict) -> None:
    assert set(doc["sections"]) >= SECTION_KEYS, set(doc["sections"])
    s = doc["sections"]
    for fid in ("1.small", "1.big"):
        assert s["1"][fid]["ratio"] > 0 and s["1"][fid]["fit_ratio"] > 0
        assert s["1"][fid]["losslab"]["info"]["steps"] == s["1"][fid]["raw"]["info"]["steps"]
    for fid in ("1.small", "1.big"):  # Lightning's own loop, the floor, measured beside both
        assert s["1"][fid]["lightning"]["info"]["steps"] == s["1"][fid]["raw"]["info"]["steps"]
        assert s["1"][fid]["lightning_fit_ratio"] > 0
    assert s["2"]["ratio"] > 0 and s["3"]["ratio"] > 0
    assert s["4"]["speedup_jobs"] > 0 and s["4"]["basic"]["overhead_median_s"] is not None
    assert s["4"]["ceiling"]["ceiling"] > 0 and s["4"]["speedup_jobs_of_ceiling"] > 0
    assert s["4"]["nothing_to_do"]["total_s"] > 0
    assert s["5"]["median_s"] > 0
    ids = {row["id"] for row in doc["rows"]}
    assert set(harness.TARGETS) | ISSUE_ROWS <= ids, (set(harness.TARGETS) | ISSUE_ROWS) - ids
    for row in doc["rows"]:
        assert row["load"] is None or len(row["load"]) == 3
        if row["id"] in harness.TARGETS:
            assert row["status"] in ("met", "MISSED")


def test_sweep_figures_from_time_stamped_output() -> None:
    lines = [
        (4.0, "sweep s: 3 jobs, parent run p in sqlite:///x.db"),
        (5.0, "[1/3] seed=0"),
        (5.1, "[1/3] run mse-adam-lr0.001-s0 (r1) -> sqlite:///x.db"),
        (7.0, "[2/3] seed=1"),
        (7.5, "[2/3] done: mse-adam-lr0.001-s1 outcome=converged"),
        (8.0, "[3/3] seed=2"),
        (9.5, ""),
        (9.5, "Sweep summary"),
    ]
    fit = {1: 1.5, 2: 0.75, 3: 1.0}
    out = sweep.sweep_figures(lines, fit, total=10.0, jobs=3, per_job=True)
    assert out["startup_s"] == 5.0 and out["jobs_s"] == 4.5 and out["total_s"] == 10.0
    assert out["overhead_per_job_s"] == [0.5, 0.25, 0.5]
    assert out["overhead_median_s"] == 0.5 and out["overhead_first_s"] == 0.5
    with pytest.raises(RuntimeError, match="job starts"):
        sweep.sweep_figures(lines, fit, total=10.0, jobs=4, per_job=True)


def test_quick_run_writes_every_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    @contextlib.contextmanager
    def local_store(folder: Path, timeout: float = 0) -> Iterator[str]:
        folder.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{folder / 'server.db'}"

    def canned_sweep(launcher: str, sizes: harness.Sizes, tmp: Path, uri: str) -> dict:
        n = sizes.sweep_jobs
        lines = [(2.0 + i, f"[{i + 1}/{n}] seed={i}") for i in range(n)] + [(2.0 + n, "Sweep summary")]
        fit = {i + 1: 0.5 for i in range(n)}
        return sweep.sweep_figures(lines, fit, 3.0 + n, n, per_job=launcher == "basic")

    def canned_loops(n: int, steps: int, threads: int) -> list[float]:
        return [1.0 + 0.3 * (n - 1)] * n  # two loops side by side 1.3 s each vs 1 s alone: 1.54x

    monkeypatch.setattr(http_store, "mlflow_server", local_store)
    monkeypatch.setattr(sweep, "run_sweep", canned_sweep)
    monkeypatch.setattr(sweep, "run_nothing_to_do", lambda launcher, sizes, tmp, uri: {"total_s": 2.0})
    monkeypatch.setattr(ceiling, "_loops", canned_loops)
    monkeypatch.setattr(soak, "chaos_round", lambda ctx: None)  # real in the slow test below
    for key in harness.TRACKING_ENV:
        monkeypatch.delenv(key, raising=False)
    sizes = cli.sizes_from(cli._parser().parse_args(["--quick"]))
    out = tmp_path / "latest.json"
    doc = cli.run(sizes, list(cli.SECTIONS), out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(doc))
    _check_document(doc)
    assert doc["sections"]["4"]["ceiling"]["ceiling"] == pytest.approx(2 / 1.3, abs=1e-3)
    assert cli.render(doc["rows"], "header").startswith("header")


@pytest.mark.slow
def test_ceiling_runs_real_loops_side_by_side() -> None:
    """Two real loop processes released together: each reports its own loop time, the ratio follows."""
    out = ceiling.measure(steps=30, threads=1, repeats=1)
    assert len(out["alone_s"]) == 1 and len(out["pair_s"][0]) == 2
    assert all(t > 0 for t in [*out["alone_s"], *out["pair_s"][0]])
    assert out["ceiling"] == pytest.approx(2 * out["alone_s"][0] / max(out["pair_s"][0]), rel=1e-2)


def test_unknown_section_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--only", "1,9"]) == 2
    assert "unknown section(s) 9" in capsys.readouterr().err


@pytest.mark.slow
def test_make_bench_quick_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    proc = subprocess.run(
        [sys.executable, "-m", "losslab.bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LossLab / raw loop" in proc.stdout
    doc = json.loads(out.read_text())
    _check_document(doc)
    soaked = doc["sections"]["6"]  # a real joblib sweep here: every point counted
    assert soaked["finished"] == soaked["jobs"] == soaked["runs_with_exactly_one_point_per_step"]
    assert soaked["points"] == soaked["points_expected"]
    assert soaked["chaos"]["ok"], soaked["chaos"]  # and a real chaos round


def test_phase_profile_of_a_real_sweep_names_the_phases(store: str, tmp_path: Path) -> None:
    """`python -m losslab.bench.phases` on a real 2-job sweep: the phases are found, shares sum to ~100%."""
    out = tmp_path / "phases.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "losslab.bench.phases",
            "--out",
            str(out),
            str(ROOT / "train.py"),
            "-m",
            "seed=0,1",
            "trainer.max_steps=20",
            f"hydra.sweep.dir={tmp_path / 'mr'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {}
    for line in out.read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and cells[2].endswith("%"):
            rows[cells[0]] = (float(cells[1]), float(cells[2].rstrip("%")), float(cells[3] or 0), cells[4])
    assert "**wall, " in out.read_text() and "2 jobs**" in out.read_text()
    for phase in (
        "imports (all)",
        "job: trainer.fit (Lightning loop, model, loss)",
        "job: run creation, params, tags",
        "hydra: compose this job's config",
        "parent bookkeeping (sweeps.py, parent.py)",
    ):
        assert phase in rows, (phase, sorted(rows))
    top = [r for k, r in rows.items() if not k.startswith("&nbsp;") and not k.startswith("**")]
    assert 90.0 <= sum(r[1] for r in top) <= 100.5  # each sample counted once
    assert rows["job: trainer.fit (Lightning loop, model, loss)"][2] > 0  # seen inside the first job
