"""Statistics over seeds (losslab.report.inference, issue 23 items 1-6) against definitions.

Every expected number is computed here independently of the module: by hand, by brute-force
enumeration (itertools over sign vectors, step-down Holm), by scipy's own routines (t.interval,
binomtest, mannwhitneyu, ttest_1samp) or by Monte Carlo simulation. Exact fractions use integer
differences in units of one test sample (1/113), the granularity of a 113-sample accuracy.
"""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest
from scipy import stats

from losslab.report.inference import (
    EXACT_UP_TO,
    RunRecord,
    clopper_pearson,
    compare,
    compare_family,
    format_failures,
    format_interval,
    format_p,
    format_prob_improvement,
    format_seeds_won,
    holm,
    min_detectable_difference,
    min_p_value,
    paired_differences,
    paired_t_power,
    pool_seeds,
    prob_improvement,
    resolution,
    score_with_failures,
    seeds_won,
    sign_flip_test,
    t_interval,
    tie_tolerance,
)

N_TEST = 113
STEP = 1 / N_TEST


def f32(x: float) -> float:
    """A value as MLflow returns it: float32 round-off, read back as a double."""
    return float(np.float32(x))


# ----------------------------------------------------------------------------- independent references


def enumerate_sign_flip_p(k: list[int]) -> float:
    """Exact two-sided sign-flip p over integer differences: share of the 2^n sign vectors whose
    |sum| is at least the observed |sum| (integers: no round-off, ties are exact)."""
    observed = abs(sum(k))
    hits = sum(
        abs(sum(e * v for e, v in zip(eps, k, strict=True))) >= observed
        for eps in itertools.product((1, -1), repeat=len(k))
    )
    return hits / 2 ** len(k)


def step_down_rejects(p: list[float], alpha: float) -> list[bool]:
    """Holm's procedure as published: walk the p-values up from the smallest, reject H_(k) while
    p_(k) <= alpha / (m - k + 1), stop at the first that fails."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    rejected = [False] * m
    for k, i in enumerate(order):
        if p[i] <= alpha / (m - k):
            rejected[i] = True
        else:
            break
    return rejected


def pairwise_prob(x: list[float], y: list[float], maximize: bool) -> float:
    """P(X > Y) by a double loop over pairs, ties 1/2."""
    total = 0.0
    for a in x:
        for b in y:
            better = a > b if maximize else a < b
            total += 1.0 if better else 0.5 if a == b else 0.0
    return total / (len(x) * len(y))


def rec(design: str, seed: int, value: float | None, order: float, status: str = "FINISHED") -> RunRecord:
    return RunRecord(design, str(seed), status, order, value, f"{design}-{seed}-{order}")


# ----------------------------------------------------------------------------- 1. seeds, not runs


def test_reruns_of_a_seed_do_not_change_n_and_the_latest_finished_run_is_kept() -> None:
    records = [rec("a", s, v, order=s) for s, v in enumerate([0.90, 0.91, 0.92, 0.93, 0.94])]
    # seed 0 rerun twice: a lucky earlier rerun (0.99) and the latest one (0.91)
    records += [rec("a", 0, 0.99, order=10), rec("a", 0, 0.91, order=11)]
    pool = pool_seeds(records)
    assert pool.n("a") == 5
    assert pool.values("a") == {"0": 0.91, "1": 0.91, "2": 0.92, "3": 0.93, "4": 0.94}
    assert pool.chosen["a"]["0"].runs == 3
    assert sorted(r.value for r in pool.duplicates("a")) == [0.90, 0.99]
    # the interval's n is the number of seeds: 7 runs must not give n = 7
    ci = t_interval(pool.values("a").values())
    assert ci.n == 5
    naive = t_interval(r.value for r in records)
    assert naive.n == 7  # what pooling prevents


def test_pooling_is_invariant_to_duplicating_and_shuffling_the_runs() -> None:
    records = [
        rec(d, s, 0.8 + 0.02 * s + (0.05 if d == "b" else 0), order=10 * s + (d == "b"))
        for d in "ab"
        for s in range(4)
    ]
    records.append(rec("a", 2, 0.5, order=100))
    base = pool_seeds(records)
    doubled = pool_seeds(records + records)
    shuffled = list(records)
    random.Random(3).shuffle(shuffled)
    for other in (doubled, pool_seeds(shuffled)):
        for d in "ab":
            assert other.n(d) == base.n(d)
            assert other.values(d) == base.values(d)
            assert {s: v.run_id for s, v in other.chosen[d].items()} == {
                s: v.run_id for s, v in base.chosen[d].items()
            }
    assert base.values("a")["2"] == 0.5
    assert doubled.chosen["a"]["2"].runs == 2 * base.chosen["a"]["2"].runs


def test_a_seed_without_a_finished_run_is_a_failure_not_a_value() -> None:
    records = [
        rec("a", 0, 0.9, order=1),
        rec("a", 0, 0.3, order=2, status="FAILED"),  # later, but FINISHED wins
        rec("a", 1, 0.7, order=3, status="FAILED"),
        rec("a", 1, 0.8, order=4, status="KILLED"),
    ]
    pool = pool_seeds(records)
    assert pool.values("a") == {"0": 0.9, "1": None}
    assert pool.values("a", include_unfinished=True) == {"0": 0.9, "1": 0.8}
    kept = pool.chosen["a"]["1"]
    assert (kept.finished, kept.status, kept.runs) == (False, "KILLED", 2)
    assert pool.n("a") == 2 and pool.n("missing") == 0


# ----------------------------------------------------------------------------- 2/4. intervals


@pytest.mark.parametrize(
    "values",
    [[0.90, 0.91, 0.93, 0.88, 0.92], [1.0, 2.0], [-3.0, 4.5, 0.25, 7.0, 7.0, 1e-3], [120.0, 140.0, 100.5]],
)
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_t_interval_matches_scipy(values: list[float], confidence: float) -> None:
    ci = t_interval(values, confidence)
    lo, hi = stats.t.interval(confidence, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert not ci.degenerate
    assert ci.n == len(values)
    assert ci.mean == pytest.approx(np.mean(values))
    assert ci.sd == pytest.approx(np.std(values, ddof=1))
    assert (ci.lo, ci.hi) == (pytest.approx(lo), pytest.approx(hi))
    shifted, scaled = (
        t_interval([v + 10 for v in values], confidence),
        t_interval([3 * v for v in values], confidence),
    )
    assert (shifted.lo, shifted.hi) == (pytest.approx(lo + 10), pytest.approx(hi + 10))
    assert (scaled.lo, scaled.hi) == (pytest.approx(3 * lo), pytest.approx(3 * hi))
    rev = t_interval(list(reversed(values)), confidence)
    assert (rev.mean, rev.lo, rev.hi) == (pytest.approx(ci.mean), pytest.approx(lo), pytest.approx(hi))


def test_t_interval_ignores_missing_and_non_finite_values() -> None:
    assert t_interval([0.9, None, math.nan, 0.8, math.inf]) == t_interval([0.9, 0.8])


def test_degenerate_interval_is_flagged_and_never_printed_as_zero_width() -> None:
    ci = t_interval([0.0089] * 5)
    assert ci.degenerate and ci.lo is None and ci.hi is None and ci.n == 5
    text = format_interval(ci)
    assert text == "+0.0089 (equal on all 5 seeds; no interval)"
    assert "[" not in text
    one = t_interval([0.5])
    assert one.degenerate and format_interval(one, signed=False) == "0.5 (1 seed; no interval)"
    assert format_interval(t_interval([])) == "—"
    assert format_interval(t_interval([0.1, 0.3]), signed=False).startswith("0.2 [")


def test_float32_round_off_counts_as_equal_but_a_real_spread_does_not() -> None:
    # the same accuracy logged by two runs, once rounded to float32 and once not
    assert t_interval([f32(0.9), 0.9, f32(0.9), 0.9]).degenerate
    assert not t_interval([0.9, 0.9, 0.9, 0.9 + STEP]).degenerate
    assert tie_tolerance([0.9, None, 250.0]) == pytest.approx(250e-6)
    assert tie_tolerance([math.nan]) == tie_tolerance([0.5]) == 1e-6


# ----------------------------------------------------------------------------- 2. paired differences


def test_paired_differences_use_the_common_seeds_and_say_why_others_are_left_out() -> None:
    design = {"0": 0.92, "1": 0.90, "2": None, "3": math.nan, "4": 0.95, "5": 0.5}
    baseline = {"0": 0.90, "1": 0.91, "2": 0.9, "3": None, "4": math.inf, "6": 0.8}
    pd = paired_differences(design, baseline)
    assert pd.seeds == ("0", "1") and pd.n == 2
    assert pd.diffs == (pytest.approx(0.02), pytest.approx(-0.01))
    assert pd.left_out == {
        "2": "design has no value",
        "3": "neither has a value",
        "4": "baseline has no value",
        "5": "not run by the baseline",
        "6": "not run by the design",
    }


def test_adding_a_constant_to_both_designs_changes_no_difference() -> None:
    rng = np.random.default_rng(7)
    x = {str(s): float(v) for s, v in enumerate(rng.normal(0.9, 0.02, 6))}
    y = {str(s): float(v) for s, v in enumerate(rng.normal(0.88, 0.02, 6))}
    base = paired_differences(x, y)
    moved = paired_differences({s: v + 0.5 for s, v in x.items()}, {s: v + 0.5 for s, v in y.items()})
    assert moved.diffs == pytest.approx(base.diffs)
    assert (moved.interval.lo, moved.interval.hi) == (
        pytest.approx(base.interval.lo),
        pytest.approx(base.interval.hi),
    )
    assert (
        compare(x, y, maximize=True).p
        == compare({s: v + 0.5 for s, v in x.items()}, {s: v + 0.5 for s, v in y.items()}, maximize=True).p
    )


def test_one_test_sample_better_on_every_seed_is_a_degenerate_difference() -> None:
    # float32 accuracies k/113; the design gets exactly one more sample right on each of 5 seeds
    ks = [40, 56, 57, 100, 112, 60]  # 56 -> 57 crosses a float32 binade (0.5)
    base = {str(s): f32(k / N_TEST) for s, k in enumerate(ks)}
    design = {str(s): f32((k + 1) / N_TEST) for s, k in enumerate(ks)}
    design["5"] = None
    pd = paired_differences(design, base)
    assert pd.n == 5
    assert max(pd.diffs) - min(pd.diffs) > 0  # float32 round-off: not bit-identical
    assert pd.interval.degenerate
    assert format_interval(pd.interval) == "+0.00885 (equal on all 5 seeds; no interval)"


# ----------------------------------------------------------------------------- 3. sign-flip test


def test_sign_flip_hand_cases() -> None:
    # [1,1,1,1,0]: the zero flips to itself, so 2 (all-same-sign) x 2 (zero's sign) of 32 vectors
    assert enumerate_sign_flip_p([1, 1, 1, 1, 0]) == 4 / 32
    assert sign_flip_test([v * STEP for v in (1, 1, 1, 1, 0)]).p == 4 / 32
    five = sign_flip_test([STEP] * 5)
    assert five.p == 2 / 32 == min_p_value(5) == five.min_p
    assert five.exact and five.flips == 32 and five.n == 5
    assert sign_flip_test([STEP] * 6).p == 2 / 64 == min_p_value(6)
    # [3, -1, 2], sum 4: the 8 vectors sum to +-4 (as is), +-6 (flip -1), +-0 (flip 2), +-2 (flip 3):
    # 4 of 8 reach |4|
    assert enumerate_sign_flip_p([3, -1, 2]) == 4 / 8
    assert sign_flip_test([3.0, -1.0, 2.0]).p == 4 / 8
    # [3, 1, 2], sum 6: only +-6 -> 2 of 8
    assert sign_flip_test([3.0, 1.0, 2.0]).p == 2 / 8


def test_sign_flip_matches_brute_force_enumeration_on_a_corpus() -> None:
    """Small integer differences make many flipped sums tie the observed one exactly: the module
    (working in floats, with a tie tolerance) must count those ties as brute force does."""
    rng = np.random.default_rng(11)
    for _ in range(150):
        n = int(rng.integers(1, 11))
        k = [int(v) for v in rng.integers(-3, 4, n)]
        got = sign_flip_test([v * STEP for v in k]).p
        assert got == enumerate_sign_flip_p(k), k


def test_sign_flip_properties() -> None:
    rng = np.random.default_rng(5)
    for _ in range(300):
        n = int(rng.integers(1, 12))
        d = (rng.normal(0.3, 1, n) * 10 ** rng.uniform(-3, 3)).tolist()
        for tol in (None, 0.0):
            res = sign_flip_test(d, tol=tol)
            assert 0 < res.p <= 1
            # the observed vector and its negation always count, whatever the round-off
            assert res.p >= min_p_value(n)
        assert sign_flip_test(d[::-1]).p == sign_flip_test(d).p
        assert sign_flip_test([-v for v in d]).p == sign_flip_test(d).p
        # scale-free as a statistic; the default tie tolerance is absolute (1e-6) below 1
        assert sign_flip_test([7 * v for v in d], tol=0.0).p == sign_flip_test(d, tol=0.0).p


@pytest.mark.parametrize("n", [1, 4, 9])
def test_all_zero_differences_give_p_one(n: int) -> None:
    assert sign_flip_test([0.0] * n).p == 1.0
    assert sign_flip_test([f32(0.9) - 0.9] * n).p == 1.0  # round-off only


def test_no_differences_no_test() -> None:
    res = sign_flip_test([])
    assert res.p is None and res.n == 0
    assert sign_flip_test([None, math.nan]).p is None  # type: ignore[list-item]


def test_sign_flip_monte_carlo_above_the_exact_limit() -> None:
    k = [2, -1, 3, 1, 0, 2, -2, 1, 1, 3, -1, 2, 0, 1, -3, 2, 1]  # n = 17 > EXACT_UP_TO
    assert len(k) > EXACT_UP_TO
    exact = enumerate_sign_flip_p(k)
    assert 0.01 < exact < 0.2
    d = [v * STEP for v in k]
    res = sign_flip_test(d, n_flips=20_000, seed=1)
    assert not res.exact and res.flips == 20_000
    se = math.sqrt(exact * (1 - exact) / 20_000)
    assert abs(res.p - exact) < 4 * se
    assert res.p == sign_flip_test(d, n_flips=20_000, seed=1).p  # reproducible
    assert res.min_p == min_p_value(17, n_flips=20_000) == 1 / 20_001
    # forced exact above the default limit agrees with brute force
    assert sign_flip_test(d, exact_up_to=17).p == exact


# ----------------------------------------------------------------------------- 3. Holm


def test_holm_hand_case() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(1*0.04, 0.06)
    got = holm([0.01, 0.04, 0.03, 0.005])
    assert got == [pytest.approx(0.03), pytest.approx(0.06), pytest.approx(0.06), pytest.approx(0.02)]
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    assert holm([0.0625]) == [0.0625]
    assert holm([]) == []
    # no test run: stays None and does not count in m
    assert holm([0.02, None, math.nan, 0.04]) == [pytest.approx(0.04), None, None, pytest.approx(0.04)]


def test_holm_agrees_with_the_step_down_procedure_at_every_level() -> None:
    """adjusted p_i <= alpha exactly when Holm's step-down procedure at alpha rejects H_i."""
    rng = np.random.default_rng(2)
    for _ in range(200):
        m = int(rng.integers(1, 9))
        p = rng.choice([0.001, 0.004, 0.01, 0.02, 0.0625, 0.125, 0.3], size=m).tolist()  # with ties
        if rng.random() < 0.5:
            p = rng.uniform(0, 0.2, m).tolist()
        adjusted = holm(p)
        assert all(a >= raw for a, raw in zip(adjusted, p, strict=True))
        assert all(a <= 1 for a in adjusted)
        for alpha in rng.uniform(0, 0.5, 25):
            assert [a <= alpha for a in adjusted] == step_down_rejects(p, alpha)
        perm = rng.permutation(m)
        assert holm([p[i] for i in perm]) == [adjusted[i] for i in perm]


def test_format_p_keeps_the_five_seed_floor_readable() -> None:
    assert format_p(0.0625) == "p = 0.0625"
    assert format_p(0.0625, 0.3125) == "p = 0.0625 (Holm 0.312)"
    assert format_p(None) == "—"


# ----------------------------------------------------------------------------- 5. P(X > Y)


def test_prob_improvement_hand_cases_with_ties() -> None:
    # 1 vs 2: loses twice; 2 vs 2: ties twice; 3 vs 2: wins twice -> (0 + 0 + .5 + .5 + 1 + 1) / 6
    assert prob_improvement([1, 2, 3], [2, 2], maximize=True).p == pytest.approx(0.5)
    # 3>1, 3>2, 2>1, 2=2 -> 3.5 / 4
    assert prob_improvement([3, 2], [1, 2], maximize=True).p == pytest.approx(0.875)
    # lower is better: the same pairs read the other way
    assert prob_improvement([3, 2], [1, 2], maximize=False).p == pytest.approx(0.125)
    # a float32 copy of the same value is a tie, not a win
    assert prob_improvement([f32(0.9)], [0.9], maximize=True).p == 0.5


def test_prob_improvement_matches_double_loop_and_mann_whitney() -> None:
    rng = np.random.default_rng(4)
    for _ in range(40):
        nx, ny = int(rng.integers(1, 8)), int(rng.integers(1, 8))
        x = (rng.integers(95, 105, nx) / N_TEST).tolist()  # coarse: many exact ties
        y = (rng.integers(95, 105, ny) / N_TEST).tolist()
        for maximize in (True, False):
            got = prob_improvement(x, y, maximize, n_boot=50).p
            assert got == pytest.approx(pairwise_prob(x, y, maximize))
        u = stats.mannwhitneyu(x, y, alternative="two-sided").statistic  # U of x, ties 1/2
        assert prob_improvement(x, y, True, n_boot=50).p == pytest.approx(u / (nx * ny))


def test_prob_improvement_invariances() -> None:
    rng = np.random.default_rng(9)
    x, y = rng.normal(0.9, 0.02, 5).tolist(), rng.normal(0.89, 0.02, 6).tolist()
    p = prob_improvement(x, y, True).p
    assert prob_improvement(y, x, True).p == pytest.approx(1 - p)  # swapping X and Y
    assert prob_improvement([v + 3 for v in x], [v + 3 for v in y], True).p == pytest.approx(p)
    assert prob_improvement(np.exp(x), np.exp(y), True).p == pytest.approx(p)  # monotone transform
    assert prob_improvement(x[::-1], y[::-1], True).p == pytest.approx(p)
    assert prob_improvement(x, y, False).p == pytest.approx(1 - p)


def test_prob_improvement_bootstrap_interval() -> None:
    x = [0.91, 0.93, 0.90, 0.95, 0.92]
    y = [0.90, 0.92, 0.89, 0.94, 0.88]
    pi = prob_improvement(x, y, True, n_boot=4000, seed=0)
    assert (pi.n_x, pi.n_y, pi.n_boot) == (5, 5, 4000)
    assert 0 <= pi.lo < pi.p < pi.hi <= 1 and not pi.degenerate
    assert prob_improvement(x, y, True, n_boot=4000, seed=0) == pi
    # against a plain bootstrap written out here (resample each side, recompute by double loop)
    rng = np.random.default_rng(123)
    boots = [pairwise_prob(rng.choice(x, 5).tolist(), rng.choice(y, 5).tolist(), True) for _ in range(4000)]
    lo, hi = np.quantile(boots, [0.025, 0.975])
    assert pi.lo == pytest.approx(lo, abs=0.04) and pi.hi == pytest.approx(hi, abs=0.04)
    assert format_prob_improvement(pi).startswith(f"{pi.p:.2g} [")


def test_prob_improvement_degenerate_and_undefined() -> None:
    pi = prob_improvement([0.95, 0.96, 0.97], [0.90, 0.91], True)
    assert pi.p == 1.0 and pi.degenerate
    assert format_prob_improvement(pi) == "1 (every resample gave 1; no interval)"
    none = prob_improvement([None, math.nan], [0.9], True)
    assert none.p is None and format_prob_improvement(none) == "—"
    assert prob_improvement([0.9, 0.8], [0.85], True, n_boot=0).lo is None


# ----------------------------------------------------------------------------- 5. seeds won, Clopper-Pearson


def test_clopper_pearson_five_of_five() -> None:
    lo, hi = clopper_pearson(5, 5)
    assert lo == pytest.approx(0.478, abs=5e-4) and hi == 1.0
    assert lo == pytest.approx(0.025 ** (1 / 5))  # closed form at k = n: (alpha/2)^(1/n)
    assert clopper_pearson(0, 5) == (0.0, pytest.approx(1 - 0.025 ** (1 / 5)))
    assert clopper_pearson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("n", [1, 2, 5, 12])
def test_clopper_pearson_matches_binomtest_and_covers(n: int) -> None:
    intervals = [clopper_pearson(k, n) for k in range(n + 1)]
    for k, (lo, hi) in enumerate(intervals):
        ref = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
        assert (lo, hi) == (pytest.approx(ref.low, abs=1e-9), pytest.approx(ref.high, abs=1e-9))
        lo2, hi2 = intervals[n - k]
        assert (lo, hi) == (pytest.approx(1 - hi2), pytest.approx(1 - lo2))  # symmetric
    for p in np.linspace(0.01, 0.99, 49):  # exact coverage is at least 95 % for every p
        cover = sum(stats.binom.pmf(k, n, p) for k, (lo, hi) in enumerate(intervals) if lo <= p <= hi)
        assert cover >= 0.95 - 1e-9


def test_seeds_won_counts_direction_and_ties() -> None:
    w = seeds_won([STEP] * 5, maximize=True)
    assert (w.wins, w.ties, w.n, w.decided, w.share) == (5, 0, 5, 5, 1.0)
    assert (w.lo, w.hi) == (pytest.approx(0.478, abs=5e-4), 1.0)
    assert format_seeds_won(w) == "5 of 5 seeds won [0.48, 1]"
    lost = seeds_won([STEP] * 5, maximize=False)  # lower is better: every seed lost
    assert (lost.wins, lost.decided, lost.hi) == (0, 5, pytest.approx(1 - 0.025**0.2))
    tied = seeds_won([STEP, STEP, -STEP, f32(0.9) - 0.9], maximize=True)
    assert (tied.wins, tied.ties, tied.decided) == (2, 1, 3)
    assert (tied.lo, tied.hi) == tuple(pytest.approx(v) for v in clopper_pearson(2, 3))
    assert format_seeds_won(tied).startswith("2 of 3 seeds won, 1 tied [")
    assert format_seeds_won(seeds_won([0.0, 0.0], True)) == "all 2 seeds tied"
    assert format_seeds_won(seeds_won([], True)) == "—"


# ----------------------------------------------------------------------------- a comparison, a family


def test_compare_pairs_the_test_but_not_p_of_improvement() -> None:
    base = {str(s): f32(k / N_TEST) for s, k in enumerate([100, 101, 98, 103, 99])}
    design = {s: f32(v + STEP) for s, v in base.items()}
    design["5"] = 0.5  # a seed the baseline did not run: not paired, but one of the design's runs
    c = compare(design, base, maximize=True, n_boot=200)
    assert c.paired.n == 5 and c.paired.left_out == {"5": "not run by the baseline"}
    assert c.p == 2 / 32 == c.p_adjusted and c.family == 1
    assert c.wins.wins == 5
    assert c.prob.n_x == 6 and c.prob.n_y == 5
    assert c.prob.p == pytest.approx(pairwise_prob(list(design.values()), list(base.values()), True))


def test_compare_family_holm_adjusts_over_the_designs_that_have_a_p() -> None:
    base = {str(s): 0.9 for s in range(6)}
    designs = {
        "baseline": base,
        "up": {s: v + STEP for s, v in base.items()},  # p = 2/64
        "mixed": {s: v + (STEP if int(s) % 2 else -STEP / 2) for s, v in base.items()},
        "none": {"9": 0.95},  # no seed in common: no test
    }
    fam = compare_family(designs, "baseline", maximize=True, n_boot=100)
    assert list(fam) == ["up", "mixed", "none"]
    raw = [fam[k].p for k in fam]
    assert raw[0] == 2 / 64 and raw[2] is None
    assert [fam[k].p_adjusted for k in fam] == holm(raw)
    assert fam["up"].p_adjusted == pytest.approx(2 * 2 / 64)
    assert all(fam[k].family == 2 for k in fam)


# ----------------------------------------------------------------------------- 6. power, resolution


def simulated_power(effect: float, n: int, trials: int = 40_000, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    samples = rng.normal(effect, 1.0, size=(trials, n))
    return float(np.mean(stats.ttest_1samp(samples, 0.0, axis=1).pvalue <= 0.05))


@pytest.mark.parametrize("n", [3, 5, 10])
def test_min_detectable_difference_has_the_stated_power_by_simulation(n: int) -> None:
    mdd = min_detectable_difference(n, 1.0)
    assert paired_t_power(mdd, n) == pytest.approx(0.8, abs=1e-6)
    # 40 000 simulated t-tests: standard error of the power 0.002
    assert simulated_power(mdd, n) == pytest.approx(0.8, abs=0.01)


def test_min_detectable_difference_known_values_and_shape() -> None:
    assert min_detectable_difference(5, 1.0) == pytest.approx(1.682, abs=1e-3)
    # the shortcut (t_{.975} + t_{.8}) sd / sqrt(n) falls short of 80 % power at 3 seeds
    shortcut = (stats.t.ppf(0.975, 2) + stats.t.ppf(0.8, 2)) / math.sqrt(3)
    assert simulated_power(shortcut, 3) < 0.78
    assert min_detectable_difference(3, 1.0) > shortcut
    assert min_detectable_difference(5, 0.01) == pytest.approx(0.01 * min_detectable_difference(5, 1.0))
    assert min_detectable_difference(10, 1.0) < min_detectable_difference(5, 1.0)
    assert min_detectable_difference(5, 1.0, n_comparisons=3) > min_detectable_difference(5, 1.0)
    for sd in (None, 0.0, math.nan):
        assert min_detectable_difference(5, sd) is None
    assert min_detectable_difference(1, 1.0) is None
    assert paired_t_power(0.0, 5) == pytest.approx(0.05)


def test_resolution_sentences() -> None:
    five = resolution(5, n_test=N_TEST, sd_diff=0.006)
    assert five.granularity == pytest.approx(STEP)
    assert five.mdd == pytest.approx(0.006 * 1.682, abs=1e-5)  # 0.0101 > 1/113
    assert five.threshold == five.mdd
    assert not five.reachable and five.min_p == 0.0625
    assert five.sentence.startswith("With 5 seeds and 113 test samples, differences under 0.01 are not")
    assert "t-test at alpha 0.05 detects with power 0.8" in five.sentence
    assert "no difference of any size can reach p <= 0.05" in five.sentence
    assert "smallest p with 5 seeds is 0.0625" in five.sentence

    six = resolution(6, n_test=N_TEST, sd_diff=0.001)
    assert six.reachable and six.threshold == pytest.approx(STEP)
    assert (
        six.sentence
        == "With 6 seeds and 113 test samples, differences under 0.0088 are not resolvable (one test sample)."
    )
    assert not resolution(6, sd_diff=0.001, n_comparisons=2).reachable  # 2 * 1/32 > 0.05
    flat = resolution(6, sd_diff=0.0)
    assert flat.mdd is None and "cannot be estimated" in flat.sentence


def test_min_p_value_is_the_sign_flip_floor() -> None:
    for n in range(1, 10):
        assert sign_flip_test([STEP] * n).p == min_p_value(n) == 2 / 2**n
    assert min_p_value(0) == 1.0


# ----------------------------------------------------------------------------- failures


def test_failures_count_at_chance_and_in_a_rate_column() -> None:
    values = {"0": 0.97, "1": 0.97, "2": 0.97, "3": None, "4": 0.97}
    f = score_with_failures(values, chance=0.1)
    assert f.failed == ("3",) and (f.k, f.n, f.rate) == (1, 5, 0.2)
    assert f.per_seed["3"] == 0.1
    assert f.score.mean == pytest.approx((4 * 0.97 + 0.1) / 5)  # 0.796, by hand
    assert (f.rate_lo, f.rate_hi) == tuple(pytest.approx(v) for v in clopper_pearson(1, 5))
    assert format_failures(f) == "1 of 5 (seed 3) [0.0051, 0.72]"
    clean = score_with_failures({"0": 0.9, "1": 0.8}, chance=0.1)
    assert clean.score == t_interval([0.9, 0.8]) and format_failures(clean) == "0 of 2 [0, 0.84]"
    assert format_failures(score_with_failures({}, 0.1)) == "—"


def test_one_failure_costs_its_share_instead_of_ranking_last() -> None:
    """The rule: a failed seed scores chance, so it lowers the mean by (value - chance) / n. It must
    neither vanish (dropping it would leave 0.97) nor demote the design below every clean one."""
    chance = 0.5
    ten = {str(s): 0.97 for s in range(10)} | {"9": math.nan}  # diverged on one of 10 seeds
    clean_090 = score_with_failures({str(s): 0.90 for s in range(10)}, chance)
    flaky = score_with_failures(ten, chance)
    assert flaky.score.mean == pytest.approx((9 * 0.97 + 0.5) / 10)  # 0.923
    assert flaky.score.mean > clean_090.score.mean  # still ranks above the clean 0.90 design
    assert flaky.score.mean < 0.97  # but the failure is not dropped
    five = score_with_failures({"0": 0.97, "1": 0.97, "2": 0.97, "3": 0.97, "4": None}, chance=0.1)
    assert score_with_failures({str(s): 0.75 for s in range(5)}, 0.1).score.mean < five.score.mean
    assert five.score.mean < score_with_failures({str(s): 0.90 for s in range(5)}, 0.1).score.mean


def test_pooled_failures_flow_into_the_rate() -> None:
    records = [rec("a", s, 0.9, order=s) for s in range(4)]
    records += [
        rec("a", 4, math.nan, order=5, status="FAILED"),
        rec("a", 4, math.nan, order=6, status="FAILED"),
    ]
    f = score_with_failures(pool_seeds(records).values("a"), chance=0.5)
    assert (f.k, f.n) == (1, 5)  # two failed runs of one seed are one failed seed


def test_sign_flip_on_differences_near_the_float64_limit_is_not_overflowed():
    """Differences of 1e308 (a diverged run's rmse) sum to inf; the test must still give its exact p."""
    huge = [3.6e307, 1.7e308, 1.7e308, 1.0e308, 5.0e307]
    big = sign_flip_test(huge)
    small = sign_flip_test([v / 1e307 for v in huge])
    assert big.p == small.p == 2 / 32
