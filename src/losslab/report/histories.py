"""Metric histories of many runs, fast: one SQL query per metric key on a sqlite store (MLflow's
client would make one request per metric per run: minutes for a large experiment); other stores fall
back to threaded `get_metric_history`."""

from __future__ import annotations

import itertools
import math
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from losslab.tracking.store import _sqlite_path

#: MLflow's sql stores keep +-inf as +-max float
MAX_FLOAT = 1.7976931348623157e308

History = dict[str, tuple[np.ndarray, np.ndarray]]  # run id -> (steps, values), sorted by step


def fetch_histories(
    client: MlflowClient, uri: str, run_ids: Sequence[str], keys: Iterable[str]
) -> dict[str, History]:
    """{key: {run_id: (steps, values)}} for all runs: bulk SQL on sqlite, threaded client otherwise."""
    path = _sqlite_path(uri)
    if path is not None:
        try:
            return histories_via_sql(path, run_ids, keys)
        except sqlite3.Error as exc:  # an unexpected schema: still correct, only slower
            print(f"warning: bulk read of {path} failed ({exc}); using the MLflow client", file=sys.stderr)
    return histories_via_client(client, run_ids, keys)


def histories_via_sql(path: Path, run_ids: Sequence[str], keys: Iterable[str]) -> dict[str, History]:
    """One query per key on MLflow's `metrics` table, joined to a temp table of the wanted runs.

    The join (not `run_uuid IN (...)`) has no parameter limit and returns a small integer per
    row instead of the 32-character run id, so rows load straight into a float array.
    """
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        con.execute("CREATE TEMP TABLE wanted (run_uuid TEXT PRIMARY KEY, idx INTEGER NOT NULL)")
        con.executemany("INSERT INTO wanted VALUES (?, ?)", [(r, i) for i, r in enumerate(run_ids)])
        out = {}
        for key in keys:
            rows = con.execute(
                "SELECT w.idx, m.step, m.timestamp, m.value, m.is_nan FROM wanted w "
                "JOIN metrics m ON m.run_uuid = w.run_uuid AND m.key = ?",
                (key,),
            ).fetchall()
            out[key] = _group(np.array(rows, np.float64).reshape(-1, 5), run_ids)
        return out
    finally:
        con.close()


def _group(rows: np.ndarray, run_ids: Sequence[str]) -> History:
    """Rows (run index, step, timestamp, value, is_nan) -> per-run arrays sorted by step.

    A step logged twice keeps its newest value, as MLflow's UI shows; stored +-max float is
    read back as +-inf (MLflow's sql stores cannot hold inf).
    """
    if not len(rows):
        return {}
    order = np.lexsort((rows[:, 2], rows[:, 1], rows[:, 0]))
    rows = rows[order]
    code, step, value = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64), rows[:, 3].copy()
    value[rows[:, 4] != 0] = np.nan
    value[value >= MAX_FLOAT] = np.inf
    value[value <= -MAX_FLOAT] = -np.inf
    last = np.ones(len(code), bool)
    last[:-1] = (code[1:] != code[:-1]) | (step[1:] != step[:-1])
    code, step, value = code[last], step[last], value[last]
    bounds = np.flatnonzero(np.diff(code)) + 1
    starts = np.concatenate([[0], bounds])
    return {
        run_ids[code[b]]: (s, v)
        for b, s, v in zip(starts, np.split(step, bounds), np.split(value, bounds), strict=True)
    }


def histories_via_client(
    client: MlflowClient, run_ids: Sequence[str], keys: Iterable[str], workers: int = 16
) -> dict[str, History]:
    """Fallback for tracking servers: `get_metric_history` per run and key, in parallel threads."""
    keys = list(keys)

    def one(pair: tuple[int, str]) -> list[tuple[float, ...]]:
        idx, key = pair
        hist = client.get_metric_history(run_ids[idx], key)
        return [(idx, m.step, m.timestamp, m.value, math.isnan(m.value)) for m in hist]

    pairs = list(itertools.product(range(len(run_ids)), keys))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, pairs))
    by_key: dict[str, list[tuple[float, ...]]] = {k: [] for k in keys}
    for (_, key), rows in zip(pairs, results, strict=True):
        by_key[key] += rows
    return {k: _group(np.array(rows, np.float64).reshape(-1, 5), run_ids) for k, rows in by_key.items()}
