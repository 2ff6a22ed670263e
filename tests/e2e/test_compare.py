"""`losslab.compare` on real MLflow sqlite stores: a small real sweep, and synthetic experiments."""

from __future__ import annotations

import base64
import contextlib
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from losslab import compare
from losslab.report.designs import design_params, group_designs, varying_params
from losslab.report.plots import majority, plot_heatmap
from losslab.report.runs import CURVE_KEYS, RunData, histories_via_client
from losslab.testing.synthetic import synthetic_experiment
from losslab.tracking.store import open_store

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def _uri(path: Path) -> str:
    return f"sqlite:///{path}"


@contextlib.contextmanager
def _store_dir() -> Iterator[Path]:
    """A folder for a store, in memory (/dev/shm) where there is one: MLflow commits every write,
    and on a slow disk the fsyncs, not the code under test, would dominate these tests."""
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None, prefix="losslab-") as tmp:
        yield Path(tmp)


@pytest.fixture
def store() -> Iterator[Path]:
    with _store_dir() as tmp:
        yield tmp


@pytest.fixture(scope="module")
def sweep() -> Iterator[tuple[str, str]]:
    """A real 2 margins x 2 lrs x 2 seeds hinge sweep (~20 s); yields (tracking uri, parent run id)."""
    with _store_dir() as tmp:
        yield _run_sweep(tmp)


def _run_sweep(tmp: Path) -> tuple[str, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": _uri(tmp / "mlflow.db")}
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "loss=hinge",
        "loss.margin=0.5,1.0",
        "optimizer.lr=0.01,0.1",
        "seed=0,1",
        "trainer.max_steps=60",
        "tracking.log_curve_png=false",
        f"hydra.sweep.dir={tmp / 'multirun'}",
        "-m",
    ]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    parent = re.search(r"parent run ([0-9a-f]{32})", proc.stdout)
    assert parent, proc.stdout[-2000:]
    return env["MLFLOW_TRACKING_URI"], parent.group(1)


def _designs(index: Path) -> list[dict[str, str]]:
    with (index.parent / "designs.csv").open() as fh:
        return list(csv.DictReader(fh))


def _images(page: str) -> list[bytes]:
    """Every <img> of the page, decoded; fails on an image that is not an embedded PNG."""
    srcs = re.findall(r'<img src="([^"]*)"', page)
    for src in srcs:
        assert src.startswith("data:image/png;base64,"), src[:80]
    return [base64.b64decode(src.split(",", 1)[1]) for src in srcs]


def test_sweep_report_is_one_self_contained_page_logged_on_the_parent(
    sweep: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, parent = sweep
    monkeypatch.setenv("LOSSLAB_UI_PORT", "5123")
    monkeypatch.delenv("LOSSLAB_UI_HOST", raising=False)
    report = compare.build_report(uri, None, parent, tmp_path / "reports")
    index = report.html_path
    assert index.name == "index.html" and index.parent.parent == tmp_path / "reports"
    assert str(report) == str(index)  # callers that printed the old Path return still work
    assert index.parent.name.startswith("hinge-sweep-")  # named after the parent run
    assert sorted(p.name for p in index.parent.iterdir()) == ["designs.csv", "index.html"]
    page = index.read_text()
    images = _images(page)
    assert len(images) >= 4 and all(img.startswith(PNG) and len(img) > 1000 for img in images)
    assert not re.search(r'(src|href)="(?!data:|http://127\.0\.0\.1:5123/#/experiments/)', page)
    run_links = re.findall(
        r"http://127\.0\.0\.1:5123/#/experiments/\d+/runs/([0-9a-f]{32})\?workflowType=machine_learning", page
    )
    assert parent in run_links and len(set(run_links)) == 9  # the parent and its 8 runs
    assert re.search(r"#/experiments/\d+/runs\?workflowType=machine_learning", page)
    rows = _designs(index)
    assert {(r["margin"], r["lr"]) for r in rows} == {  # readable column names
        ("0.5", "0.01"),
        ("0.5", "0.1"),
        ("1.0", "0.01"),
        ("1.0", "0.1"),
    }
    assert [r["Rank"] for r in rows] == ["1", "2", "3", "4"]
    for row in rows:
        assert row["Seeds"] == "2" and row["Outcomes"] and row["Median gradient norm"]
    # 2 seeds: said plainly, once under the table, not in every cell
    assert page.count("Few seeds: n = 2 per design.") == 1 and "too few to rely on" not in page
    assert len(report.designs_markdown) < 4000 and report.designs_markdown.count("\n| ") == 5
    assert report.best == {} or report.best["label"] in report.designs_markdown
    logged = {a.path for a in open_store(uri).list_artifacts(parent, "report")}
    assert {"report/index.html", "report/designs.csv"} <= logged


def test_no_arguments_reports_the_latest_sweep(
    sweep: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "mlflow.db"
    shutil.copy(sweep[0][len("sqlite:///") :], db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", _uri(db))
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert compare.main([]) == 0
    assert len(list((tmp_path / "reports").glob("hinge-sweep-*/index.html"))) == 1
    newer = synthetic_experiment(_uri(db), n_runs=8, n_steps=30, experiment="losslab")
    assert compare.main([]) == 0
    name = compare.load_runs(_uri(db), None, newer).name
    assert (tmp_path / "reports" / name / "index.html").exists()


def test_bad_sweep_id_exits_2_with_a_short_message(
    sweep: tuple[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sweep[0])
    assert compare.main(["--sweep", "0" * 32, "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert "0" * 32 in err and sweep[1] in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert compare.main(["--experiment", "no-such-experiment"]) == 2
    assert "'no-such-experiment'" in capsys.readouterr().err


def test_a_child_run_id_points_to_its_sweep(sweep: tuple[str, str]) -> None:
    uri, parent = sweep
    child = compare.load_runs(uri, None, parent).runs[0].run_id
    with pytest.raises(compare.ReportError, match=f"use --sweep {parent}"):
        compare.load_runs(uri, None, child)


def test_bulk_sql_and_client_histories_agree(store: Path) -> None:
    """The fast paths (bulk SQL read, bulk-inserted synthetic points) match MLflow's own API."""
    uri = _uri(store / "mlflow.db")
    synthetic_experiment(uri, n_runs=20, n_steps=40, experiment="fast", fast=True)
    synthetic_experiment(uri, n_runs=20, n_steps=40, experiment="slow", fast=False)
    fast, slow = compare.load_runs(uri, "fast"), compare.load_runs(uri, "slow")
    ids = [r.run_id for r in fast.runs]
    via_client = histories_via_client(fast.client, ids, CURVE_KEYS)
    by_name = {r.name: r for r in slow.runs}
    assert any(r.outcome == "diverged" for r in fast.runs)  # exercises +inf round trips
    for run in fast.runs:
        other = by_name[run.name]
        assert run.metrics == pytest.approx(other.metrics, nan_ok=True)
        for key in CURVE_KEYS:
            for steps, values in (other.curves[key], via_client[key][run.run_id]):
                assert np.array_equal(run.curves[key][0], steps)
                assert np.array_equal(run.curves[key][1], values, equal_nan=True)


def test_single_seed_designs_have_no_ci(store: Path, tmp_path: Path) -> None:
    uri = _uri(store / "mlflow.db")
    parent = synthetic_experiment(uri, n_runs=20, n_steps=200)
    report = compare.build_report(uri, "losslab-bench", None, tmp_path / "reports")
    rows = _designs(report.html_path)
    assert len(rows) == 20 and {r["Seeds"] for r in rows} == {"1"}
    val = [r["Val accuracy (mean [95% CI])"] for r in rows]
    assert all("(1 seed; no interval)" in v for v in val), val
    assert any("diverged" in r["Outcomes"] for r in rows)
    assert "Too few seeds" in report.html_path.read_text()
    assert compare.load_runs(uri, "losslab-bench").parent.info.run_id == parent


def test_resumed_sweep_keeps_reused_runs_and_all_reports_the_experiment(store: Path, tmp_path: Path) -> None:
    """A resumed sweep's SKIPPED jobs reuse runs of an earlier sweep: found via the jobs' result.json."""
    uri = _uri(store / "mlflow.db")
    first = synthetic_experiment(uri, n_runs=4, n_steps=20)
    runs = compare.load_runs(uri, None, first).runs
    sweep_dir = tmp_path / "multirun"
    for i, run in enumerate(runs):
        (sweep_dir / str(i)).mkdir(parents=True)
        (sweep_dir / str(i) / "result.json").write_text(
            json.dumps({"status": "SKIPPED", "run_id": run.run_id})
        )
    client = open_store(uri)
    exp_id = client.get_run(first).info.experiment_id
    resumed = client.create_run(exp_id, tags={"losslab.sweep": "parent", "sweep_dir": str(sweep_dir)})
    again = compare.load_runs(uri, None, resumed.info.run_id)
    assert {r.run_id for r in again.runs} == {r.run_id for r in runs}
    everything = compare.load_runs(uri, "losslab-bench", all_runs=True)
    assert everything.parent is None and everything.name == "losslab-bench"
    assert len(everything.runs) == 4  # parent runs are not compared


@pytest.mark.slow
def test_synthetic_200_runs_x_1000_steps(store: Path, tmp_path: Path) -> None:
    """Completes; the time is printed (performance is judged by `make bench`, not asserted here)."""
    uri = _uri(store / "mlflow.db")
    started = time.perf_counter()
    synthetic_experiment(uri, n_runs=200, n_steps=1000)
    filled = time.perf_counter()
    report = compare.build_report(uri, "losslab-bench", None, tmp_path / "reports")
    done = time.perf_counter()
    print(f"\nfill 200x1000: {filled - started:.1f}s, report: {done - filled:.1f}s")
    assert len(_designs(report.html_path)) == 20


# ----------------------------------------------------------------------------- no store needed


def _run(i: int, **params: str) -> RunData:
    return RunData(f"{i:032x}", f"r{i}", "FINISHED", params, {"outcome": "converged"}, {})


def test_designs_pool_seeds_and_skip_the_heatmap_with_one_varying_param(tmp_path: Path) -> None:
    runs = [
        _run(i, **{"loss.margin": m, "seed": s, "tracking.uri": "x"})
        for i, (m, s) in enumerate([("0.5", "0"), ("0.5", "1"), ("1.0", "0")])
    ]
    keys = varying_params(runs)
    assert keys == ["loss.margin"]
    designs = group_designs(runs, keys)
    assert [(d.label, len(d.runs)) for d in designs] == [("margin=0.5", 2), ("margin=1.0", 1)]
    image, note = plot_heatmap(runs, keys)
    assert image is None and "Fewer than two params" in note


def test_majority_ties_go_to_the_worse_outcome() -> None:
    assert majority(Counter(converged=1, diverged=1)) == "diverged"
    assert majority(Counter(converged=2, diverged=1)) == "converged"


def test_design_params_drop_what_follows_from_the_swept_choices():
    """A sweep over losses: data.name and loss.margin vary only because each loss brings them."""

    def run(i: int, loss: str, lr: str, seed: str) -> RunData:
        params = {
            "loss._target_": loss,
            "optimizer.lr": lr,
            "seed": seed,
            "data.name": "binary" if loss == "Hinge" else "regression",
        }
        if loss == "Hinge":
            params["loss.margin"] = "1.0"
        return RunData(
            run_id=str(i),
            name=str(i),
            status="FINISHED",
            params=params,
            tags={"overrides": f"loss={loss.lower()} optimizer.lr={lr} seed={seed}"},
            metrics={},
        )

    runs = [
        run(i, loss, lr, seed)
        for i, (loss, lr, seed) in enumerate(
            (loss, lr, seed) for loss in ("Hinge", "MSE") for lr in ("0.1", "1.0") for seed in ("0", "1")
        )
    ]
    assert design_params(runs) == ["loss._target_", "optimizer.lr"]


def test_no_arguments_find_the_latest_sweep_in_any_experiment(tmp_path, monkeypatch):
    """Each study writes to its own experiment; `make report` after `make sweep` must find it."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    synthetic_experiment(uri, n_runs=4, n_steps=20, experiment="older_study")
    newest = synthetic_experiment(uri, n_runs=4, n_steps=20, experiment="newer_study")
    selection = compare.load_runs(uri)
    assert selection.parent.info.run_id == newest and selection.experiment.name == "newer_study"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "older_study")
    assert compare.load_runs(uri).experiment.name == "older_study"


def test_cli_metric_tune_and_baseline(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The report options end to end; each mistake is one `Error:` line and exit 2."""
    uri = _uri(store / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    synthetic_experiment(uri, n_runs=40, n_steps=30, experiment="cli")
    out = ["--out", str(tmp_path / "reports")]
    assert compare.main(["--tune", "optimizer.lr", "--metric", "auc", *out]) == 0
    printed = capsys.readouterr().out
    # margin 2.0 at lr 0.1 diverged on seed 0 after its checkpoints: that seed keeps its value (issue 23)
    assert "best design: margin=2.0" in printed
    page = next((tmp_path / "reports").glob("*/index.html")).read_text()
    assert "Val auc" in page and "Budget: 4 configs of optimizer.lr tried per design" in page
    assert compare.main(["--baseline", "margin=0.25,lr=0.01", *out]) == 0
    row = next(r for r in _designs(next((tmp_path / "reports").glob("*/index.html"))) if r["Rank"] == "1")
    assert row["Δ test accuracy vs baseline (paired, 95% CI)"].startswith("+")
    for args, words in (
        (["--metric", "rmse"], "--metric rmse is a regression metric but these runs are binary"),
        (["--tune", "optimizer.momentum"], "--tune optimizer.momentum: this param does not vary"),
        (["--baseline", "margin=9"], "--baseline 'margin=9' matches no design"),
    ):
        assert compare.main([*args, *out]) == 2
        err = capsys.readouterr().err
        assert err.startswith("Error: ") and words in err and len(err.strip().splitlines()) == 1, err


def test_the_help_baseline_examples_name_a_real_design(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--help` shows how to name a baseline; each example must name one design of the sweep it describes."""
    uri = _uri(store / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    synthetic_experiment(uri, n_runs=40, n_steps=30, experiment="help")  # loss.margin x optimizer.lr
    text = " ".join(compare._parser().format_help().split())
    about = text[text.rindex("--baseline DESIGN") : text.rindex("--tune PARAM")]  # the option, not usage
    examples = re.findall(r"e\.g\. '([^']+)'", about) + re.findall(r"\(([\w.]+=[^()\s]+)\)", about)
    assert examples, about
    for example in examples:
        out = tmp_path / re.sub(r"\W+", "_", example)
        assert compare.main(["--baseline", example, "--out", str(out)]) == 0, example
        rows = _designs(next(out.glob("*/index.html")))
        delta = next(k for k in rows[0] if k.startswith("Δ"))
        base = [(r["margin"], r["lr"]) for r in rows if r[delta].startswith("baseline")]
        assert base == [("0.5", "0.01")], example


def test_failed_runs_show_their_steps_and_error_and_are_counted_when_paired(tmp_path: Path) -> None:
    """A real sweep with one job failing at its 6th step: the report's run table says how far it got
    and why it failed, and its design's paired difference counts the failed seed instead of dropping it."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": _uri(tmp_path / "mlflow.db")}
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "loss._target_=tests.helpers.custom_losses.FailAt",
        "+loss.fail_at=-1,5",
        "trainer.max_steps=30",
        "tracking.log_curve_png=false",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        "-m",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]  # one job failed
    parent = re.search(r"parent run ([0-9a-f]{32})", proc.stdout)
    assert parent, proc.stdout[-2000:]
    uri = env["MLFLOW_TRACKING_URI"]
    report = compare.build_report(uri, None, parent.group(1), tmp_path / "reports", log_artifacts=False)
    client = open_store(uri)
    failed = next(r for r in report.analysis.runs if r.status == "FAILED")
    assert "final/steps" not in failed.metrics and "deliberate failure" in failed.tags["error"]
    last = max(m.step for key in CURVE_KEYS for m in client.get_metric_history(failed.run_id, key))
    page = report.html_path.read_text()
    row = next(tr for tr in page.split("<tr>") if failed.run_id in tr)
    cells = re.findall(r"<td>(.*?)</td>", row)
    assert f"{last} (last logged)" in cells, cells  # how far it got
    assert any(c.startswith("RuntimeError: FailAt: deliberate failure at call") for c in cells), cells
    done = next(r for r in report.analysis.runs if r.status == "FINISHED")
    assert "<td>30</td>" in next(tr for tr in page.split("<tr>") if done.run_id in tr)  # its final/steps
    assert (
        "no shared seeds (0 of 1 seeds paired; 1 failed)" in page and "1 failed)" in report.designs_markdown
    )


@pytest.mark.slow
def test_mlflow_serves_the_logged_report_self_contained(sweep: tuple[str, str], tmp_path: Path) -> None:
    """MLflow's artifact viewer fetches report/index.html from the server and shows it from a blob URL,
    where only embedded images can load: the served page must be the self-contained one."""
    from conftest import free_port, stop_group, wait_for

    uri, parent = sweep
    report = compare.build_report(uri, None, parent, tmp_path / "reports")
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(mlflow_bin), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def served() -> bytes | None:
            url = f"http://127.0.0.1:{port}/get-artifact?path=report/index.html&run_uuid={parent}"
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    return r.read()
            except OSError:
                return None

        body = wait_for(served, timeout=180, every=1.0)
    finally:
        stop_group(proc)
    assert body == report.html_path.read_bytes()
    images = _images(body.decode("utf-8"))
    assert len(images) >= 4 and all(img.startswith(PNG) for img in images)


# ----------------------------------------------------------------------------- stores LossLab did not write


def _plain_mlflow_runs(uri: str, experiment: str) -> list[str]:
    """A parent and two children written with plain MLflow client calls (params, metrics, no LossLab
    tag); their run names, parent first."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    parent = client.create_run(exp_id, run_name="plain-parent").info.run_id
    client.log_param(parent, "model", "resnet")
    names = ["plain-parent"]
    for i, lr in enumerate(("0.1", "0.01")):
        name = f"plain-child-{i}"
        run = client.create_run(exp_id, run_name=name, tags={"mlflow.parentRunId": parent}).info.run_id
        ts = int(time.time() * 1000)
        client.log_batch(
            run,
            metrics=[Metric("val_loss", 1.0 / (s + 1), ts, s) for s in range(5)]
            + [Metric("accuracy", 0.8 + 0.01 * i, ts, 4)],
            params=[Param("lr", lr), Param("seed", "0")],
        )
        client.set_terminated(run, "FAILED" if i == 0 else "FINISHED")
        names.append(name)
    client.set_terminated(parent)
    return names


def test_compare_on_a_store_written_by_plain_mlflow_is_one_error_paragraph(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 26, item 11: no "Best design" verdict over runs that carry no LossLab tags."""
    uri = _uri(store / "plain.db")
    names = _plain_mlflow_runs(uri, "plain")
    capsys.readouterr()  # MLflow's own lines as it created the store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    for args in (["--experiment", "plain"], ["--experiment", "plain", "--all"]):
        assert compare.main([*args, "--out", str(tmp_path / "reports")]) == 2
        captured = capsys.readouterr()
        err = captured.err
        assert err.startswith("Error: ") and len(err.strip().splitlines()) == 1, err
        assert "Experiment 'plain'" in err and "3 runs not written by LossLab" in err
        assert all(repr(n) in err for n in names) and "no loss designs to compare" in err
        assert "task" in err and "losslab.config_hash" in err and "python train.py" in err
        assert "Traceback" not in err and "best design" not in captured.out
    assert not (tmp_path / "reports").exists()


def test_a_mixed_store_reports_the_losslab_runs_and_names_the_others(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = _uri(store / "mixed.db")
    synthetic_experiment(uri, n_runs=8, n_steps=20, experiment="mixed")
    names = _plain_mlflow_runs(uri, "mixed")
    capsys.readouterr()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    assert compare.main(["--experiment", "mixed", "--all", "--out", str(tmp_path / "reports")]) == 0
    captured = capsys.readouterr()
    assert "best design: " in captured.out
    assert captured.err.startswith("note: 3 runs not written by LossLab"), captured.err
    assert all(repr(n) in captured.err for n in names)
    sel = compare.load_runs(uri, "mixed", all_runs=True)
    assert len(sel.runs) == 8 and {r.name for r in sel.foreign} == set(names)
    assert not any(r.name.startswith("plain") for r in sel.runs)
    page = (tmp_path / "reports" / "mixed" / "index.html").read_text()
    assert "3 runs not written by LossLab" in page and "plain-parent" in page
