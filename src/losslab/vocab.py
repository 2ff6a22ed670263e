"""The names LossLab writes and reads, each declared once: tasks and their metrics, metric
directions, outcome labels, label domains, and the liveness default.

Torch-free and import-free on purpose: the sweep driver, the report and `compare` read these
names without importing torch. Adding a task metric is one line in `TASK_METRICS` and one in
`HIGHER_IS_BETTER` (plus its formula in `train/metrics.py`); adding an outcome label is one
entry in `OUTCOME_LABELS` (plus its rule in `outcomes/classify.py` and a colour in the report).
"""

from __future__ import annotations

#: the metrics of each task, in logging order; the first is the primary (selection and ranking) metric
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("accuracy", "auc"),
    "regression": ("rmse", "mae", "r2"),
    "multiclass": ("accuracy", "balanced_accuracy", "macro_f1", "nll", "ece", "brier"),
}
#: whether a larger value is better, per metric
HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "auc": True,
    "rmse": False,
    "mae": False,
    "r2": True,
    "balanced_accuracy": True,
    "macro_f1": True,
    "nll": False,
    "ece": False,
    "brier": False,
}

#: memorisation under label noise (`data.label_noise`), logged at every validation: the share of the
#: corrupted training rows predicted as their corrupted label, and of the clean rows predicted as theirs
FIT_NOISY, FIT_CLEAN = "train/fit_noisy", "train/fit_clean"
#: facts about a run's data, logged once at step 0: the realised corrupted share of the training labels
NOISE_RATE = "data/noise_rate"

#: outcome labels of a training-loss curve, in the report's display order (best first)
OUTCOME_LABELS: tuple[str, ...] = ("converged", "still_improving", "plateaued", "oscillating", "diverged")

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
    return TASK_METRICS[task][0]


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
