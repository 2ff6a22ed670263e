"""A synthetic experiment in an MLflow store, fast: the data for `make bench` and the report tests.

Runs, params, tags and final metrics go through MLflow's client. On a sqlite store the per-step
points are inserted in bulk (MLflow's `log_batch` takes minutes for 200 runs x 1000 steps here);
`fast=False`, or any other store, uses `log_batch` only. Like migrate.py, a tool about MLflow
stores, so it imports mlflow.

The runs look like a real sweep's (task metrics, `task`/`heldout`/`outcome`/`overfitting` tags,
shared seeds) and are built so the right comparison is known: a design best on val (BEST), one
whose finite runs score highest but that diverges on half its seeds with a tiny loss (TRAP), one
that always diverges, one FAILED run, and an lr optimum that depends on the margin (`best_lr`).
"""

from __future__ import annotations

import itertools
import math
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from losslab.report.runs import MAX_FLOAT
from losslab.tracking.params import MAX_METRICS
from losslab.tracking.store import _sqlite_path, ensure_experiment, open_store

#: the synthetic grid: loss.margin (loss.delta for regression) x optimizer.lr, seeds outermost
MARGINS = (0.0, 0.25, 0.5, 1.0, 2.0)
LRS = (1e-4, 1e-3, 1e-2, 1e-1)
#: the answers the data are built to have (the report tests check the report finds them)
BEST = (0.5, 1e-2)  # best design on val, all runs finished
TRAP = (2.0, 1e-1)  # highest val metric of all, but diverges on even seeds (with a tiny val loss)
ALL_DIVERGE = (1.0, 1e-1)  # every run diverges: non-finite val metric
FAILED_RUN = (0.25, 1e-3, 1)  # (margin, lr, seed): status FAILED, no final metrics
SEED_SD = 0.03  # shared by every design on a seed (same split and init): pairing removes it
RUN_SD = 0.004


def best_lr(margin: float) -> float:
    """The lr tuning should choose for a margin (clean configs only)."""
    return 1e-2 if margin <= 0.5 else 1e-3


def quality(margin: float, lr: float) -> float:
    """The expected val accuracy of a design (0.90 at BEST; the trap's finite runs get 0.97)."""
    if (margin, lr) == TRAP:
        return 0.97
    return 0.90 - 0.05 * abs(margin - 0.5) - 0.04 * abs(math.log10(lr) - math.log10(best_lr(margin)))


def diverges(margin: float, lr: float, seed: int) -> bool:
    return (margin, lr) == ALL_DIVERGE or ((margin, lr) == TRAP and seed % 2 == 0)


def _synthetic_curves(
    rng: np.random.Generator, margin: float, lr: float, n_steps: int, diverged: bool
) -> tuple[str, dict[str, np.ndarray]]:
    """Curves of one synthetic run: noisy exponential decay, shaped by (margin, lr) into each outcome.

    A diverged run stops soon after it blows up (as the divergence guard stops real runs) with
    an inf last point, so curves differ in length.
    """
    steps = np.arange(n_steps, dtype=float)
    tau = max(5.0, 0.02 / lr * (1 + margin))
    start, floor = 1.0 + margin, 0.05 + 0.1 * margin
    loss = floor + (start - floor) * np.exp(-steps / tau)
    outcome = "converged" if tau < n_steps / 5 else "still_improving"
    if diverged:
        blow = int(rng.integers(n_steps // 10, n_steps // 2))
        loss = loss[: blow + 50] * np.exp(np.maximum(steps[: blow + 50] - blow, 0) / 5)
        loss[-1] = np.inf
        outcome = "diverged"
    elif lr >= 0.1:
        loss = loss * (1 + 0.3 * (-1) ** np.arange(n_steps))
        outcome = "oscillating"
    elif lr <= 1e-4 and margin == 0:
        loss = start - 0.1 * (1 - np.exp(-steps / n_steps))
        outcome = "plateaued"
    n = len(loss)
    loss = loss * np.exp(rng.normal(0, 0.05, n))
    with np.errstate(over="ignore", invalid="ignore"):
        grad = np.sqrt(loss) * (1 + lr * 10) * np.exp(rng.normal(0, 0.1, n))
        zero = np.nan_to_num(np.clip((1 - loss / start) / (1 + margin), 0, 1), posinf=0.0)
    val_steps = np.arange(max(1, n_steps // 20) - 1, n, max(1, n_steps // 20))
    val = loss[val_steps] * 1.1
    return outcome, {
        "train/loss": loss,
        "grad/global_norm": grad,
        "grad/pred/zero_frac": zero,
        "val/loss": np.stack([val_steps, val]),
    }


def _task_metrics(
    task: str, acc: float, test_acc: float, curves: dict[str, np.ndarray], diverged: bool
) -> dict[str, float]:
    """Add `val/<m>` curves to `curves` and return the final task metrics of one run.

    Binary: accuracy and AUC; regression: rmse, mae, r2 derived from the same quality (rmse =
    1.3 - accuracy), so the same design is best under either task. A diverged run keeps its best
    value from before the blow-up (finite) unless every val point is non-finite; the curves
    rise fast, so that value is near the run's quality.
    """
    val_steps, val_loss = curves["val/loss"]
    k = len(val_steps)
    rise = 1 - np.exp(-10 * np.arange(1, k + 1) / max(k, 1))
    rise = rise / rise[-1]
    per_metric = {"accuracy": lambda a: a, "auc": lambda a: 1 - 0.8 * (1 - a)}
    if task == "regression":
        per_metric = {
            "rmse": lambda a: 1.3 - a,
            "mae": lambda a: 0.8 * (1.3 - a),
            "r2": lambda a: 1 - (1.3 - a) ** 2,
        }
    finals: dict[str, float] = {}
    finite = np.isfinite(val_loss)
    for name, f in per_metric.items():
        curve = np.array([f(0.5 + (acc - 0.5) * r) for r in rise])
        curve[~finite] = np.nan
        curves[f"val/{name}"] = np.stack([val_steps, curve])
        if finite.any():
            best = np.nanmin(curve) if name in ("rmse", "mae") else np.nanmax(curve)
            finals[f"best/val_{name}"] = float(best)
            finals[f"test/{name}"] = f(test_acc)
    if finite.any():
        finals["best/step"] = float(val_steps[finite][-1])
    return finals


def _points(curves: dict[str, np.ndarray]) -> Iterable[tuple[str, int, float]]:
    """(key, step, value) of every per-step point; `val/loss` is stored as a (steps, values) pair."""
    for key, arr in curves.items():
        steps, values = arr if arr.ndim == 2 else (np.arange(len(arr)), arr)
        yield from zip(itertools.repeat(key), steps.astype(int).tolist(), values.tolist(), strict=False)


def _sql_value(value: float) -> tuple[float, int]:
    """(value, is_nan) as MLflow's sql store keeps them."""
    if math.isnan(value):
        return 0.0, 1
    return max(-MAX_FLOAT, min(MAX_FLOAT, value)), 0


def _insert_points_sql(path: Path, points: dict[str, list[tuple[str, int, float]]], ts: int) -> None:
    """Bulk-insert points into MLflow's `metrics` and `latest_metrics` tables in one transaction.

    Only for synthetic data: MLflow's log_batch costs ~0.1 s per 1000 points in ORM work and a
    commit each, so a 200 x 1000 fill (600k points) takes minutes that way, seconds this way.
    """
    rows, latest = [], {}
    for run_id, pts in points.items():
        for key, step, value in pts:
            v, nan = _sql_value(value)
            rows.append((key, v, ts, run_id, step, nan))
            if (run_id, key) not in latest or step >= latest[run_id, key][3]:
                latest[run_id, key] = (key, v, ts, step, nan, run_id)
    rows.sort(key=lambda r: (r[3], r[0], r[4]))  # (run, key, step) index order: fewer page splits
    con = sqlite3.connect(path, timeout=60)
    try:
        con.execute("PRAGMA synchronous = OFF")  # throwaway benchmark data: skip the fsyncs
        con.execute("PRAGMA cache_size = -262144")  # 256 MiB: the three metric indexes stay in memory
        with con:
            con.executemany(
                "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?,?,?,?,?,?)",
                rows,
            )
            con.executemany(
                "INSERT OR REPLACE INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                list(latest.values()),
            )
    finally:
        con.close()


def _log_points(client: MlflowClient, run_id: str, pts: list[tuple[str, int, float]], ts: int) -> None:
    metrics = [Metric(k, v, ts, step) for k, step, v in pts]
    for i in range(0, len(metrics), MAX_METRICS):
        client.log_batch(run_id, metrics=metrics[i : i + MAX_METRICS])


@dataclass(frozen=True)
class Spec:
    """What kind of study to write: its task, whether it has held-out data, its test draw."""

    task: str = "binary"
    heldout: bool = True
    seed: int = 0  # the val values (shared seed effects and run noise) and the curves
    test_seed: int | None = None  # the test values' noise (None: `seed`); changes no val value


def _synthetic_run(
    client: MlflowClient,
    exp_id: str,
    parent_id: str,
    key: tuple[int, float, float],
    curves: dict,
    outcome: str,
    finals: dict[str, float],
    spec: Spec,
) -> str:
    """Create one finished-looking run with params, tags and final metrics (curves are written later)."""
    seed, margin, lr = key
    loss, knob = ("hinge", "margin") if spec.task == "binary" else ("huber", "delta")
    params = {
        "loss._target_": f"losslab.losses.{loss.title()}",
        f"loss.{knob}": str(margin),
        "optimizer._target_": "torch.optim.Adam",
        "optimizer.lr": str(lr),
        "seed": str(seed),
        "data.name": spec.task,
        "model._target_": "losslab.models.mlp",
    }
    tags = {
        "loss": loss,
        "model": "mlp",
        "data": spec.task,
        "optimizer": "adam",
        "task": spec.task,
        "heldout": str(spec.heldout).lower(),
        "mlflow.parentRunId": parent_id,
    }
    if (margin, lr, seed) != FAILED_RUN:
        tags.update(outcome=outcome, outcome_reason="synthetic")
        tags["overfitting"] = "true" if margin == 0 and lr >= 1e-2 else "false"
    run = client.create_run(exp_id, run_name=f"{loss}-{knob[0]}{margin:g}-adam-lr{lr:g}-s{seed}", tags=tags)
    train, val = curves["train/loss"], curves["val/loss"][1]
    finite = val[np.isfinite(val)]
    final = {"final/train_loss": train[-1], "final/steps": len(train)}
    if (margin, lr, seed) != FAILED_RUN:  # a failed run ends before its final metrics
        final["final/val_loss"] = np.inf if outcome == "diverged" else val[-1]
        final.update(finals)
        if len(finite):  # a diverged run's best val loss is small: it must not win on it
            final["best/val_loss"] = 0.01 if outcome == "diverged" else finite.min()
    ts = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, float(v), ts, len(train)) for k, v in final.items()],
        params=[Param(k, v) for k, v in params.items()],
    )
    return run.info.run_id


def synthetic_experiment(
    uri: str,
    n_runs: int = 200,
    n_steps: int = 1000,
    experiment: str = "losslab-bench",
    seed: int = 0,
    fast: bool = True,
    *,
    task: str = "binary",
    heldout: bool = True,
    test_seed: int | None = None,
) -> str:
    """Fill `uri` with one synthetic sweep (loss.margin x optimizer.lr x seed); return its parent run id.

    For tests and `make bench`: the volume of a real sweep (train/loss, grad/global_norm and
    grad/pred/zero_frac every step, val/loss and the task's val metrics every 5%, final and
    test metrics, task/heldout/outcome/overfitting tags). The values are built to have known
    answers (BEST, TRAP, ALL_DIVERGE, FAILED_RUN, `best_lr`): a design's val accuracy is
    `quality(margin, lr)` plus a per-seed effect shared by every design (SEED_SD, what pairing
    removes) plus run noise (RUN_SD); test is val - 0.01 plus noise drawn from `test_seed`
    (equal to val when `heldout` is false). Runs, params, tags and final metrics go through the
    MLflow client; the per-step points too (log_batch, 1000 per call) unless `fast` and the
    store is sqlite, where they are bulk-inserted in one transaction.
    """
    if task not in ("binary", "regression"):
        raise ValueError(f"task must be 'binary' or 'regression', not {task!r}")
    spec = Spec(task, heldout, seed, seed if test_seed is None else test_seed)
    client = open_store(uri)
    exp_id = ensure_experiment(client, experiment)
    parent = client.create_run(
        exp_id,
        run_name=f"bench-{n_runs}x{n_steps}-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={"losslab.sweep": "parent", "study": "bench"},
    )
    combos = ((s, m, lr) for s in itertools.count() for m in MARGINS for lr in LRS)
    rng = np.random.default_rng(seed)
    test_rng = np.random.default_rng([spec.test_seed, 1])
    ts = int(time.time() * 1000)
    path = _sqlite_path(uri) if fast else None
    points: dict[str, list[tuple[str, int, float]]] = {}
    statuses: dict[str, str] = {}
    for key in itertools.islice(combos, n_runs):
        s, margin, lr = key
        diverged = diverges(margin, lr, s)
        outcome, curves = _synthetic_curves(rng, margin, lr, n_steps, diverged)
        seed_effect = SEED_SD * np.random.default_rng([seed, s, 7]).standard_normal()
        acc = float(np.clip(quality(margin, lr) + seed_effect + rng.normal(0, RUN_SD), 0.5, 1.0))
        test_acc = acc if not heldout else float(np.clip(acc - 0.01 + test_rng.normal(0, 0.01), 0.5, 1.0))
        finals = _task_metrics(task, acc, test_acc, curves, diverged)
        run_id = _synthetic_run(client, exp_id, parent.info.run_id, key, curves, outcome, finals, spec)
        statuses[run_id] = "FAILED" if (margin, lr, s) == FAILED_RUN else "FINISHED"
        points[run_id] = list(_points(curves))
        if path is None:
            _log_points(client, run_id, points[run_id], ts)
            points[run_id] = []  # written: keep only the id
    if path is not None:
        _insert_points_sql(path, points, ts)
    for run_id, status in statuses.items():
        client.set_terminated(run_id, status)
    client.set_terminated(parent.info.run_id, "FINISHED")
    return parent.info.run_id
