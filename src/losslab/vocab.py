"""The names LossLab writes and reads, each declared once: tasks and their metrics with their
directions, outcome labels with their report colours, label domains, and the liveness default.

Torch-free and import-free on purpose: the sweep driver, the report and `compare` read these
names without importing torch. Adding a task metric is one entry `name: HIGHER|LOWER` under its
task in `TASK_METRICS`, with its formula under the same name in `train/metrics.FORMULAS`; adding an
outcome label is one entry `label: colour` in `OUTCOME_LABELS`, with its rule in
`outcomes/classify.py`. Tests fail naming a metric without a formula (tests/unit/train/test_metrics.py),
and on a label the outcome corpus does not produce (tests/unit/outcomes/test_classify.py).
"""

from __future__ import annotations

#: the direction of a metric: whether a larger value is better
HIGHER, LOWER = True, False
#: the metrics of each task with their directions, in logging order; the first is the primary
#: (selection and ranking) metric. A name shared by tasks (accuracy) has one direction.
TASK_METRICS: dict[str, dict[str, bool]] = {
    "binary": {"accuracy": HIGHER, "auc": HIGHER},
    "regression": {"rmse": LOWER, "mae": LOWER, "r2": HIGHER},
    "multiclass": {
        "accuracy": HIGHER,
        "balanced_accuracy": HIGHER,
        "macro_f1": HIGHER,
        "nll": LOWER,
        "ece": LOWER,
        "brier": LOWER,
    },
}
#: whether a larger value is better, per metric name (derived from TASK_METRICS)
HIGHER_IS_BETTER: dict[str, bool] = {
    name: up for names in TASK_METRICS.values() for name, up in names.items()
}

#: memorisation under label noise (`data.label_noise`), logged at every validation: the share of the
#: corrupted training rows predicted as their corrupted label, and of the clean rows predicted as theirs
FIT_NOISY, FIT_CLEAN = "train/fit_noisy", "train/fit_clean"
#: facts about a run's data, logged once at step 0: the realised corrupted share of the training labels
NOISE_RATE = "data/noise_rate"

#: outcome labels of a training-loss curve, in the report's display order (best first), each with
#: its colour in the report's figures (definitions: outcomes/classify.py, docs/outcomes.md)
OUTCOME_LABELS: dict[str, str] = {
    "converged": "#2ca02c",
    "still_improving": "#9ecae1",
    "plateaued": "#d4c84a",
    "oscillating": "#ff7f0e",
    "diverged": "#d62728",
}

#: label domains a loss can declare, and what each accepts (`real`: any finite target)
DOMAINS: dict[str, str] = {
    "real": "any finite real number",
    "pm1": "{-1, +1}",
    "01": "{0, 1}",
    "classes": "integer class indices in [0, K) for (N, K) logits",
}

#: seconds without a heartbeat before a RUNNING run on another machine counts as dead
#: (`tracking.stale_after`)
STALE_AFTER = 600.0


def primary_metric(task: str) -> str:
    """The metric that selects the checkpoint and ranks designs: accuracy (max) or rmse (min)."""
    return next(iter(TASK_METRICS[task]))


def tasks_of(metric: str) -> tuple[str, ...]:
    """Every task that logs `metric` (accuracy: binary and multiclass), in declaration order."""
    return tuple(task for task, names in TASK_METRICS.items() if metric in names)


def task_of(metric: str, task: str | None = None) -> str | None:
    """The task a metric belongs to, or None for an unknown metric.

    A metric shared by several tasks (accuracy) resolves to `task` when that task logs it (the
    runs' own task), else to the first task that declares it.
    """
    owners = tasks_of(metric)
    if task is not None and task in owners:
        return task
    return owners[0] if owners else None
