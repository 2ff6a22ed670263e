"""The whole comparison of one report: group runs into designs, tune (optionally), rank, pick the
best and pair every design with the baseline.

Its own module so that `ranking` (scores of one design) and `tuning` (the equal-budget choice over a
tuned key, which ranks) each import only downwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from losslab.report.designs import design_params, group_designs, match_design
from losslab.report.ranking import DesignResult, TaskMetric, evaluate, pair, rank
from losslab.report.runs import ReportError, RunData
from losslab.report.tuning import check_tune_keys, tune_designs


@dataclass
class Analysis:
    """Everything the report says about which design is best, before formatting."""

    metric: TaskMetric
    keys: list[str]  # params that define a design
    tune_keys: list[str]
    ranked: list[DesignResult]
    best: DesignResult | None  # None when no design has all its runs finished
    baseline: DesignResult
    paired_on: str  # "test" or "val": the value the paired differences compare
    runs: list[RunData]

    @property
    def no_heldout(self) -> int:
        """Runs on data with no held-out split (tag heldout=false): their val and test are the train set."""
        return sum(r.tags.get("heldout") == "false" for r in self.runs)

    @property
    def budgets(self) -> dict[str, int]:
        return {r.label: len(r.configs) for r in self.ranked} if self.tune_keys else {}


def analyse(
    runs: Sequence[RunData],
    metric: TaskMetric,
    tune: Sequence[str] = (),
    baseline: str | None = None,
) -> Analysis:
    """Group, (tune,) rank, choose the best and pair every design with the baseline."""
    tune_keys = check_tune_keys(runs, tune)
    keys = design_params(runs, exclude=tune_keys)
    designs = group_designs(runs, keys)
    if tune_keys:
        results = tune_designs(designs, tune_keys, metric)
    else:
        results = [evaluate(d, metric) for d in designs]
    ranked = rank(results, metric)
    best = ranked[0] if ranked and ranked[0].clean else None
    if baseline is not None:
        try:
            chosen = match_design([r.design for r in ranked], baseline)
        except ValueError as exc:
            raise ReportError(str(exc)) from None
        base = next(r for r in ranked if r.design is chosen)
    else:
        base = best or ranked[0]
    on = "test" if base.per_seed("test") else "val"
    for r in ranked:
        r.paired = None if r is base else pair(r, base, on, metric.maximize)
    return Analysis(metric, keys, list(tune_keys), ranked, best, base, on, list(runs))

