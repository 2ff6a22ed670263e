"""The report wired to inference.py (issue 23 items 1-7, issue 25 item 2), on real MLflow sqlite stores
with runs whose answers are fixed by construction."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from losslab import compare
from losslab.report import inference as inf
from losslab.report import ranking, tables
from losslab.report.page import verdict_lines, warnings_of
from losslab.report.plots import _set_scale, choose_axis
from losslab.report.runs import RunData
from losslab.testing.synthetic import synthetic_experiment
from losslab.tracking.recorder import log_dataset
from losslab.tracking.store import ensure_experiment, open_store

N_TEST = 113


@contextlib.contextmanager
def _store() -> Iterator[tuple[str, Path]]:
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None, prefix="losslab-") as tmp:
        yield f"sqlite:///{Path(tmp) / 'mlflow.db'}", Path(tmp)


class Sweep:
    """A sweep parent and child runs logged through MLflow's client, each with an explicit end time."""

    def __init__(self, uri: str) -> None:
        self.client = open_store(uri)
        self.exp = ensure_experiment(self.client, "stats")
        self.parent = self.client.create_run(self.exp, tags={"losslab.sweep": "parent"}).info.run_id
        self.clock = 1_700_000_000_000

    def run(
        self,
        margin: str,
        seed: int,
        metrics: dict[str, float],
        status: str = "FINISHED",
        outcome: str = "converged",
        test_rows: int | None = None,
        name: str | None = None,
        **params: str,
    ) -> str:
        tags = {"mlflow.parentRunId": self.parent, "task": "binary", "heldout": "true", "outcome": outcome}
        run = self.client.create_run(self.exp, run_name=name or f"m{margin}-s{seed}", tags=tags).info.run_id
        for k, v in {"loss.margin": margin, "seed": str(seed), **params}.items():
            self.client.log_param(run, k, v)
        for k, v in metrics.items():
            self.client.log_metric(run, k, v)
        if test_rows:
            rows = np.zeros((test_rows, 2))
            log_dataset(self.client, run, "binary", {"test": (rows, rows[:, 0])})
        self.clock += 1000
        self.client.set_terminated(run, status, end_time=self.clock)
        return run


def _acc(v: float) -> dict[str, float]:
    return {"best/val_accuracy": v, "test/accuracy": v, "final/val_loss": 0.3}


def test_one_test_sample_better_on_every_seed_is_degenerate_with_the_exact_p_and_holm(tmp_path: Path) -> None:
    """Design m1 beats the baseline m0 by exactly one of 113 test samples on each of 5 seeds: the Δ is
    marked degenerate (never [a, a]), its raw p is the sign-flip floor 2 / 2^5, Holm-adjusted over the
    family of 2 comparisons; the power sentence names the seeds and the test size."""
    rng = np.random.default_rng(0)
    with _store() as (uri, _tmp):
        sweep = Sweep(uri)
        for s in range(5):
            base = 90 + int(rng.integers(0, 10))
            noise = int(rng.integers(-3, 4))
            for margin, k in (("0", base), ("1", base + 1), ("2", base + noise)):
                sweep.run(margin, s, _acc(k / N_TEST), test_rows=N_TEST)
        report = compare.build_report(
            uri, None, sweep.parent, tmp_path / "r", log_artifacts=False, baseline="margin=0"
        )
    a = report.analysis
    assert a.n_test == N_TEST and a.family == 2
    m1 = next(r for r in a.ranked if r.label == "margin=1")
    m2 = next(r for r in a.ranked if r.label == "margin=2")
    pd = m1.cmp_test.paired
    assert pd.interval.degenerate and pd.interval.mean == pytest.approx(1 / N_TEST, rel=1e-5)
    cell = tables.fmt_diff(m1, "test")
    assert cell == "+0.00885 (equal on all 5 seeds; no interval)" and "[" not in cell
    assert m1.cmp_test.p == pytest.approx(2 / 2**5)
    expected = inf.holm([m1.cmp_test.p, m2.cmp_test.p])
    assert m1.cmp_test.p_adjusted == pytest.approx(expected[0]) and m1.cmp_test.family == 2
    assert m1.cmp_test.p_adjusted > m1.cmp_test.p
    assert tables.fmt_p(m1, "test") == f"p = 0.0625 (Holm {expected[0]:.3g})"
    page = report.html_path.read_text()
    assert "(equal on all 5 seeds; no interval)" in page and "[+0.00885, +0.00885]" not in page
    assert f"With 5 seeds and {N_TEST} test samples, differences under" in page
    assert "no difference of any size can reach p &lt;= 0.05 after Holm over 2 comparisons" in page
    # the verdict uses the adjusted p: 5 of 5 seeds won is not a finding here
    said = " ".join(verdict_lines(a))
    assert "On test (Holm-adjusted p <= 0.05): 2 design(s) cannot be told apart from it" in said
    assert inf.format_seeds_won(m1.cmp_test.wins) == "5 of 5 seeds won [0.48, 1]"


def test_reruns_of_a_seed_do_not_inflate_n_and_are_named(tmp_path: Path) -> None:
    with _store() as (uri, _tmp):
        sweep = Sweep(uri)
        for s in range(5):
            sweep.run("0", s, _acc(0.80 + 0.01 * s))
            sweep.run("1", s, _acc(0.85 + 0.01 * s))
        once = compare.build_report(uri, None, sweep.parent, tmp_path / "a", log_artifacts=False).analysis
        sweep.run("1", 0, _acc(0.99), name="rerun-finished")  # later: kept, replaces seed 0's value
        sweep.run("1", 0, {}, status="FAILED", name="rerun-crashed")  # latest, but not FINISHED
        for s in range(5):  # every seed of margin=0 run twice more with the same values
            sweep.run("0", s, _acc(0.80 + 0.01 * s), name=f"again-{s}")
        report = compare.build_report(uri, None, sweep.parent, tmp_path / "b", log_artifacts=False)
    a = report.analysis
    m0, m1 = (next(r for r in a.ranked if r.label == f"margin={m}") for m in "01")
    assert m0.n == m1.n == 5 and len(m0.scores) == 10 and len(m1.scores) == 7
    before = next(r for r in once.ranked if r.label == "margin=0")
    assert (m0.val.lo, m0.val.hi) == (before.val.lo, before.val.hi)  # duplicates change no interval
    assert m1.per_seed("val")["0"] == pytest.approx(0.99) and m1.failed == 0
    assert tables.fmt_seeds(m1) == "5 (2 reruns dropped)" and tables.fmt_seeds(m0) == "5 (5 reruns dropped)"
    said = next(w for w in warnings_of(a) if w.startswith("Reruns: 7 run(s)"))
    assert "margin=1 seed 0: m1-s0" in said and "rerun-crashed" in said
    assert "(rerun, dropped)" in report.html_path.read_text()


def test_a_failure_is_a_column_scored_at_chance_not_a_demotion() -> None:
    """0.97 on 4 seeds and one seed diverged before any val value, against 0.90 on 5 clean seeds: the
    failed seed scores chance (0.5), (4 x 0.97 + 0.5) / 5 = 0.876 < 0.90; had it diverged after a
    checkpoint at 0.97 it would keep that value and win, with its failure said in the verdict."""
    for late in (False, True):
        with _store() as (uri, tmp):
            sweep = Sweep(uri)
            for s in range(5):
                sweep.run("0", s, _acc(0.90))
                if s < 4:
                    sweep.run("1", s, _acc(0.97))
                elif late:
                    sweep.run("1", s, {**_acc(0.97), "final/val_loss": float("inf")}, outcome="diverged")
                else:
                    sweep.run("1", s, {"final/val_loss": float("inf")}, outcome="diverged")
            report = compare.build_report(uri, None, sweep.parent, tmp / "r", log_artifacts=False)
            page = report.html_path.read_text()
        a = report.analysis
        m1 = next(r for r in a.ranked if r.label == "margin=1")
        assert tables.fmt_failed(m1) == "1 of 5 (diverged: seed 4) [0.0051, 0.72]"
        assert report.designs_markdown.count("| 1 of 5 |") == 1
        if late:
            assert a.best is m1 and m1.val.mean == pytest.approx(0.97)
            assert "The winner failed on 1 of 5 seeds" in " ".join(verdict_lines(a))
        else:
            assert a.best.label == "margin=0" and a.ranked[1] is m1
            assert m1.val.mean == pytest.approx((4 * 0.97 + 0.5) / 5)
            assert tables.fmt_value(m1, "val").endswith("(1 of 5 seeds at chance)")
            assert "chance level 0.5 (binary)" in page


def _r(params: dict[str, str], tags: dict[str, str]) -> RunData:
    return RunData("0" * 32, "r", "FINISHED", params, tags, {})


def test_chance_levels() -> None:
    acc = ranking.TaskMetric("accuracy", True, "multiclass")
    multi = [_r({"data.num_classes": "10"}, {"task": "multiclass"})]
    assert ranking.chance_level(acc, multi, [0.3, 0.9]).value == pytest.approx(0.1)
    unknown = [_r({}, {"task": "multiclass"})]
    assert ranking.chance_level(acc, unknown, [0.3, 0.9]).value == 0.3  # no K: the worst observed
    nll = ranking.TaskMetric("nll", False, "multiclass")
    worst = ranking.chance_level(nll, multi, [0.4, 2.5, None, float("inf")])
    assert worst.value == 2.5 and "worst nll observed" in worst.why


def test_the_lr_plot_is_there_when_lr_varies_and_beside_the_tuned_table(tmp_path: Path) -> None:
    with _store() as (uri, tmp):
        parent = synthetic_experiment(uri, n_runs=60, n_steps=30, experiment="lr")
        plain = compare.build_report(uri, None, parent, tmp / "a", log_artifacts=False)
        tuned = compare.build_report(uri, None, parent, tmp / "b", log_artifacts=False, tune=["optimizer.lr"])
        page, tuned_page = plain.html_path.read_text(), tuned.html_path.read_text()
    assert "<h2>Learning-rate sensitivity</h2>" in page and 'alt="learning-rate sensitivity"' in page
    tuning = tuned_page[tuned_page.index("<h2>Tuning</h2>") :]
    assert 'alt="learning-rate sensitivity"' in tuning[: tuning.index("<details>")]  # next to the table
    assert "<h2>Learning-rate sensitivity</h2>" not in tuned_page
    # headers are readable: short names, never a raw `_target_`
    assert "<th>margin</th><th>lr</th>" in page and "_target_</th>" not in page


def test_no_lr_plot_without_lr_and_one_caveat_line_per_small_table() -> None:
    with _store() as (uri, tmp):
        sweep = Sweep(uri)
        for s in range(3):
            for m, opt in (("0", "torch.optim.SGD"), ("1", "torch.optim.Adam")):
                sweep.run(m, s, _acc(0.8 + 0.01 * s + 0.02 * int(m)), **{"optimizer._target_": opt})
        report = compare.build_report(uri, None, sweep.parent, tmp / "r", log_artifacts=False)
        page = report.html_path.read_text()
    assert "Learning-rate sensitivity" not in page
    assert "too few to rely on" not in page and page.count("Few seeds: n = 3 per design.") == 1
    assert "<th>optimizer</th>" not in page or "optimizer._target_" not in page


# ----------------------------------------------------------------------------- axes (issue 25)


def test_the_axis_suits_hinge_like_decaying_and_noisy_curves() -> None:
    rng = np.random.default_rng(0)
    steps = np.arange(2000)
    hinge = np.where(steps > 300, 0.0, np.exp(-steps / 100.0))  # exact zeros dominate
    hinge[rng.integers(300, 2000, 50)] = rng.uniform(0, 0.05, 50)  # a few batches still have a margin error
    decaying = 2.0 * np.exp(-steps / 300.0) + 1e-4  # positive, four decades
    noisy = 0.5 + rng.normal(0, 0.05, 2000)  # within a decade
    few_zeros = decaying.copy()
    few_zeros[::50] = 0.0  # 2% zeros
    assert choose_axis([hinge]).scale == "linear" and choose_axis([hinge]).lo == 0.0
    log = choose_axis([decaying])
    assert log.scale == "log" and log.lo == pytest.approx(decaying.min())
    assert choose_axis([noisy]).scale == "linear" and choose_axis([noisy]).lo is None
    clipped = choose_axis([few_zeros])
    assert clipped.scale == "log" and clipped.lo >= np.quantile(few_zeros[few_zeros > 0], 0.005)
    # float32 round-off is not data: 1e-43 next to 1 counts as a zero, never as a decade of the axis
    subnormal = np.concatenate([np.full(500, 1e-43), np.linspace(0.1, 1, 100)])
    assert choose_axis([subnormal]).scale == "linear"
    from losslab.train.curve_plot import plt

    for curve, scale in ((hinge, "linear"), (decaying, "log"), (noisy, "linear")):
        fig, ax = plt.subplots()
        ax.plot(steps, curve)
        _set_scale([ax], [curve], log=True)
        fig.canvas.draw()
        assert ax.get_yscale() == scale  # never symlog
        lo = ax.get_ylim()[0]
        ticks = [t for t in ax.get_yticks() if lo <= t]
        positive = curve[curve > 0]
        assert all(t == 0 or t >= positive.min() / 10 for t in ticks), ticks  # no ticks below the data
        plt.close(fig)


def test_mlflows_stand_in_for_infinity_is_not_a_measurement():
    """MLflow logs inf as 1.798e+308: a run whose checkpoint value is that is a failed seed, not a score."""
    from losslab.report.ranking import _finite

    assert _finite(1.7976931348623157e308) is None and _finite(-1.7976931348623157e308) is None
    assert _finite(float("nan")) is None and _finite(0.97) == 0.97 and _finite(1e300) == 1e300
