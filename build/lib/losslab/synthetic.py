"""A synthetic experiment in an MLflow store, fast: the data for `make bench` and the report tests.

Runs, params, tags and final metrics go through MLflow's client. On a sqlite store the per-step
points are inserted in bulk (MLflow's `log_batch` takes minutes for 200 runs x 1000 steps here);
`fast=False`, or any other store, uses `log_batch` only. Like migrate.py, a tool about MLflow
stores, so it imports mlflow.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from . import tracking
from .compare import _MAX_FLOAT


def _synthetic_curves(
    rng: np.random.Generator, margin: float, lr: float, n_steps: int
) -> tuple[str, dict[str, np.ndarray]]:
    """Curves of one synthetic run: noisy exponential decay, shaped by (margin, lr) into each outcome.

    Large lr with a large margin mostly diverges, and such a run stops soon after (as the
    divergence guard stops real runs) with an inf last point, so curves differ in length.
    """
    steps = np.arange(n_steps, dtype=float)
    tau = max(5.0, 0.02 / lr * (1 + margin))
    start, floor = 1.0 + margin, 0.05 + 0.1 * margin
    loss = floor + (start - floor) * np.exp(-steps / tau)
    outcome = "converged" if tau < n_steps / 5 else "still_improving"
    if lr >= 0.1 and margin >= 1.0 and rng.random() < 0.8:
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


def _points(curves: dict[str, np.ndarray]) -> Iterable[tuple[str, int, float]]:
    """(key, step, value) of every per-step point; `val/loss` is stored as a (steps, values) pair."""
    for key, arr in curves.items():
        steps, values = arr if arr.ndim == 2 else (np.arange(len(arr)), arr)
        yield from zip(itertools.repeat(key), steps.astype(int).tolist(), values.tolist(), strict=False)


def _sql_value(value: float) -> tuple[float, int]:
    """(value, is_nan) as MLflow's sql store keeps them."""
    if math.isnan(value):
        return 0.0, 1
    return max(-_MAX_FLOAT, min(_MAX_FLOAT, value)), 0


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
    for i in range(0, len(metrics), tracking.MAX_METRICS):
        client.log_batch(run_id, metrics=metrics[i : i + tracking.MAX_METRICS])


def _synthetic_run(
    client: MlflowClient,
    exp_id: str,
    parent_id: str,
    key: tuple[int, float, float],
    curves: dict,
    outcome: str,
) -> str:
    """Create one finished-looking run with params, tags and final metrics (curves are written later)."""
    seed, margin, lr = key
    params = {
        "loss._target_": "losslab.losses.Hinge",
        "loss.margin": str(margin),
        "optimizer._target_": "torch.optim.Adam",
        "optimizer.lr": str(lr),
        "seed": str(seed),
        "data.name": "binary",
        "model._target_": "losslab.models.mlp",
    }
    tags = {
        "loss": "hinge",
        "model": "mlp",
        "data": "binary",
        "optimizer": "adam",
        "outcome": outcome,
        "outcome_reason": "synthetic",
        "mlflow.parentRunId": parent_id,
    }
    run = client.create_run(exp_id, run_name=f"hinge-m{margin:g}-adam-lr{lr:g}-s{seed}", tags=tags)
    train, val = curves["train/loss"], curves["val/loss"][1]
    finite = val[np.isfinite(val)]
    final = {"final/val_loss": val[-1], "final/train_loss": train[-1], "final/steps": len(train)}
    if len(finite):
        final["best/val_loss"] = finite.min()
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
) -> str:
    """Fill `uri` with one synthetic sweep (loss.margin x optimizer.lr x seed); return its parent run id.

    For tests and `make bench`: the volume of a real sweep (train/loss, grad/global_norm and
    grad/pred/zero_frac every step, val/loss every 5%, final metrics, outcome tags). Runs,
    params, tags and final metrics go through the MLflow client; the per-step points too
    (log_batch, 1000 per call) unless `fast` and the store is sqlite, where they are
    bulk-inserted in one transaction.
    """
    client = tracking.open_store(uri)
    exp_id = tracking.ensure_experiment(client, experiment)
    parent = client.create_run(
        exp_id,
        run_name=f"bench-{n_runs}x{n_steps}-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={"losslab.sweep": "parent", "study": "bench"},
    )
    margins, lrs = (0.0, 0.25, 0.5, 1.0, 2.0), (1e-4, 1e-3, 1e-2, 1e-1)
    combos = ((s, m, lr) for s in itertools.count() for m in margins for lr in lrs)
    rng = np.random.default_rng(seed)
    ts = int(time.time() * 1000)
    path = tracking._sqlite_path(uri) if fast else None
    points: dict[str, list[tuple[str, int, float]]] = {}
    for key in itertools.islice(combos, n_runs):
        outcome, curves = _synthetic_curves(rng, key[1], key[2], n_steps)
        run_id = _synthetic_run(client, exp_id, parent.info.run_id, key, curves, outcome)
        points[run_id] = list(_points(curves))
        if path is None:
            _log_points(client, run_id, points[run_id], ts)
            points[run_id] = []  # written: keep only the id
    if path is not None:
        _insert_points_sql(path, points, ts)
    for run_id in [*points, parent.info.run_id]:
        client.set_terminated(run_id, "FINISHED")
    return parent.info.run_id
