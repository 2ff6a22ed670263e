"""Which design is best: task metrics, failed runs, ranking on val, pairing against a baseline.

Designs are ranked on a loss-independent task metric read on validation data (`best/val_<m>`,
the value at the checkpoint selected on val, else the last `val/<m>`); `test/<m>` is shown beside
it and never used to choose. A run that did not finish, diverged, or has no finite val value
counts as failed: a design with any failed run ranks below every design whose runs all finished,
whatever its other runs scored, so a design cannot win by dropping its blow-ups from the mean.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from losslab.report.designs import Design
from losslab.report.runs import ReportError, RunData
from losslab.report.stats import Interval, Paired, mean_ci, paired
from losslab.vocab import HIGHER_IS_BETTER, TASK_METRICS, primary_metric, task_of, tasks_of

#: metric -> (higher is better, the first task that logs it), from the one declaration in losslab.vocab.
#: A metric may belong to several tasks (accuracy: binary and multiclass): `tasks_of` lists them all.
METRICS: dict[str, tuple[bool, str]] = {
    name: (HIGHER_IS_BETTER[name], task_of(name) or task)
    for task, names in TASK_METRICS.items()
    for name in names
}
PRIMARY = {task: primary_metric(task) for task in TASK_METRICS}


@dataclass(frozen=True)
class TaskMetric:
    """The yardstick: a task metric, or (runs without a `task` tag) each design's own val loss."""

    name: str
    maximize: bool
    task: str | None  # None: the val-loss fallback for runs that log no task metrics

    @property
    def val_keys(self) -> tuple[str, str]:
        """Where a run's val value is read: the selected checkpoint's value, else the last one."""
        if self.task is None:
            return "best/val_loss", "final/val_loss"
        return f"best/val_{self.name}", f"val/{self.name}"

    @property
    def test_key(self) -> str:
        return f"test/{self.name}"

    @property
    def curve_key(self) -> str:
        return f"val/{self.name}"

    @property
    def direction(self) -> str:
        return "higher is better" if self.maximize else "lower is better"


LOSS_FALLBACK = TaskMetric("loss", False, None)


def resolve_metric(runs: Sequence[RunData], name: str | None) -> TaskMetric:
    """`name`, checked against the runs' `task` tag; None: the task's primary metric (even when no
    run logged it: a sweep whose runs all failed still gets a report saying so)."""
    tasks = Counter(r.tags["task"] for r in runs if r.tags.get("task"))
    if len(tasks) > 1:
        mix = ", ".join(f"{t} ({n} runs)" for t, n in sorted(tasks.items()))
        raise ReportError(
            f"These runs mix tasks ({mix}): their metrics cannot be ranked together. Report one task at a "
            "time (--task binary, --task multiclass or --task regression), one study (--sweep "
            "PARENT_RUN_ID) or one experiment (--experiment NAME)."
        )
    task = next(iter(tasks), None)
    if task is not None and task not in PRIMARY:
        raise ReportError(f"Unknown task tag {task!r} on these runs; known tasks: {', '.join(PRIMARY)}.")
    explicit = name is not None
    if name is None:
        if task is None:
            return LOSS_FALLBACK
        name = PRIMARY[task]
    if name not in METRICS:
        raise ReportError(f"Unknown metric {name!r}; accepted: {', '.join(METRICS)}.")
    maximize = METRICS[name][0]
    owners = tasks_of(name)
    if task is not None and task not in owners:
        fitting = ", ".join(TASK_METRICS[task])
        raise ReportError(
            f"--metric {name} is a {owners[0]} metric but these runs are {task} (tag task={task}); "
            f"{task} metrics: {fitting} ({name} is logged by {' and '.join(owners)} runs)."
        )
    metric_task = task_of(name, task)
    assert metric_task is not None
    metric = TaskMetric(name, maximize, metric_task)
    if explicit and not any(k in r.metrics for r in runs for k in metric.val_keys):
        raise ReportError(
            f"No run here logged {metric.val_keys[0]} or {metric.val_keys[1]}, so they cannot be ranked on "
            f"{name}. Runs from before task metrics were logged carry no `task` tag: omit --metric to rank "
            "them on their val loss."
        )
    return metric


@dataclass
class RunScore:
    """One run on the yardstick: its val and test values, and why it failed (None when it did not)."""

    run: RunData
    val: float | None
    test: float | None
    failure: str | None


def score_run(run: RunData, metric: TaskMetric) -> RunScore:
    val = next((run.metrics[k] for k in metric.val_keys if k in run.metrics), None)
    test = run.metrics.get(metric.test_key)
    if test is not None and not math.isfinite(test):
        test = None
    failure = None
    if run.status != "FINISHED":
        failure = run.status.lower()
    elif run.tags.get("outcome") == "diverged":
        failure = "diverged"
    elif val is None:
        failure = f"no {metric.curve_key}"
    elif not math.isfinite(val):
        failure = f"non-finite {metric.curve_key}"
    elif not math.isfinite(run.metrics.get("final/val_loss", 0.0)):
        failure = "non-finite val loss"
    return RunScore(run, None if failure else val, None if failure else test, failure)


@dataclass
class DesignResult:
    """A design (or, with --tune, its chosen config) on the yardstick."""

    design: Design
    scores: list[RunScore]
    tuned: dict[str, str | None] | None = None  # the chosen values of the tuned params
    configs: list[DesignResult] = field(default_factory=list)  # every config tried, ranked
    paired: Paired | None = None

    @property
    def label(self) -> str:
        return self.design.label

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def failures(self) -> Counter[str]:
        return Counter(s.failure for s in self.scores if s.failure)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @cached_property
    def val(self) -> Interval:
        return mean_ci(s.val for s in self.scores)

    @cached_property
    def test(self) -> Interval:
        return mean_ci(s.test for s in self.scores)

    @property
    def clean(self) -> bool:
        """Every run finished with a finite val value: may be highlighted as best."""
        return self.failed == 0 and self.val.mean is not None

    def per_seed(self, which: str) -> dict[str, float]:
        """{seed: value} over the runs that did not fail; reruns of a seed are averaged."""
        by_seed: dict[str, list[float]] = {}
        for s in self.scores:
            value = s.val if which == "val" else s.test
            if value is not None:
                by_seed.setdefault(str(s.run.seed), []).append(value)
        return {seed: float(np.mean(v)) for seed, v in by_seed.items()}

    @property
    def seeds(self) -> set[str]:
        """Every seed the design ran, failed or not."""
        return {str(s.run.seed) for s in self.scores}

    def seed_gaps(self, which: str) -> dict[str, str]:
        """{seed: why it has no `which` value} over the design's seeds that lack one: "failed"
        (every run of the seed failed) or "no <which> value" (a run finished without one)."""
        have = self.per_seed(which)
        failed = {seed: True for seed in self.seeds}
        for s in self.scores:
            failed[str(s.run.seed)] &= bool(s.failure)
        return {
            seed: "failed" if failed[seed] else f"no {which} value" for seed in self.seeds if seed not in have
        }


def evaluate(design: Design, metric: TaskMetric) -> DesignResult:
    return DesignResult(design, [score_run(r, metric) for r in design.runs])


def rank(results: Sequence[DesignResult], metric: TaskMetric) -> list[DesignResult]:
    """Clean designs first, by mean val value in the metric's direction; then designs with failed
    runs (by the same mean over their other runs); designs with no val value at all last."""

    def key(r: DesignResult) -> tuple[bool, bool, float]:
        mean = r.val.mean
        return (not r.clean, mean is None, 0.0 if mean is None else (-mean if metric.maximize else mean))

    return sorted(results, key=key)


def pair(r: DesignResult, base: DesignResult, on: str, maximize: bool) -> Paired:
    """`r` against `base` on their shared seeds' `on` values, counting every seed of `r` left out
    and why (its runs failed, the baseline's failed, ...): a failed seed must never vanish from a
    difference that then looks as good as a complete one."""
    mine = r.per_seed(on)
    unpaired = Counter(r.seed_gaps(on).values())
    theirs, base_seeds, base_gaps = base.per_seed(on), base.seeds, base.seed_gaps(on)
    for seed in mine.keys() - theirs.keys():
        gap = base_gaps.get(seed, "")
        if seed not in base_seeds:
            unpaired["not in baseline"] += 1
        else:
            unpaired["baseline failed" if gap == "failed" else f"baseline has {gap}"] += 1
    result = paired(mine, theirs, maximize)
    return replace(result, of=len(r.seeds), unpaired=dict(sorted(unpaired.items())))
