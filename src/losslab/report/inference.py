"""Inference over seeds: one value per seed, paired tests, multiplicity, P(X > Y), failures, power.

Pure functions over numpy and scipy (issue 23, items 1-6). The unit of replication is the seed:
runs with the same seed share their data split and initialisation, so a rerun of a seed is not a new
observation, and two designs are compared on the seeds both have (paired). Every function here takes
plain values ({seed: value} mappings, sequences of floats) and returns small frozen dataclasses; nothing
reads MLflow, so each number can be checked by hand.

Conventions shared by every function:

* A paired difference is `design - baseline` in the metric's own units (its sign is not flipped for a
  lower-is-better metric); "better" is direction-aware wherever it is used (wins, P(X > Y)).
* Metrics come back from MLflow as float32-derived doubles (about 7 significant digits), so two values
  within `tie_tolerance` of each other count as equal: in "all differences equal" (a degenerate
  interval), in the permutation test's ties and in ties of wins.
* Missing and non-finite values (None, NaN, inf) are treated alike: not a value.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np
from scipy import optimize, stats

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
#: at most this many seeds: the permutation test enumerates all 2^n sign flips
EXACT_UP_TO = 16
#: above EXACT_UP_TO: this many random sign flips
N_FLIPS = 10_000
N_BOOT = 2_000
#: relative size of float32 round-off: values closer than this (times their scale) are equal
FLOAT32_RTOL = 1e-6
#: float64 round-off slack in the permutation test: sums of flipped differences that differ from the
#: observed sum by less than this (relative to sum |d|) are as extreme as it, whatever `tol` is
FLOAT64_SLACK = 1e-9

K = TypeVar("K", bound=Hashable)


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _fmt(x: float, digits: int, signed: bool) -> str:
    x = 0.0 if abs(x) < 1e-12 else x
    return f"{x:+.{digits}g}" if signed else f"{x:.{digits}g}"


def tie_tolerance(values: Iterable[float | None]) -> float:
    """`FLOAT32_RTOL * max(1, max |value|)` over the finite values: below it, two numbers are equal.

    Invariant to the order of the values; scales with the metric for metrics larger than 1, absolute
    (1e-6) below it: right for accuracies and losses of order 1, too coarse for a metric whose real
    differences are below 1e-6 (pass `tol` explicitly there).
    """
    vals = [abs(v) for v in values if _finite(v)]
    return FLOAT32_RTOL * max(1.0, *vals) if vals else FLOAT32_RTOL


# ----------------------------------------------------------------------------- 1. seeds as the unit


@dataclass(frozen=True)
class RunRecord:
    """One run as the pooling sees it: its design, seed, status, when it ended and its value.

    `order` is the run's end time (or any sequence number that grows with time); `value` is the metric
    read from it (None when it logged none).
    """

    design: Hashable
    seed: str
    status: str
    order: float
    value: float | None
    run_id: str = ""


@dataclass(frozen=True)
class SeedValue:
    """The run kept for one (design, seed), and how many runs that seed had."""

    design: Hashable
    seed: str
    value: float | None
    run_id: str
    status: str
    finished: bool  # False: no run of this seed FINISHED; the latest run of any status is kept
    runs: int


@dataclass(frozen=True)
class SeedPool:
    """One value per (design, seed) and the runs dropped to get there.

    `chosen[design][seed]` is the kept run; `dropped` the others (reruns), so a report can name them.
    """

    chosen: Mapping[Hashable, Mapping[str, SeedValue]]
    dropped: tuple[RunRecord, ...]

    def n(self, design: Hashable) -> int:
        """The number of seeds of `design` (not of runs): the n of every interval and test."""
        return len(self.chosen.get(design, {}))

    def values(self, design: Hashable, include_unfinished: bool = False) -> dict[str, float | None]:
        """{seed: value} for `design`, every seed present. A seed with no FINISHED run maps to None
        (a failure) unless `include_unfinished`, which keeps the value its latest run logged."""
        out: dict[str, float | None] = {}
        for seed, sv in self.chosen.get(design, {}).items():
            out[seed] = sv.value if (sv.finished or include_unfinished) else None
        return out

    def duplicates(self, design: Hashable) -> tuple[RunRecord, ...]:
        """The runs of `design` dropped as reruns of a seed already counted."""
        return tuple(r for r in self.dropped if r.design == design)


def pool_seeds(records: Iterable[RunRecord]) -> SeedPool:
    """One value per (design, seed): the latest FINISHED run of that seed, else its latest run.

    Definition: for each (design, seed), keep the FINISHED run with the largest `order` (ties: the one
    later in `records`); if none FINISHED, keep the latest run of any status and mark it
    `finished=False`. Every other run is dropped and listed. The kept run is chosen by time and status
    only, never by its value, so rerunning a seed cannot select a lucky value.
    Invariances: n per design is the number of distinct seeds, unchanged by reruns (duplicating every
    run leaves every kept run, value and n identical; only `runs` and `dropped` grow); the result does
    not depend on the order of `records` except to break exact ties of `order`.
    """
    groups: dict[Hashable, dict[str, list[tuple[int, RunRecord]]]] = {}
    for i, rec in enumerate(records):
        groups.setdefault(rec.design, {}).setdefault(str(rec.seed), []).append((i, rec))
    chosen: dict[Hashable, dict[str, SeedValue]] = {}
    dropped: list[tuple[int, RunRecord]] = []
    for design, seeds in groups.items():
        kept: dict[str, SeedValue] = {}
        for seed in sorted(seeds, key=_seed_sort_key):
            runs = seeds[seed]
            finished = [(i, r) for i, r in runs if r.status.upper() == "FINISHED"]
            pick = max(finished or runs, key=lambda ir: (ir[1].order, ir[0]))
            best = pick[1]
            kept[seed] = SeedValue(
                design, seed, best.value, best.run_id, best.status, bool(finished), len(runs)
            )
            dropped += [(i, r) for i, r in runs if i != pick[0]]
        chosen[design] = kept
    return SeedPool(chosen, tuple(r for _, r in sorted(dropped, key=lambda ir: ir[0])))


def _seed_sort_key(seed: str) -> tuple[int, float, str]:
    try:
        return (0, float(seed), seed)
    except ValueError:
        return (1, 0.0, seed)


# ----------------------------------------------------------------------------- 2/4. intervals


@dataclass(frozen=True)
class MeanCI:
    """A mean with its t-interval; `degenerate` when there is no interval to show.

    Degenerate: fewer than 2 values, or all values equal (within tolerance), where a t-interval would
    have zero width and say nothing about the uncertainty. Then `lo` and `hi` are None and `why` says
    which ("1 seed", "equal on all 5 seeds"; "no values" when n = 0).
    """

    mean: float | None
    lo: float | None
    hi: float | None
    n: int
    sd: float | None
    confidence: float = CONFIDENCE
    degenerate: bool = False
    why: str = ""

    @property
    def half(self) -> float | None:
        return None if self.lo is None or self.hi is None else (self.hi - self.lo) / 2


def t_interval(
    values: Iterable[float | None],
    confidence: float = CONFIDENCE,
    tol: float | None = None,
    unit: str = "seed",
) -> MeanCI:
    """Mean and two-sided t-interval, mean ± t_{(1+c)/2, n-1} · sd / √n, over the finite values.

    Degenerate (no interval) when n < 2 or max - min <= `tol` (default `tie_tolerance(values)`).
    Invariances: order of the values; shifting every value shifts mean and bounds alike; scaling scales
    them; a value duplicated is a new observation here, so pool to one value per seed first.
    """
    vals = np.array([v for v in values if _finite(v)], float)
    n = len(vals)
    if n == 0:
        return MeanCI(None, None, None, 0, None, confidence, True, "no values")
    mean = float(vals.mean())
    if n < 2:
        return MeanCI(mean, None, None, 1, None, confidence, True, f"1 {unit}")
    sd = float(vals.std(ddof=1))
    tol = tie_tolerance(vals) if tol is None else tol
    if float(vals.max() - vals.min()) <= tol:
        return MeanCI(mean, None, None, n, 0.0, confidence, True, f"equal on all {n} {unit}s")
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return MeanCI(mean, mean - half, mean + half, n, sd, confidence)


def format_interval(ci: MeanCI, digits: int = 3, signed: bool = True) -> str:
    """`+0.0071 [+0.0022, +0.012]`; a degenerate interval is never shown as [a, a]:
    `+0.0089 (equal on all 5 seeds; no interval)`, `+0.0089 (1 seed; no interval)`; `—` with no value.
    The spread of such values is not measured, not zero, so no width is claimed."""
    if ci.mean is None:
        return "—"
    text = _fmt(ci.mean, digits, signed)
    if ci.degenerate or ci.lo is None or ci.hi is None:
        return f"{text} ({ci.why}; no interval)"
    return f"{text} [{_fmt(ci.lo, digits, signed)}, {_fmt(ci.hi, digits, signed)}]"


# ----------------------------------------------------------------------------- 2. paired differences


@dataclass(frozen=True)
class PairedDiff:
    """`design - baseline` on the seeds both have a finite value for, and the seeds left out.

    `left_out` maps every other seed of either side to why: "design has no value", "baseline has no
    value", "neither has a value", "not run by the baseline", "not run by the design".
    """

    seeds: tuple[str, ...]
    diffs: tuple[float, ...]
    interval: MeanCI
    left_out: Mapping[str, str]
    tol: float  # tie tolerance from the paired values' scale

    @property
    def n(self) -> int:
        return len(self.seeds)


def paired_differences(
    design: Mapping[str, float | None],
    baseline: Mapping[str, float | None],
    confidence: float = CONFIDENCE,
) -> PairedDiff:
    """Per-seed `design[s] - baseline[s]` over the seeds where both are finite, with a t-interval.

    Works on any split ({seed: val value} or {seed: test value}). Definition: d_s = x_s - y_s for the
    seeds s with both finite; interval = `t_interval(d)` (degenerate when all d_s are equal or n < 2).
    Invariances: adding a constant to both designs' values leaves the d_s unchanged; seed order is
    irrelevant; a seed missing on either side is never silently dropped (it is in `left_out`).
    """
    left: dict[str, str] = {}
    seeds: list[str] = []
    for s in sorted(set(design) | set(baseline), key=_seed_sort_key):
        if s not in baseline:
            left[s] = "not run by the baseline"
        elif s not in design:
            left[s] = "not run by the design"
        else:
            a, b = _finite(design[s]), _finite(baseline[s])
            if a and b:
                seeds.append(s)
            else:
                left[s] = (
                    "neither has a value"
                    if not (a or b)
                    else ("design has no value" if not a else "baseline has no value")
                )
    x = np.array([design[s] for s in seeds], float)
    y = np.array([baseline[s] for s in seeds], float)
    tol = tie_tolerance([*x.tolist(), *y.tolist()])
    d = x - y
    return PairedDiff(tuple(seeds), tuple(d.tolist()), t_interval(d, confidence, tol), left, tol)


# ----------------------------------------------------------------------------- 3. permutation test


@dataclass(frozen=True)
class SignFlipTest:
    """Two-sided paired sign-flip permutation test of mean difference = 0."""

    p: float | None  # None with no differences
    n: int
    exact: bool  # all 2^n flips enumerated; else `flips` random ones
    flips: int
    min_p: float  # the smallest p this n (and method) can give: 2 / 2^n when exact


def min_p_value(n: int, exact_up_to: int = EXACT_UP_TO, n_flips: int = N_FLIPS) -> float:
    """The smallest p-value the sign-flip test can return with n seeds.

    Exact (n <= exact_up_to): 2 / 2^n (only all-same-sign flips can match a difference of constant
    sign: 0.0625 for n = 5, so no 5-seed comparison reaches p < 0.05). Random: 1 / (n_flips + 1).
    After Holm over m comparisons, the smallest adjusted p is min(1, m · min_p).
    """
    if n <= 0:
        return 1.0
    return 2.0 / 2.0**n if n <= exact_up_to else 1.0 / (n_flips + 1)


def sign_flip_test(
    diffs: Sequence[float],
    exact_up_to: int = EXACT_UP_TO,
    n_flips: int = N_FLIPS,
    seed: int = 0,
    tol: float | None = None,
) -> SignFlipTest:
    """Paired permutation test: under H0 each difference's sign is a fair coin.

    Definition: with observed mean m = mean(d), p = share of sign vectors ε in {-1, +1}^n with
    |mean(ε·d)| >= |m| - tol. n <= `exact_up_to`: every one of the 2^n vectors (the observed one
    included), an exact p. Otherwise `n_flips` vectors from `np.random.default_rng(seed)` and
    p = (1 + hits) / (1 + n_flips). `tol` (default `tie_tolerance(d)`) counts float32 near-ties as ties,
    which can only raise p; a float64 slack (`FLOAT64_SLACK`) always applies, so the observed vector
    and its negation count even with tol = 0 (exact p >= 2 / 2^n). All differences zero gives p = 1.
    A zero difference flips to itself, so it doubles the vectors as extreme as the observed one:
    [1, 1, 1, 1, 0] gives 4 / 32.
    Invariances: order of the differences; negating them all (two-sided); scaling them (exactly with
    tol = 0; the default tolerance is absolute below 1, see `tie_tolerance`). Reproducible
    for a given seed.
    """
    d = np.array([v for v in diffs if _finite(v)], float)
    n = len(d)
    if n == 0:
        return SignFlipTest(None, 0, True, 0, 1.0)
    tol = tie_tolerance(d) if tol is None else tol
    scale = float(np.abs(d).max())
    if scale > 1e100:  # sums of values near float64's limit overflow to inf: test d / scale (same p)
        d, tol = d / scale, tol / scale
    # compare sums (n · mean): |sum(ε·d)| >= |sum(d)| - n·tol, with float64 slack so that the
    # observed vector, computed by a different summation order, always counts as extreme
    target = abs(float(d.sum())) - n * tol - FLOAT64_SLACK * float(np.abs(d).sum())
    min_p = min_p_value(n, exact_up_to, n_flips)
    if n <= exact_up_to:
        total, hits = 2**n, 0
        bits = np.arange(n)
        chunk = 1 << 16
        for start in range(0, total, chunk):
            idx = np.arange(start, min(start + chunk, total), dtype=np.int64)
            signs = 1.0 - 2.0 * ((idx[:, None] >> bits) & 1)
            hits += int(np.count_nonzero(np.abs(signs @ d) >= target))
        return SignFlipTest(hits / total, n, True, total, min_p)
    rng = np.random.default_rng(seed)
    hits = 0
    per = max(1, 1_000_000 // n)
    for start in range(0, n_flips, per):
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(min(per, n_flips - start), n))
        hits += int(np.count_nonzero(np.abs(signs @ d) >= target))
    return SignFlipTest((1 + hits) / (1 + n_flips), n, False, n_flips, min_p)


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    Definition: sort the m valid p-values ascending, p_(1) <= ... <= p_(m); adjusted
    p~_(i) = min(1, max_{j<=i} (m - j + 1) · p_(j)). Reject at level α where p~ <= α; this controls the
    family-wise error rate at α. None / NaN entries stay None and do not count in m (no test was run).
    Invariances: permuting the input permutes the output alike; adjusted p >= raw p; monotone in the
    raw p (a smaller raw p never gets a larger adjusted p); capped at 1.
    """
    valid = [(i, float(p)) for i, p in enumerate(p_values) if _finite(p)]
    m = len(valid)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (i, p) in enumerate(sorted(valid, key=lambda ip: ip[1])):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def format_p(p: float | None, adjusted: float | None = None) -> str:
    """`p = 0.0625` or `p = 0.0625 (Holm 0.312)`; `—` when no test was run. Three significant digits:
    two would print the 5-seed floor 0.0625 as 0.062 and 0.0496 as 0.05."""
    if p is None:
        return "—"
    text = f"p = {p:.3g}"
    return text if adjusted is None else f"{text} (Holm {adjusted:.3g})"


# ----------------------------------------------------------------------------- 5. P(X > Y), seeds won


@dataclass(frozen=True)
class ProbImprovement:
    """rliable's probability of improvement P(X > Y) with a stratified percentile-bootstrap interval."""

    p: float | None
    lo: float | None
    hi: float | None
    n_x: int
    n_y: int
    n_boot: int
    confidence: float = CONFIDENCE

    @property
    def degenerate(self) -> bool:
        """Every resample gave the same value (e.g. disjoint samples: always 1): no interval."""
        return self.lo is None or self.hi is None or self.hi - self.lo <= 1e-12


def prob_improvement(
    x: Iterable[float | None],
    y: Iterable[float | None],
    maximize: bool,
    n_boot: int = N_BOOT,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    tol: float | None = None,
) -> ProbImprovement:
    """P(X > Y) as rliable defines it (Agarwal et al. 2021), on one task, with a bootstrap interval.

    Definition: over all pairs (i, j) of X's runs and Y's runs (here: one value per seed, unpaired),
    P = mean([x_i better than y_j] + 0.5 · [x_i ties y_j]); "better" is ">" when `maximize`, "<"
    otherwise; a tie is |x_i - y_j| <= tol (default `tie_tolerance` of both samples, float32 round-off,
    as everywhere else here). This is the Mann-Whitney U statistic over n_x · n_y.
    Interval: percentile bootstrap, stratified (X's and Y's runs resampled independently with
    replacement), `n_boot` resamples from `np.random.default_rng(seed)`.
    Invariances: any strictly increasing transform of the metric applied to both; order of the runs;
    P(X > Y) + P(Y > X) = 1. Reproducible for a given seed.
    """
    xs = np.array([v for v in x if _finite(v)], float)
    ys = np.array([v for v in y if _finite(v)], float)
    if not len(xs) or not len(ys):
        return ProbImprovement(None, None, None, len(xs), len(ys), 0, confidence)
    tol = tie_tolerance([*xs.tolist(), *ys.tolist()]) if tol is None else tol
    sign = 1.0 if maximize else -1.0
    gap = sign * (xs[:, None] - ys[None, :])
    score = np.where(np.abs(gap) <= tol, 0.5, (gap > 0).astype(float))
    p = float(score.mean())
    nx, ny = len(xs), len(ys)
    if n_boot < 1:
        return ProbImprovement(p, None, None, nx, ny, 0, confidence)
    rng = np.random.default_rng(seed)
    wx = np.stack([np.bincount(rng.integers(0, nx, nx), minlength=nx) for _ in range(n_boot)])
    wy = np.stack([np.bincount(rng.integers(0, ny, ny), minlength=ny) for _ in range(n_boot)])
    boot = np.einsum("bi,ij,bj->b", wx, score, wy) / (nx * ny)
    a = 1 - confidence
    lo, hi = np.quantile(boot, [a / 2, 1 - a / 2])
    return ProbImprovement(p, float(lo), float(hi), nx, ny, n_boot, confidence)


def format_prob_improvement(pi: ProbImprovement, digits: int = 2) -> str:
    """`0.84 [0.56, 1]`, or `1 (every resample gave 1; no interval)`; `—` when undefined."""
    if pi.p is None:
        return "—"
    text = f"{pi.p:.{digits}g}"
    if pi.degenerate:
        return f"{text} (every resample gave {text}; no interval)"
    return f"{text} [{pi.lo:.{digits}g}, {pi.hi:.{digits}g}]"


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for a binomial proportion k of n: the beta quantiles
    [B(α/2; k, n-k+1), B(1-α/2; k+1, n-k)], with 0 at k = 0 and 1 at k = n; (0, 1) when n = 0.
    Conservative: coverage is at least `confidence` for every true proportion. Symmetric: the interval
    for n-k is one minus the interval for k."""
    if n <= 0:
        return 0.0, 1.0
    a = 1 - confidence
    lo = 0.0 if k <= 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k >= n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


@dataclass(frozen=True)
class SeedsWon:
    """Within the pairing: on how many seeds the design beat the baseline (ties apart), with the exact
    Clopper-Pearson interval of that share. This is a sign-test statistic, not rliable's P(X > Y)."""

    wins: int
    ties: int
    n: int  # paired seeds, ties included
    lo: float
    hi: float
    confidence: float = CONFIDENCE

    @property
    def decided(self) -> int:
        return self.n - self.ties

    @property
    def share(self) -> float | None:
        return self.wins / self.decided if self.decided else None


def seeds_won(
    diffs: Sequence[float], maximize: bool, confidence: float = CONFIDENCE, tol: float | None = None
) -> SeedsWon:
    """Share of paired seeds on which the design is better, ties (|d| <= tol) set apart.

    Definition: wins = #{d_s > tol} (maximize) or #{d_s < -tol}; share = wins / (n - ties); interval:
    `clopper_pearson(wins, n - ties)`. 5 of 5 gives [0.478, 1].
    Invariances: order and scale of the differences; flipping the direction swaps wins and losses.
    """
    d = np.array([v for v in diffs if _finite(v)], float)
    tol = tie_tolerance(d) if tol is None else tol
    better = d > tol if maximize else d < -tol
    ties = int(np.count_nonzero(np.abs(d) <= tol))
    wins = int(np.count_nonzero(better))
    lo, hi = clopper_pearson(wins, len(d) - ties, confidence)
    return SeedsWon(wins, ties, len(d), lo, hi, confidence)


def format_seeds_won(w: SeedsWon) -> str:
    """`5 of 5 seeds won [0.48, 1]`, `3 of 4 seeds won, 1 tied [0.19, 0.99]`; `—` with none decided."""
    if not w.decided:
        return "—" if not w.n else f"all {w.n} seeds tied"
    tied = f", {w.ties} tied" if w.ties else ""
    return f"{w.wins} of {w.decided} seeds won{tied} [{w.lo:.2g}, {w.hi:.2g}]"


# ----------------------------------------------------------------------------- one comparison, a family


@dataclass(frozen=True)
class Comparison:
    """A design against the baseline: paired difference, permutation p (raw and Holm-adjusted within its
    family), seeds won, and P(X > Y) over both designs' seeds."""

    paired: PairedDiff
    test: SignFlipTest
    wins: SeedsWon
    prob: ProbImprovement
    p_adjusted: float | None = None
    family: int = 1  # m, the number of comparisons Holm adjusted over

    @property
    def p(self) -> float | None:
        return self.test.p


def compare(
    design: Mapping[str, float | None],
    baseline: Mapping[str, float | None],
    maximize: bool,
    confidence: float = CONFIDENCE,
    exact_up_to: int = EXACT_UP_TO,
    n_flips: int = N_FLIPS,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Comparison:
    """Everything the report says about one design against the baseline on one split.

    `design` and `baseline` are {seed: value} (one per seed: `SeedPool.values`). The difference, test
    and wins use the paired seeds; P(X > Y) uses every finite seed value of each side (rliable's
    definition is unpaired). `p_adjusted` is the raw p until `compare_family` adjusts it.
    """
    pd = paired_differences(design, baseline, confidence)
    test = sign_flip_test(pd.diffs, exact_up_to, n_flips, seed, pd.tol)
    wins = seeds_won(pd.diffs, maximize, confidence, pd.tol)
    prob = prob_improvement(design.values(), baseline.values(), maximize, n_boot, confidence, seed)
    return Comparison(pd, test, wins, prob, test.p, 1)


def compare_family(
    designs: Mapping[K, Mapping[str, float | None]],
    baseline: K,
    maximize: bool,
    **kwargs: float,
) -> dict[K, Comparison]:
    """`compare` every design but the baseline against it, with Holm-adjusted p over the family.

    The family is the comparisons that produced a p (at least one paired seed); its size is each
    result's `family`. Keyword arguments go to `compare`. Insertion order of `designs` is kept.
    """
    out = {k: compare(v, designs[baseline], maximize, **kwargs) for k, v in designs.items() if k != baseline}
    keys = list(out)
    adjusted = holm([out[k].p for k in keys])
    m = sum(p is not None for p in adjusted)
    return {k: replace(out[k], p_adjusted=a, family=m) for k, a in zip(keys, adjusted, strict=True)}


# ----------------------------------------------------------------------------- 6. power / resolution


@dataclass(frozen=True)
class Resolution:
    """The smallest difference a comparison with these seeds and this test set can resolve."""

    n_seeds: int
    n_test: int | None
    granularity: float | None  # one test sample: 1 / n_test (accuracy-like metrics)
    mdd: float | None  # t-based minimum detectable paired difference at alpha / m and `power`
    alpha: float
    n_comparisons: int
    power: float
    min_p: float  # the sign-flip test's smallest p with n_seeds
    min_p_adjusted: float  # min(1, m · min_p): the smallest Holm-adjusted p in the family
    sentence: str

    @property
    def threshold(self) -> float | None:
        """The larger of the granularity and the detectable difference (None when neither is known)."""
        known = [v for v in (self.granularity, self.mdd) if v is not None]
        return max(known) if known else None

    @property
    def reachable(self) -> bool:
        """Whether any difference at all can reach significance after the family's correction."""
        return self.min_p_adjusted <= self.alpha


def paired_t_power(effect: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided one-sample (paired) t-test at level `alpha` with n differences whose true
    mean is `effect` standard deviations: P(|T| > t_{1-α/2, n-1}) with T noncentral t(n-1, effect·√n).
    Equals `alpha` at effect 0; increasing in |effect| and in n."""
    if n < 2:
        return float("nan")
    df, nc = n - 1, abs(effect) * math.sqrt(n)
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    # the lower tail as the upper tail of -nc: scipy's nct.cdf gives NaN far in the tail
    upper, lower = stats.nct.sf(crit, df, nc), stats.nct.sf(crit, df, -nc)
    return float(np.nan_to_num(upper, nan=1.0) + np.nan_to_num(lower, nan=0.0))


def min_detectable_difference(
    n: int, sd: float | None, alpha: float = ALPHA, n_comparisons: int = 1, power: float = POWER
) -> float | None:
    """The smallest true paired mean difference a two-sided paired t-test at α' = α / m (Bonferroni,
    Holm's first step) detects with probability `power`, given the sd of the paired differences.

    Exact: δ · sd with δ solving `paired_t_power(δ, n, α') = power` (noncentral t, as G*Power and
    statsmodels' TTestPower). The textbook shortcut (t_{1-α'/2} + t_{power}) · sd / √n understates it
    at few seeds (by 5 % at n = 3, 14 % at n = 2). n = 5, α = 0.05, power 0.8: 1.682 · sd.
    None when n < 2 or sd is unknown, zero or not finite (all differences equal: the formula would
    claim 0). Scales with sd; falls roughly as 1 / √n.
    """
    if n < 2 or sd is None or not math.isfinite(sd) or sd <= 0:
        return None
    a = alpha / max(1, n_comparisons)
    if not 0 < a < power < 1:
        raise ValueError(f"need 0 < alpha / m < power < 1, got {a:g} and {power:g}")
    # bracket [0, hi]: power(0) = α' < power; start from the shortcut and double until it is reached
    hi = (float(stats.t.ppf(1 - a / 2, n - 1)) + float(stats.t.ppf(power, n - 1))) / math.sqrt(n)
    lo = 0.0
    while paired_t_power(hi, n, a) < power:
        lo, hi = hi, 2 * hi
    effect = optimize.brentq(lambda e: paired_t_power(e, n, a) - power, lo, hi, xtol=1e-10)
    return float(effect) * sd


def resolution(
    n_seeds: int,
    n_test: int | None = None,
    sd_diff: float | None = None,
    alpha: float = ALPHA,
    n_comparisons: int = 1,
    power: float = POWER,
    exact_up_to: int = EXACT_UP_TO,
    n_flips: int = N_FLIPS,
) -> Resolution:
    """What the comparison can resolve, and one sentence saying so.

    Three floors: (a) one test sample, 1 / `n_test` (pass n_test only for accuracy-like metrics, whose
    values move in steps of one sample); (b) `min_detectable_difference` at α / m and `power` from the
    observed sd of paired differences; (c) the exact permutation floor: with n seeds no p can fall below
    `min_p_value(n)`, so when m · min_p > α no difference of any size can be significant after Holm.
    The sentence reads "With 6 seeds and 113 test samples, differences under 0.012 are not resolvable
    (the smallest paired difference a t-test at alpha 0.05 detects with power 0.8)." (threshold = max
    of (a) and (b), the parenthesis naming which), followed by the floor when (c) bites.
    """
    m = max(1, n_comparisons)
    gran = 1.0 / n_test if n_test else None
    mdd = min_detectable_difference(n_seeds, sd_diff, alpha, m, power)
    min_p = min_p_value(n_seeds, exact_up_to, n_flips)
    min_adj = min(1.0, m * min_p)
    seeds = f"{n_seeds} seed{'s' if n_seeds != 1 else ''}"
    what = f"With {seeds}" + (f" and {n_test} test samples" if n_test else "")
    known = [v for v in (gran, mdd) if v is not None]
    if known:
        text = f"{what}, differences under {max(known):.2g} are not resolvable"
        if mdd is not None and mdd >= (gran or 0.0):
            level = f"{alpha:g}" + (f" / {m}" if m > 1 else "")
            text += (
                f" (the smallest paired difference a t-test at alpha {level} detects with power {power:g})"
            )
        else:
            text += " (one test sample)"
    else:
        text = (
            f"{what}, the smallest resolvable difference cannot be estimated"
            " (no spread in the paired differences)"
        )
    if min_adj > alpha:
        family = f" after Holm over {m} comparisons" if m > 1 else ""
        smallest = f"{min_p:.3g}" + (f" (x{m} = {min_adj:.2g})" if m > 1 else "")
        text += (
            f"; no difference of any size can reach p <= {alpha:g}{family}, as the sign-flip test's "
            f"smallest p with {seeds} is {smallest}"
        )
    return Resolution(n_seeds, n_test, gran, mdd, alpha, m, power, min_p, min_adj, text + ".")


# ----------------------------------------------------------------------------- 7. failures as a column


@dataclass(frozen=True)
class FailureScore:
    """A design's ranking score with failed seeds at chance level, and its failure rate."""

    per_seed: Mapping[str, float]  # the value each seed scores, chance where it failed
    failed: tuple[str, ...]  # seeds with no finite value
    score: MeanCI  # mean over every seed (failed ones at chance), with its t-interval
    rate_lo: float
    rate_hi: float
    chance: float
    confidence: float = CONFIDENCE

    @property
    def n(self) -> int:
        return len(self.per_seed)

    @property
    def k(self) -> int:
        return len(self.failed)

    @property
    def rate(self) -> float | None:
        return self.k / self.n if self.n else None


def score_with_failures(
    values: Mapping[str, float | None], chance: float, confidence: float = CONFIDENCE
) -> FailureScore:
    """Every seed counts: one that never produced a finite val metric scores the task's `chance` level.

    Definition: v_s = values[s] if finite else `chance`; score = `t_interval(v)`; failure rate k / n
    with `clopper_pearson(k, n)`. `values` should be each seed's val metric at its selected checkpoint
    (a run that diverged after its best checkpoint keeps that checkpoint's value). A failure lowers the
    mean by (value it would have had - chance) / n instead of demoting the design below every clean one.
    `chance` is the task's chance level (1 / classes for accuracy); for a metric without one (a loss),
    pass the worst value observed in the report. It is not compared with the design's own values: a
    design worse than chance gains from a failure (its clean values are below what a failure scores).
    Invariances: seed order; n counts seeds, not runs; with no failures the score is the plain mean.
    """
    per_seed = {s: float(v) if _finite(v) else float(chance) for s, v in values.items()}
    failed = tuple(s for s, v in values.items() if not _finite(v))
    lo, hi = clopper_pearson(len(failed), len(per_seed), confidence)
    score = t_interval(per_seed.values(), confidence)
    return FailureScore(per_seed, failed, score, lo, hi, float(chance), confidence)


def format_failures(f: FailureScore) -> str:
    """`0 of 5 [0, 0.52]`, `1 of 5 (seed 3) [0.0051, 0.72]`: the failure-rate column."""
    if not f.n:
        return "—"
    named = f" (seed{'s' if f.k > 1 else ''} {', '.join(f.failed)})" if f.k else ""
    return f"{f.k} of {f.n}{named} [{f.rate_lo:.2g}, {f.rate_hi:.2g}]"


__all__ = [
    "Comparison",
    "FailureScore",
    "MeanCI",
    "PairedDiff",
    "ProbImprovement",
    "Resolution",
    "RunRecord",
    "SeedPool",
    "SeedValue",
    "SeedsWon",
    "SignFlipTest",
    "clopper_pearson",
    "compare",
    "compare_family",
    "format_failures",
    "format_interval",
    "format_p",
    "format_prob_improvement",
    "format_seeds_won",
    "holm",
    "min_detectable_difference",
    "min_p_value",
    "paired_differences",
    "paired_t_power",
    "pool_seeds",
    "prob_improvement",
    "resolution",
    "score_with_failures",
    "seeds_won",
    "sign_flip_test",
    "t_interval",
    "tie_tolerance",
]
