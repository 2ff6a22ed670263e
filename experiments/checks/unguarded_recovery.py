"""Check of optimizer_stability's "Adam diverged 44 of 45 at lr 1" with the divergence guard off.

The guard stops a run at its first sustained blow-up, so a run that would have come back looks the same
as one that would not. This reads a sweep re-run with `outcome.stop_on_divergence=false` and the guarded
study beside it, and prints per loss: test metric (mean and 95% t-interval over seeds) unguarded at lr 1,
guarded at lr 1 and at lr 0.01, the `diverged` counts, and per run the first loss, the end level (median
of the last 15 train losses) and the peak. Usage (experiments/findings/optimizer_stability.md):

    python experiments/checks/unguarded_recovery.py UNGUARDED_URI STUDY_URI
"""

from __future__ import annotations

import math
import statistics
import sys

from mlflow import MlflowClient
from scipy import stats

ADAM = "params.`optimizer._target_` = 'torch.optim.Adam'"


def interval(xs: list[float]) -> str:
    half = (
        stats.t.ppf(0.975, len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))
        if len(xs) > 1
        else math.nan
    )
    return f"{statistics.fmean(xs):.3f} ± {half:.3f} (n={len(xs)})"


def children(client: MlflowClient, experiment: str, where: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    found = client.search_runs([exp.experiment_id], where, max_results=1000)
    return [r for r in found if r.data.tags.get("losslab.sweep") != "parent"]


def loss_of(run) -> str:
    return run.data.params.get("loss._target_", "").rsplit(".", 1)[-1]


def test_metric(run) -> tuple[str, float | None]:
    m = run.data.metrics
    return ("accuracy", m.get("test/accuracy")) if "test/accuracy" in m else ("rmse", m.get("test/rmse"))


def main(unguarded_uri: str, study_uri: str) -> None:
    free, study = MlflowClient(unguarded_uri), MlflowClient(study_uri)
    groups = {
        "lr 1, guard off": children(free, "adam_lr1_unguarded", ADAM),
        "lr 1, guarded": children(study, "optimizer_stability", ADAM + " and params.`optimizer.lr` = '1.0'"),
        "lr 0.01": children(study, "optimizer_stability", ADAM + " and params.`optimizer.lr` = '0.01'"),
    }
    for loss in sorted({loss_of(r) for r in groups["lr 1, guard off"]}):
        cells = []
        for label, runs in groups.items():
            mine = [r for r in runs if loss_of(r) == loss]
            values = [v for v in (test_metric(r)[1] for r in mine) if v is not None]
            diverged = sum(r.data.tags.get("outcome") == "diverged" for r in mine)
            cells.append(
                f"{label}: test {test_metric(mine[0])[0]} {interval(values)}, diverged {diverged}/{len(mine)}"
            )
        print(f"{loss}: " + " | ".join(cells))
    below = 0
    runs = groups["lr 1, guard off"]
    for run in sorted(runs, key=lambda r: (loss_of(r), r.data.params.get("seed"))):
        points = sorted(free.get_metric_history(run.info.run_id, "train/loss"), key=lambda p: p.step)
        values = [p.value for p in points]
        end = statistics.median(values[-15:])
        below += end < values[0]
        peak = max(values)
        print(
            f"  {loss_of(run)} seed {run.data.params.get('seed')}: first {values[0]:.3f}, end {end:.3f}, "
            f"peak {peak / values[0]:.3g}x the first at step {values.index(peak)}"
        )
    print(f"ended below their first loss: {below} of {len(runs)}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
