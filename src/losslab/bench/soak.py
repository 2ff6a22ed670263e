"""Section 6: soak, many short jobs on 2 reused joblib workers into one sqlite store.

Counts what reached the store, point by point: every job's run FINISHED with exactly one
`train/loss` point per step.

Run alone: `python -m losslab.bench --only 6` (or `python -m losslab.bench.soak`).
"""

from __future__ import annotations

import sys

from . import sweep
from .harness import Context, Sizes


def run(ctx: Context) -> None:
    from .. import tracking

    s = ctx.sizes
    uri = ctx.store("soak", experiments=("losslab",))
    soak = Sizes(**{**s.__dict__, "sweep_jobs": s.soak_jobs, "sweep_steps": s.soak_steps})
    folder = ctx.tmp / "soak"
    folder.mkdir(exist_ok=True)
    figures = sweep.run_sweep("joblib", soak, folder, uri)
    client = tracking.open_store(uri)
    exp_id = client.get_experiment_by_name("losslab").experiment_id
    runs = [r for r in client.search_runs([exp_id], max_results=5000) if "mlflow.parentRunId" in r.data.tags]
    finished = sum(r.info.status == "FINISHED" for r in runs)
    counts = [len(client.get_metric_history(r.info.run_id, "train/loss")) for r in runs]
    exact = sum(c == s.soak_steps for c in counts)
    ctx.results["6"] = {
        "jobs": s.soak_jobs,
        "steps": s.soak_steps,
        "runs": len(runs),
        "finished": finished,
        "points": sum(counts),
        "points_expected": s.soak_jobs * s.soak_steps,
        "runs_with_exactly_one_point_per_step": exact,
        "total_s": figures["total_s"],
    }
    ctx.row(
        "6",
        f"soak: {s.soak_jobs} jobs x {s.soak_steps} steps, joblib n_jobs=2",
        sum(counts),
        "points",
        f"{finished}/{s.soak_jobs} FINISHED, {exact} runs with exactly one point per step, "
        f"{sum(counts)} of {s.soak_jobs * s.soak_steps} points, {figures['total_s']:.0f}s",
    )


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(["--only", "6", *sys.argv[1:]]))
