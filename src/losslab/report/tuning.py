"""Tuned comparison at equal budget (`--tune optimizer.lr`).

Each design (the other swept params) gets the tuned values with the best mean val metric over
its seeds, under the same rule as the design ranking (one value per seed; a seed without a finite
val value scores the task's chance level); its test metric is then the honest estimate. This is the
protocol of "A Metric Learning Reality Check" (Musgrave et al., 2020): equal budget per loss,
selection on val, report on test. The budget (configs tried per design) is stated, because a
design given more configs to choose from gets an optimistic val value.
"""

from __future__ import annotations

from collections.abc import Sequence

from losslab.report.designs import Design, group_designs, varying_params
from losslab.report.ranking import Chance, DesignResult, TaskMetric, evaluate, rank
from losslab.report.runs import ReportError, RunData


def check_tune_keys(runs: Sequence[RunData], tune: Sequence[str]) -> list[str]:
    """The tuned params, each one that varies across the runs; a clear error otherwise."""
    varying = varying_params(runs)
    if "seed" in tune:
        raise ReportError(
            "--tune seed: seeds are never tuned; they are pooled into each design's mean and interval, "
            "and pair designs with the baseline. Tune a hyperparameter instead, e.g. --tune optimizer.lr."
        )
    bad = [k for k in tune if k not in varying]
    if bad:
        shown = ", ".join(varying) or "none"
        raise ReportError(
            f"--tune {' '.join(bad)}: {'these params do' if len(bad) > 1 else 'this param does'} not vary "
            f"across these runs, so there is nothing to tune. Params that vary here: {shown}."
        )
    return list(dict.fromkeys(tune))


def tune_designs(
    designs: Sequence[Design], tune_keys: Sequence[str], metric: TaskMetric, chance: Chance
) -> list[DesignResult]:
    """Per design, the config (values of `tune_keys`) chosen on mean val; all configs kept for the page."""
    out = []
    for design in designs:
        configs = [evaluate(c, metric, chance) for c in group_designs(design.runs, tune_keys)]
        configs = rank(configs, metric)
        chosen = configs[0]
        out.append(
            DesignResult(
                Design(design.values, chosen.design.runs, design.label),
                chosen.scores,
                chance,
                tuned=dict(chosen.design.values),
                configs=configs,
            )
        )
    return out


def budget_sentence(budgets: dict[str, int], tune_keys: Sequence[str]) -> str:
    """`4 configs of optimizer.lr tried per design (equal budget)`, or the budgets when they differ."""
    what = ", ".join(tune_keys)
    values = set(budgets.values())
    if len(values) == 1:
        n = values.pop()
        return f"Budget: {n} config{'s' if n != 1 else ''} of {what} tried per design (equal budget)."
    shown = "; ".join(f"{label}: {n}" for label, n in budgets.items())
    return (
        f"Budgets differ: configs of {what} tried per design ({shown}). A design with more configs has "
        "more chances of a lucky val value; compare test values with that in mind."
    )
