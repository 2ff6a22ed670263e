"""Which design the report calls best: statistics against scipy, and synthetic studies whose answers
are known by construction (losslab.testing.synthetic: BEST, TRAP, ALL_DIVERGE, FAILED_RUN, best_lr)."""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from losslab import compare
from losslab.report import analysis, ranking, tables
from losslab.report.inference import paired_differences, prob_improvement
from losslab.report.runs import ReportError, RunData, select_runs
from losslab.report.stats import mean_ci, steps_to_fraction
from losslab.testing import synthetic
from losslab.testing.synthetic import synthetic_experiment
from losslab.tracking.store import ensure_experiment, open_store


@contextlib.contextmanager
def _store_dir() -> Iterator[Path]:
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None, prefix="losslab-") as tmp:
        yield Path(tmp)


def _label(margin: float, lr: float) -> str:
    return f"margin={margin}, lr={lr:g}"


@pytest.fixture(scope="module")
def study() -> Iterator[tuple[str, str, Path]]:
    """200 runs: 20 designs (margin x lr) x 10 shared seeds, binary, with held-out data."""
    with _store_dir() as tmp:
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        parent = synthetic_experiment(uri, n_runs=200, n_steps=40, experiment="study")
        yield uri, parent, tmp


def _analysis(uri: str, parent: str, **kw: object) -> analysis.Analysis:
    sel = select_runs(uri, None, parent)
    metric = ranking.resolve_metric(sel.runs, kw.pop("metric", None))  # type: ignore[arg-type]
    return analysis.analyse(sel.runs, metric, **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- statistics vs scipy


def test_mean_ci_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    for n in (2, 3, 7, 30):
        x = rng.normal(0.8, 0.05, n)
        lo, hi = stats.t.interval(0.95, n - 1, loc=x.mean(), scale=stats.sem(x))
        got = mean_ci([*x.tolist(), float("nan"), None])
        assert got.n == n and got.mean == pytest.approx(x.mean())
        assert (got.lo, got.hi) == pytest.approx((lo, hi))
    assert mean_ci([0.5]).half is None and mean_ci([]).mean is None
    assert mean_ci([0.5, 0.5]).degenerate  # equal values: no [a, a] interval


def test_paired_difference_matches_scipy_ttest_rel() -> None:
    rng = np.random.default_rng(4)
    seed_effect = rng.normal(0, 0.05, 8)
    a = 0.80 + seed_effect + rng.normal(0, 0.005, 8)
    b = 0.79 + seed_effect + rng.normal(0, 0.005, 8)
    design = {str(i): v for i, v in enumerate(a)}
    baseline = {str(i): v for i, v in enumerate(b)}
    baseline["99"] = 0.1  # a seed the design lacks takes no part
    got = paired_differences(design, baseline)
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert got.n == 8 and got.interval.mean == pytest.approx(float(np.mean(a - b)))
    assert (got.interval.lo, got.interval.hi) == pytest.approx((ci.low, ci.high))
    assert got.left_out == {"99": "not run by the design"}  # never dropped silently
    # P(X > Y) is rliable's (all pairs, unpaired), not the share of seeds won; a tie counts half
    low = prob_improvement([1.0, 2.0, 3.0], [2.0, 2.0, 1.0], maximize=False, n_boot=0)
    assert low.p == pytest.approx((2.5 + 1 + 0) / 9)  # x=1: 2 wins and a tie; x=2: two ties
    # the unpaired intervals overlap, the paired one excludes 0: pairing removes the seed effect
    assert mean_ci(a.tolist()).lo < mean_ci(b.tolist()).hi and got.interval.lo > 0


def test_steps_to_fraction() -> None:
    steps = np.arange(1000)
    at = steps_to_fraction(steps, np.exp(-steps / 100.0))
    assert at is not None and 200 < at < 300  # exp decay: 90% of the drop near t = 100 ln 10
    assert steps_to_fraction(steps, np.ones(1000)) is None


# ----------------------------------------------------------------------------- known answers


def test_failed_seeds_count_at_their_checkpoint_or_at_chance_and_are_a_column(
    study: tuple[str, str, Path],
) -> None:
    """Issue 23 item 5 (was: a design with any failed run ranks below every clean one). TRAP diverges on
    its even seeds after val checkpoints at ~0.97: each keeps that checkpoint, so TRAP ranks first and
    its failure column says 5 of 10; the FAILED run (no value) scores chance level 0.5."""
    a = _analysis(*study[:2])
    by_label = {r.label: r for r in a.ranked}
    assert a.metric.name == "accuracy" and a.metric.maximize
    assert a.chance.value == 0.5
    trap = by_label[_label(*synthetic.TRAP)]
    assert a.best is trap and a.ranked[0] is trap
    assert trap.failed == 5 and trap.failures == {"diverged": 5} and trap.no_value == 0
    assert tables.fmt_failed(trap) == "5 of 10 (diverged: seeds 0, 2, 4, 6, 8) [0.19, 0.81]"
    # the best design whose seeds all finished cleanly is next
    assert a.ranked[1].label == _label(*synthetic.BEST) and a.ranked[1].failed == 0
    # the trap also has the smallest best val loss: ranking on the loss would have chosen it too
    assert (
        trap.label
        == min(a.ranked, key=lambda r: min(x.metrics.get("best/val_loss", 9) for x in r.design.runs)).label
    )
    every = by_label[_label(*synthetic.ALL_DIVERGE)]
    assert every.failed == 10 and every.val.mean is not None  # scored at its checkpoints, failure 10/10
    failed = by_label[_label(*synthetic.FAILED_RUN[:2])]
    assert failed.failures == {"failed": 1} and failed.n == 10 and failed.no_value == 1
    seed = str(synthetic.FAILED_RUN[2])
    assert failed.val_score.per_seed[seed] == 0.5  # chance level, not dropped
    others = [v for s, v in failed.per_seed("val").items() if s != seed]
    assert failed.val.mean == pytest.approx((sum(others) + 0.5) / 10)


def test_changing_test_values_changes_no_selection(study: tuple[str, str, Path]) -> None:
    uri, parent, tmp = study
    other_uri = f"sqlite:///{tmp / 'other-test-labels.db'}"
    other = synthetic_experiment(other_uri, n_runs=200, n_steps=40, experiment="study", test_seed=123)
    a, b = _analysis(uri, parent), _analysis(other_uri, other)
    assert [r.label for r in a.ranked] == [r.label for r in b.ranked]
    assert [r.val.mean for r in a.ranked] == pytest.approx([r.val.mean for r in b.ranked], nan_ok=True)
    assert a.best.label == b.best.label
    assert a.best.test.mean != pytest.approx(b.best.test.mean, abs=1e-6)
    # the paired comparisons on val do not move either
    assert [r.cmp_val.p if r.cmp_val else None for r in a.ranked] == [
        r.cmp_val.p if r.cmp_val else None for r in b.ranked
    ]
    ta = _analysis(uri, parent, tune=["optimizer.lr"])
    tb = _analysis(other_uri, other, tune=["optimizer.lr"])
    assert [(r.label, r.tuned) for r in ta.ranked] == [(r.label, r.tuned) for r in tb.ranked]


def test_paired_difference_uses_shared_seeds_against_the_baseline(study: tuple[str, str, Path]) -> None:
    uri, parent, _ = study
    second = _label(0.25, 1e-2)
    a = _analysis(uri, parent, baseline=second)
    assert a.baseline.label == second and a.baseline.cmp_test is None and a.paired_on == "test"
    best = next(r for r in a.ranked if r.label == _label(*synthetic.BEST))
    # reference: per-seed test values straight from MLflow, paired with scipy
    client = open_store(uri)
    runs = client.search_runs(
        [client.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'"
    )

    def per_seed(margin: float, lr: float) -> dict[str, float]:
        return {
            r.data.params["seed"]: r.data.metrics["test/accuracy"]
            for r in runs
            if float(r.data.params["loss.margin"]) == margin and float(r.data.params["optimizer.lr"]) == lr
        }

    x, y = per_seed(*synthetic.BEST), per_seed(0.25, 1e-2)
    seeds = sorted(x)
    ref = stats.ttest_rel([x[s] for s in seeds], [y[s] for s in seeds]).confidence_interval(0.95)
    pd = best.cmp_test.paired
    assert pd.n == 10
    assert (pd.interval.lo, pd.interval.hi) == pytest.approx((ref.low, ref.high))
    xs, ys = [x[s] for s in seeds], [y[s] for s in seeds]
    pxy = np.mean([[1.0 if u > v else 0.5 if u == v else 0.0 for v in ys] for u in xs])
    assert best.cmp_test.prob.p == pytest.approx(pxy)  # rliable's P(X > Y) over all pairs
    assert best.cmp_test.prob.lo <= pxy <= best.cmp_test.prob.hi
    assert best.cmp_test.wins.wins == sum(x[s] > y[s] for s in seeds)
    # paired on val too, by seed
    vx, vy = best.per_seed("val"), a.baseline.per_seed("val")
    assert best.cmp_val.paired.diffs == pytest.approx([vx[s] - vy[s] for s in seeds])
    # Holm over the 19 comparisons of each split: adjusted p >= raw p
    assert a.family == 19 and all(
        r.cmp_test.p_adjusted >= r.cmp_test.p and r.cmp_test.family == 19 for r in a.ranked if r.cmp_test
    )
    # the design with a FAILED run is paired on the 9 seeds it has
    failed = next(r for r in a.ranked if r.label == _label(*synthetic.FAILED_RUN[:2]))
    assert failed.cmp_test.paired.n == 9
    with pytest.raises(ReportError, match="matches several designs"):
        _analysis(uri, parent, baseline="margin=0.25")
    with pytest.raises(ReportError, match="matches no design"):
        _analysis(uri, parent, baseline="margin=7")


def test_tuning_picks_each_designs_lr_on_val_at_equal_budget(study: tuple[str, str, Path]) -> None:
    uri, parent, _ = study
    a = _analysis(uri, parent, tune=["optimizer.lr"])
    assert a.keys == ["loss.margin"] and a.tune_keys == ["optimizer.lr"]
    assert a.budgets == {f"margin={m}": 4 for m in synthetic.MARGINS}
    for r in a.ranked:
        margin = float(r.design.values["loss.margin"])
        # margin 2.0: lr 0.1 (TRAP) diverges on half its seeds after checkpoints at 0.97: it is chosen
        want = 0.1 if margin == synthetic.TRAP[0] else synthetic.best_lr(margin)
        assert float(r.tuned["optimizer.lr"]) == want, r.label
        chosen = r.configs[0]
        assert r.test.mean == chosen.test.mean and r.n == chosen.n
        assert chosen.val.mean == max(c.val.mean for c in r.configs)
    assert a.best.label == "margin=2.0" and a.best.failed == 5
    text = tables.markdown(a)
    assert "Budget: 4 configs of optimizer.lr tried per design (equal budget)." in text
    with pytest.raises(ReportError, match=r"--tune optimizer\.momentum.*Params that vary here: loss\.margin"):
        _analysis(uri, parent, tune=["optimizer.momentum"])


def test_regression_ranks_on_rmse_lower_is_better() -> None:
    with _store_dir() as tmp:
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        parent = synthetic_experiment(uri, n_runs=60, n_steps=30, task="regression", heldout=False)
        a = _analysis(uri, parent)
        assert a.metric.name == "rmse" and not a.metric.maximize
        # TRAP diverged on seeds 0 and 2 after its checkpoints: they count there, so it wins on rmse
        assert a.best.label == "delta=2.0, lr=0.1" and a.best.failed == 2
        assert a.ranked[1].label == "delta=0.5, lr=0.01"
        worst = max(r.metrics["best/val_rmse"] for r in a.runs if "best/val_rmse" in r.metrics)
        assert a.chance.value == worst and "worst rmse observed" in a.chance.why
        means = [r.val.mean for r in a.ranked if r.has_value]
        assert means == sorted(means)
        assert a.no_heldout == 60
        mae = _analysis(uri, parent, metric="r2")
        assert mae.metric.maximize and mae.best.label == "delta=2.0, lr=0.1"
        with pytest.raises(
            ReportError, match="--metric accuracy is a binary metric but these runs are regression"
        ):
            _analysis(uri, parent, metric="accuracy")
        report = compare.build_report(uri, None, parent, tmp / "reports")
        page = report.html_path.read_text()
        assert "No held-out data: 60 of 60 runs" in page and "Val rmse" in page


# ----------------------------------------------------------------------------- no store needed


def _run(i: int, params: dict[str, str], metrics: dict[str, float], **tags: str) -> RunData:
    return RunData(f"{i:032x}", f"r{i}", "FINISHED", params, {"outcome": "converged", **tags}, metrics)


def test_metric_defaults_and_refusals() -> None:
    binary = [_run(0, {"seed": "0"}, {"best/val_accuracy": 0.9}, task="binary")]
    assert ranking.resolve_metric(binary, None).name == "accuracy"
    untagged = [_run(0, {"seed": "0"}, {"best/val_loss": 0.3})]
    assert ranking.resolve_metric(untagged, None) == ranking.LOSS_FALLBACK
    mixed = [*binary, _run(1, {"seed": "0"}, {"best/val_rmse": 0.3}, task="regression")]
    with pytest.raises(ReportError, match=r"mix tasks \(binary \(1 runs\), regression \(1 runs\)\)"):
        ranking.resolve_metric(mixed, None)
    with pytest.raises(ReportError, match="Unknown metric 'f1'; accepted: accuracy, auc, rmse, mae, r2"):
        ranking.resolve_metric(binary, "f1")
    with pytest.raises(ReportError, match="No run here logged best/val_auc or val/auc"):
        ranking.resolve_metric(binary, "auc")


def test_non_finite_and_unfinished_runs_count_as_failed() -> None:
    metric = ranking.resolve_metric([_run(0, {}, {"best/val_accuracy": 0.9}, task="binary")], None)
    cases = {
        "finished": (_run(0, {}, {"best/val_accuracy": 0.9, "test/accuracy": 0.8}), None),
        "nan": (_run(1, {}, {"val/accuracy": float("nan")}), "non-finite val/accuracy"),
        "inf loss": (
            _run(2, {}, {"best/val_accuracy": 0.9, "final/val_loss": float("inf")}),
            "non-finite val loss",
        ),
        "diverged": (_run(3, {}, {"best/val_accuracy": 0.99}, outcome="diverged"), "diverged"),
        "missing": (_run(4, {}, {}), "no val/accuracy"),
    }
    for name, (run, failure) in cases.items():
        assert ranking.score_run(run, metric).failure == failure, name
    killed = _run(5, {}, {"best/val_accuracy": 0.9})
    killed.status = "KILLED"
    assert ranking.score_run(killed, metric).failure == "killed"
    assert ranking.score_run(cases["finished"][0], metric).test == 0.8


def test_markdown_stays_under_4000_characters_and_overfitting_is_optional() -> None:
    runs = [
        _run(
            i,
            {"loss.margin": str(m), "optimizer.lr": "0.01", "model.hidden": "256-256-256", "seed": str(s)},
            {"best/val_accuracy": 0.8 + 0.001 * m, "test/accuracy": 0.79},
            task="binary",
            **({"overfitting": "true"} if m == 0 else {}),
        )
        for i, (m, s) in enumerate((m, s) for m in range(120) for s in range(2))
    ]
    a = analysis.analyse(runs, ranking.resolve_metric(runs, None))
    text = tables.markdown(a)
    assert len(text) < 4000 and re.search(r"… and \d+ more designs \(see the report\)\.$", text)
    assert "| 1 | margin=119 **best** |" in text
    rows = {row[1]: row for row in tables.rows(a)}
    col = tables.headers(a).index("Overfitting")
    assert rows["0"][col] == "2 of 2" and rows["5"][col] == "—"


def test_a_shootout_over_design_groups_is_named_by_the_group_choice() -> None:
    """The shootout studies sweep `+design=NAME` (a global-package group: no `design` param, only the
    loss settings it implies); designs are named after the choice, and --tune works over them."""
    designs = {
        "hinge_m0": {"loss._target_": "losslab.losses.Hinge", "loss.margin": "0.0"},
        "hinge_m1": {"loss._target_": "losslab.losses.Hinge", "loss.margin": "1.0"},
        "bce_with_logits": {"loss._target_": "torch.nn.BCEWithLogitsLoss"},
        "focal": {"loss._target_": "losslab.losses.Focal", "loss.gamma": "2.0"},
    }
    quality = {"hinge_m0": 0.90, "hinge_m1": 0.93, "bce_with_logits": 0.95, "focal": 0.92}
    with _store_dir() as tmp:
        uri = f"sqlite:///{tmp / 'mlflow.db'}"
        client = open_store(uri)
        exp = ensure_experiment(client, "classification_shootout")
        parent = client.create_run(exp, tags={"losslab.sweep": "parent"}).info.run_id
        for name, loss_params in designs.items():
            for lr in ("0.001", "0.01"):
                for seed in range(3):
                    acc = quality[name] - (0.05 if lr == "0.001" else 0.0) + 0.01 * seed
                    overrides = (
                        f"+experiment=classification_shootout +design={name} optimizer.lr={lr} seed={seed}"
                    )
                    tags = {
                        "mlflow.parentRunId": parent,
                        "task": "binary",
                        "heldout": "true",
                        "overrides": overrides,
                    }
                    run = client.create_run(exp, tags={**tags, "outcome": "converged"}).info.run_id
                    # data.split_seed defaults to the seed: pooled like it, never a design key
                    params = {
                        **loss_params,
                        "optimizer.lr": lr,
                        "seed": str(seed),
                        "data.split_seed": str(seed),
                    }
                    for k, v in params.items():
                        client.log_param(run, k, v)
                    client.log_metric(run, "best/val_accuracy", acc)
                    client.log_metric(run, "test/accuracy", acc - 0.02)
                    client.log_metric(run, "final/val_loss", 0.3)
                    client.set_terminated(run)
        a = _analysis(uri, parent, tune=["optimizer.lr"])
    assert a.keys == ["design"]
    assert [r.label for r in a.ranked] == [
        "design=bce_with_logits",
        "design=hinge_m1",
        "design=focal",
        "design=hinge_m0",
    ]
    assert all(r.tuned == {"optimizer.lr": "0.01"} and len(r.configs) == 2 for r in a.ranked)
    assert a.best.test.mean == pytest.approx(0.95 + 0.01 - 0.02)


def test_the_page_highlights_the_best_design_and_flags_failures(study: tuple[str, str, Path]) -> None:
    uri, parent, tmp = study
    report = compare.build_report(uri, None, parent, tmp / "reports", log_artifacts=False)
    page = report.html_path.read_text()
    assert page.count('<tr class="best">') == 1
    trap = _label(*synthetic.TRAP)
    assert (
        '<tr class="best"><td>1</td><td>2.0</td><td>0.1</td><td>10</td>'
        "<td>5 of 10 (diverged: seeds 0, 2, 4, 6, 8) [0.19, 0.81]</td>" in page
    )
    assert "1 of 10 (failed: seed 1) [0.0025, 0.45]" in page
    assert "Failures are a column, not a demotion" in page
    assert "The winner failed on 5 of 10 seeds" in page  # the verdict says so
    assert "Too few seeds" not in page  # 10 seeds everywhere, even where all runs failed
    best_line = next(line for line in report.designs_markdown.splitlines() if "**best**" in line)
    assert best_line.startswith(f"| 1 | {trap} **best** |") and best_line.endswith("| 5 of 10 |")
    assert report.best["label"] == trap and report.best["metric"] == "accuracy"
    assert report.best["failed_seeds"] == 5 and report.best["runs"] == 10
    assert report.best["val_accuracy"] == pytest.approx(_analysis(uri, parent).best.val.mean)
    assert set(report.best) >= {"test_accuracy", "test_accuracy_ci95", "val_accuracy_ci95", "runs", "params"}
    with pytest.raises(ReportError, match="seeds are never tuned"):
        _analysis(uri, parent, tune=["seed"])


def test_a_tie_for_best_is_said_plainly() -> None:
    from losslab.report.page import warnings_of

    runs = [
        _run(i, {"loss.margin": m, "seed": str(s)}, {"best/val_accuracy": v}, task="binary")
        for i, (m, s, v) in enumerate(
            [("0", 0, 0.9), ("0", 1, 0.8), ("1", 0, 0.8), ("1", 1, 0.9), ("2", 0, 0.7), ("2", 1, 0.7)]
        )
    ]
    a = analysis.analyse(runs, ranking.resolve_metric(runs, None))
    assert a.best.label == "margin=0"
    said = [w for w in warnings_of(a) if "tie for the best" in w]
    assert len(said) == 1
    assert said[0].startswith("2 designs tie for the best mean val accuracy (0.85): margin=0; margin=1.")
    a.ranked[1].scores[0].val = 0.81  # no longer tied
    del a.ranked[1].val_score, a.ranked[1].val
    assert not [w for w in warnings_of(a) if "tie for the best" in w]


def test_a_sweep_whose_runs_all_failed_still_gets_a_report_saying_so() -> None:
    from losslab.report.page import warnings_of

    runs = [_run(i, {"loss.margin": str(i % 2), "seed": str(i // 2)}, {}, task="binary") for i in range(4)]
    for run in runs:
        run.status, run.tags = "FAILED", {"task": "binary"}
    a = analysis.analyse(runs, ranking.resolve_metric(runs, None))
    assert a.best is None and all(r.failures == {"failed": 2} for r in a.ranked)
    assert any("none is highlighted as best" in w for w in warnings_of(a))
    assert all(r.val.mean == 0.5 for r in a.ranked)  # every seed at chance
    assert "**best**" not in tables.markdown(a) and "| 2 of 2 |" in tables.markdown(a)


def test_a_paired_difference_of_float32_round_off_reads_as_a_tie() -> None:
    """Two designs with the same accuracies differ by ~1e-8 once MLflow's float32 values are read back:
    a tie on every seed, a degenerate interval said so, never [a, a], and p = 1."""
    runs = [
        _run(
            2 * s + i,
            {"loss.margin": m, "seed": str(s)},
            {"best/val_accuracy": 0.8 + 0.01 * s + e, "test/accuracy": 0.8 + 0.01 * s + e},
            task="binary",
        )
        for s in range(5)
        for i, (m, e) in enumerate((("0", 0.0), ("1", -1.19e-08)))
    ]
    a = analysis.analyse(runs, ranking.resolve_metric(runs, None))
    other = next(r for r in a.ranked if r is not a.baseline)
    assert tables.fmt_diff(other, "test") == "+0 (equal on all 5 seeds; no interval)"
    assert other.cmp_test.p == 1.0 and tables.fmt_p(other, "test") == "p = 1 (Holm 1)"


def test_paired_rows_count_the_seeds_whose_runs_failed(study: tuple[str, str, Path]) -> None:
    """A seed that failed takes no part in a paired difference; the row must say so, in the HTML and
    the markdown, or a design that lost seeds reads like one that paired on all of them."""
    uri, parent, tmp = study
    report = compare.build_report(uri, None, parent, tmp / "reports-paired", log_artifacts=False)
    a, page, md = report.analysis, report.html_path.read_text(), report.designs_markdown
    by_label = {r.label: r for r in a.ranked}
    cases = {  # label: (seeds paired, why the others are left out, text of the Δ cell)
        _label(*synthetic.FAILED_RUN[:2]): (9, {"failed": 1}, "(9 of 10 seeds paired; 1 failed)"),
        # diverged seeds keep their selected checkpoint's test value: paired on every seed
        _label(*synthetic.ALL_DIVERGE): (10, {}, "]"),
    }
    for label, (seeds, gaps, text) in cases.items():
        r = by_label[label]
        assert (r.cmp_test.paired.n, r.n, ranking.unpaired(r, r.cmp_test, "test")) == (seeds, 10, gaps), label
        diff = tables.fmt_diff(r, a.paired_on)
        assert diff.endswith(text), diff
        assert f"<td>{diff}</td>" in page, diff  # its own cell of the design table
        md_row = next(line for line in md.splitlines() if line.startswith("| ") and f" {label} |" in line)
        assert diff in md_row, md_row
    clean = by_label[_label(0.0, 1e-2)]
    assert clean.cmp_test.paired.n == clean.n == 10 and "seeds paired" not in tables.fmt_diff(clean, "test")
    assert "1 design(s) are paired with the baseline on fewer seeds than they ran" in page
    # the baseline's own failed seed is counted on its row and on every row paired with it
    with_failed = _analysis(uri, parent, baseline=_label(*synthetic.FAILED_RUN[:2]))
    assert tables.fmt_diff(with_failed.baseline, with_failed.paired_on) == (
        "baseline (9 of 10 seeds usable; 1 failed)"
    )
    best = next(r for r in with_failed.ranked if r.label == _label(*synthetic.BEST))
    assert ranking.unpaired(best, best.cmp_test, "test") == {"baseline failed": 1}
    assert best.cmp_test.paired.n == 9
    diff = tables.fmt_diff(best, with_failed.paired_on)
    assert diff.endswith("(9 of 10 seeds paired; 1 baseline failed)"), diff
