"""The whole comparison of one report: group runs into designs, tune (optionally), rank, pick the
best and compare every design with the baseline, paired by seed on val and on test.

Its own module so that `ranking` (scores of one design) and `tuning` (the equal-budget choice over a
tuned key, which ranks) each import only downwards.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from losslab.report import inference as inf
from losslab.report.designs import design_params, group_designs, match_design
from losslab.report.ranking import (
    PER_CLASS,
    Chance,
    DesignResult,
    RunScore,
    TaskMetric,
    chance_level,
    evaluate,
    rank,
    score_run,
)
from losslab.report.runs import ReportError, RunData
from losslab.report.tuning import check_tune_keys, tune_designs


@dataclass
class Analysis:
    """Everything the report says about which design is best, before formatting."""

    metric: TaskMetric
    keys: list[str]  # params that define a design
    tune_keys: list[str]
    ranked: list[DesignResult]
    best: DesignResult | None  # None when no design has a finite val value on any seed
    baseline: DesignResult
    paired_on: str  # "test" or "val": the split of the P(X > Y) and seeds-won columns and the power
    runs: list[RunData]
    chance: Chance
    resolution: inf.Resolution | None = None  # None with a single design (nothing to compare)
    n_test: int | None = None  # test rows per run, when recorded and the same for every run

    @property
    def no_heldout(self) -> int:
        """Runs on data with no held-out split (tag heldout=false): their val and test are the train set."""
        return sum(r.tags.get("heldout") == "false" for r in self.runs)

    @property
    def budgets(self) -> dict[str, int]:
        return {r.label: len(r.configs) for r in self.ranked} if self.tune_keys else {}

    @property
    def family(self) -> int:
        """m: the comparisons against the baseline that Holm adjusts over (per split)."""
        return sum(r.cmp_test is not None for r in self.ranked)

    def duplicates(self) -> list[tuple[DesignResult, RunScore]]:
        """Every run dropped as a rerun of a seed already counted, with its design (configs included)."""
        out = []
        for r in self.ranked:
            for c in r.configs or [r]:
                out += [(r, s) for s in c.duplicates]
        return out


def common_test_size(runs: Sequence[RunData]) -> int | None:
    """The runs' test size when every run that recorded one recorded the same; else None."""
    sizes = Counter(r.n_test for r in runs if r.n_test)
    return next(iter(sizes)) if len(sizes) == 1 else None


def compare_all(
    ranked: Sequence[DesignResult], base: DesignResult, metric: TaskMetric, paired_on: str
) -> None:
    """Each design against the baseline on val and on test, Holm-adjusted within each split."""
    others = [r for r in ranked if r is not base]
    for which in ("val", "test"):
        family = {i: r.per_seed(which) for i, r in enumerate(others)}
        family[-1] = base.per_seed(which)
        # P(X > Y) is shown on the paired split only: no bootstrap for the other one
        boot = {} if which == paired_on else {"n_boot": 0}
        result = inf.compare_family(family, -1, metric.maximize, **boot)
        for i, r in enumerate(others):
            setattr(r, f"cmp_{which}", result[i])
    base.cmp_val = base.cmp_test = None


def power(a: Analysis) -> inf.Resolution | None:
    """What this comparison can resolve on the paired split: median paired seeds and median sd of the
    paired differences over the family; the test size only for accuracy-like metrics."""
    cmps = [getattr(r, f"cmp_{a.paired_on}") for r in a.ranked]
    cmps = [c for c in cmps if c is not None and c.paired.n]
    if not cmps:
        return None
    n = int(statistics.median(c.paired.n for c in cmps))
    sds = [c.paired.interval.sd for c in cmps if c.paired.interval.sd]
    sd = statistics.median(sds) if sds else None
    n_test = a.n_test if a.metric.name in PER_CLASS and a.paired_on == "test" else None
    return inf.resolution(n, n_test, sd, n_comparisons=a.family)


def analyse(
    runs: Sequence[RunData],
    metric: TaskMetric,
    tune: Sequence[str] = (),
    baseline: str | None = None,
) -> Analysis:
    """Group, (tune,) rank, choose the best and compare every design with the baseline."""
    tune_keys = check_tune_keys(runs, tune)
    keys = design_params(runs, exclude=tune_keys)
    designs = group_designs(runs, keys)
    scores = [score_run(r, metric) for r in runs]
    # the worst value of a run that did not fail: a diverged run's checkpoint can be astronomically bad
    # (an rmse of 1.8e308), which would make every failed seed dominate its design's mean
    clean = [s.val for s in scores if s.failure is None]
    chance = chance_level(metric, runs, clean or [s.val for s in scores])
    if tune_keys:
        results = tune_designs(designs, tune_keys, metric, chance)
    else:
        results = [evaluate(d, metric, chance) for d in designs]
    ranked = rank(results, metric)
    best = ranked[0] if ranked and ranked[0].has_value else None
    if baseline is not None:
        try:
            chosen = match_design([r.design for r in ranked], baseline)
        except ValueError as exc:
            raise ReportError(str(exc)) from None
        base = next(r for r in ranked if r.design is chosen)
    else:
        base = best or ranked[0]
    on = "test" if any(v is not None for v in base.per_seed("test").values()) else "val"
    compare_all(ranked, base, metric, on)
    a = Analysis(metric, keys, list(tune_keys), ranked, best, base, on, list(runs), chance)
    a.n_test = common_test_size(runs)
    a.resolution = power(a)
    return a
