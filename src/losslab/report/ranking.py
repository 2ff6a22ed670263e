"""Which design is best: task metrics, one value per seed, failures scored, ranking on val.

Designs are ranked on a loss-independent task metric read on validation data (`best/val_<m>`,
the value at the checkpoint selected on val, else the last `val/<m>`); `test/<m>` is shown beside
it and never used to choose. The seed is the unit: each (design, seed) keeps its latest FINISHED
run (`inference.pool_seeds`), reruns are counted and named, never pooled. Every seed counts in the
ranking: a run that diverged after its selected checkpoint keeps that checkpoint's value; a seed
with no finite val value (crashed, diverged before any, killed) scores the task's chance level
(`chance_level`). Failures are a column beside the score (`inference.score_with_failures`), not a
demotion below every clean design.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from losslab.report import inference as inf
from losslab.report.designs import Design
from losslab.report.runs import ReportError, RunData
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


@dataclass(frozen=True)
class Chance:
    """What a seed with no finite val (or test) value scores: `value`, and in words how it was set."""

    value: float
    why: str


#: multiclass params that give the number of classes K
CLASS_KEYS = ("data.num_classes", "loss.num_classes", "model.num_classes")
#: metrics whose chance level is 1 / K (binary: K = 2)
PER_CLASS = ("accuracy", "balanced_accuracy")


def chance_level(metric: TaskMetric, runs: Sequence[RunData], observed: Sequence[float | None]) -> Chance:
    """The task's chance level for `metric`: 0.5 for binary accuracy and AUC, 1/K for multiclass
    accuracy and balanced accuracy (K from the runs' `data.num_classes`-like params); for any other
    metric (rmse, nll, r2, a val loss, ...) the worst finite value `observed` in this report (the
    caller passes the runs that did not fail, when there are any)."""
    task = next((r.tags.get("task") for r in runs if r.tags.get("task")), metric.task)
    if task == "binary" and metric.name in (*PER_CLASS, "auc"):
        return Chance(0.5, "chance level 0.5 (binary)")
    if task == "multiclass" and metric.name in PER_CLASS:
        ks = {int(float(r.params[k])) for r in runs for k in CLASS_KEYS if _is_number(r.params.get(k))}
        if len(ks) == 1 and (k := ks.pop()) >= 2:
            return Chance(1.0 / k, f"chance level 1/{k} = {1.0 / k:.3g} ({k} classes)")
    finite = [v for v in observed if v is not None and math.isfinite(v)]
    if not finite:
        return Chance(0.5 if metric.maximize else 0.0, "no finite value observed")
    worst = min(finite) if metric.maximize else max(finite)
    return Chance(worst, f"the worst {metric.name} observed in this report ({worst:.4g})")


def _is_number(text: str | None) -> bool:
    try:
        return text is not None and math.isfinite(float(text))
    except ValueError:
        return False


@dataclass
class RunScore:
    """One run on the yardstick: its val value at the selected checkpoint (kept when the run diverged
    after it), its test value, and why the run counts as failed (None when it did not)."""

    run: RunData
    val: float | None
    test: float | None
    failure: str | None

    @property
    def seed(self) -> str:
        """The run's seed; a run that recorded none is its own seed (never pooled with another)."""
        return str(self.run.seed) if self.run.seed is not None else f"run {self.run.run_id[:8]}"


#: MLflow stores +-inf as +-sys.float_info.max (1.798e+308): a value this large was an infinity
MLFLOW_INF = 1e308


def _finite(value: float | None) -> float | None:
    """`value` when it is a real measurement; None for NaN, inf and MLflow's stand-in for inf."""
    return value if value is not None and math.isfinite(value) and abs(value) < MLFLOW_INF else None


def score_run(run: RunData, metric: TaskMetric) -> RunScore:
    """Failure: not FINISHED, outcome diverged, no finite val value or a non-finite final val loss.
    A FINISHED run keeps its selected checkpoint's val and test values even when it failed after it."""
    raw = next((run.metrics[k] for k in metric.val_keys if k in run.metrics), None)
    failure = None
    if run.status != "FINISHED":
        failure = run.status.lower()
    elif run.tags.get("outcome") == "diverged":
        failure = "diverged"
    elif raw is None:
        failure = f"no {metric.curve_key}"
    elif _finite(raw) is None:
        failure = f"non-finite {metric.curve_key}"
    elif not math.isfinite(run.metrics.get("final/val_loss", 0.0)):
        failure = "non-finite val loss"
    if run.status != "FINISHED":  # it never reached the test of its selected weights
        return RunScore(run, None, None, failure)
    return RunScore(run, _finite(raw), _finite(run.metrics.get(metric.test_key)), failure)


@dataclass
class DesignResult:
    """A design (or, with --tune, its chosen config) on the yardstick: one value per seed."""

    design: Design
    scores: list[RunScore]  # every run, reruns included
    chance: Chance
    tuned: dict[str, str | None] | None = None  # the chosen values of the tuned params
    configs: list[DesignResult] = field(default_factory=list)  # every config tried, ranked
    cmp_val: inf.Comparison | None = None  # against the baseline, paired on val (None: the baseline)
    cmp_test: inf.Comparison | None = None

    @property
    def label(self) -> str:
        return self.design.label

    @cached_property
    def pool(self) -> inf.SeedPool:
        records = [
            inf.RunRecord(0, s.seed, s.run.status, s.run.order, None, s.run.run_id)
            for s in sorted(self.scores, key=lambda s: s.run.order)
        ]
        return inf.pool_seeds(records)

    @cached_property
    def kept(self) -> dict[str, RunScore]:
        """{seed: the run kept for it}: its latest FINISHED run, else its latest run."""
        by_id = {s.run.run_id: s for s in self.scores}
        return {seed: by_id[sv.run_id] for seed, sv in self.pool.chosen.get(0, {}).items()}

    @property
    def duplicates(self) -> list[RunScore]:
        """Runs dropped as reruns of a seed already counted."""
        by_id = {s.run.run_id: s for s in self.scores}
        return [by_id[r.run_id] for r in self.pool.dropped]

    @property
    def n(self) -> int:
        """The number of seeds (not runs): the n of every interval and test."""
        return len(self.kept)

    @property
    def seeds(self) -> set[str]:
        return set(self.kept)

    @property
    def failures(self) -> Counter[str]:
        """Why the failed seeds failed (their kept runs), counted."""
        return Counter(s.failure for s in self.kept.values() if s.failure)

    @property
    def failed_seeds(self) -> dict[str, str]:
        return {seed: s.failure for seed, s in self.kept.items() if s.failure}

    @property
    def failed(self) -> int:
        return len(self.failed_seeds)

    def per_seed(self, which: str) -> dict[str, float | None]:
        """{seed: `which` value} ("val" or "test") of every seed; None where its run has none."""
        return {seed: (s.val if which == "val" else s.test) for seed, s in self.kept.items()}

    @cached_property
    def val_score(self) -> inf.FailureScore:
        """The ranking score: every seed's val value, seeds without one at chance, and the failure rate
        (seeds that failed, whether or not they kept a checkpoint value)."""
        base = inf.score_with_failures(self.per_seed("val"), self.chance.value)
        k, n = self.failed, self.n
        lo, hi = inf.clopper_pearson(k, n)
        failed = tuple(self.failed_seeds)
        return inf.FailureScore(base.per_seed, failed, base.score, lo, hi, base.chance)

    @cached_property
    def val(self) -> inf.MeanCI:
        return self.val_score.score

    @cached_property
    def test(self) -> inf.MeanCI:
        """Mean test value over every seed, a seed without one at chance (as on val)."""
        return inf.score_with_failures(self.per_seed("test"), self.chance.value).score

    @property
    def no_value(self) -> int:
        """Seeds with no finite val value: scored at chance."""
        return sum(v is None for v in self.per_seed("val").values())

    @property
    def has_value(self) -> bool:
        return self.n > self.no_value

    def seed_gaps(self, which: str) -> dict[str, str]:
        """{seed: why it has no `which` value} over the design's seeds that lack one."""
        return {
            seed: ("failed" if s.failure else f"no {which} value")
            for seed, s in self.kept.items()
            if (s.val if which == "val" else s.test) is None
        }


def evaluate(design: Design, metric: TaskMetric, chance: Chance) -> DesignResult:
    return DesignResult(design, [score_run(r, metric) for r in design.runs], chance)


def rank(results: Sequence[DesignResult], metric: TaskMetric) -> list[DesignResult]:
    """By the mean over every seed (failed ones at chance) in the metric's direction; designs with no
    finite val value on any seed last. Stable: ties keep param order."""

    def key(r: DesignResult) -> tuple[bool, float]:
        mean = r.val.mean
        if not r.has_value or mean is None:
            return (True, 0.0)
        return (False, -mean if metric.maximize else mean)

    return sorted(results, key=key)


GAP_WORDS = {
    "design has no value": "failed",
    "baseline has no value": "baseline failed",
    "neither has a value": "both failed",
    "not run by the baseline": "not in baseline",
}


def unpaired(r: DesignResult, cmp: inf.Comparison, which: str) -> dict[str, int]:
    """Why the design's seeds left out of a pairing are left out, counted: a failed seed must never
    vanish from a difference that then looks as good as a complete one."""
    gaps = r.seed_gaps(which)
    out: Counter[str] = Counter()
    for seed, why in cmp.paired.left_out.items():
        if seed not in r.kept:
            continue  # a seed only the baseline ran
        word = GAP_WORDS.get(why, why)
        if word == "failed" and gaps.get(seed, "failed") != "failed":
            word = gaps[seed]
        out[word] += 1
    return dict(sorted(out.items()))
