"""Section 6: soak, many short jobs on 2 reused joblib workers into one sqlite store, then chaos.

Counts what reached the store, point by point: every job's run FINISHED with exactly one
`train/loss` point per step. Then one chaos round (`losslab.testing.chaos.run_chaos`): signals to random
workers of a parallel sweep, a resume, and the books (every config FINISHED once, nothing RUNNING,
every point there).

Run alone: `python -m losslab.bench --only 6` (or `python -m losslab.bench.soak`).
"""

from __future__ import annotations

import sys

from losslab.bench import sweep
from losslab.bench.harness import Context, Sizes


def run(ctx: Context) -> None:
    from losslab.tracking.store import open_store

    s = ctx.sizes
    uri = ctx.store("soak", experiments=("losslab",))
    soak = Sizes(**{**s.__dict__, "sweep_jobs": s.soak_jobs, "sweep_steps": s.soak_steps})
    folder = ctx.tmp / "soak"
    folder.mkdir(exist_ok=True)
    figures = sweep.run_sweep("joblib", soak, folder, uri)
    client = open_store(uri)
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

    chaos_round(ctx)


def chaos_round(ctx: Context) -> None:
    from losslab.testing.chaos import run_chaos

    s = ctx.sizes
    folder = ctx.tmp / "chaos"
    folder.mkdir(exist_ok=True)
    quick = dict(configs=3, steps=60, signals=1, kill9=False) if s.quick else {}
    out = run_chaos(workdir=folder, **quick)
    ctx.results["6"]["chaos"] = out
    ctx.row(
        "6.chaos",
        f"chaos: {len(out['signals'])} signals to a {out['configs']}-config joblib sweep, then a resume",
        None,
        "",
        f"{'ok' if out['ok'] else 'FAILED'}: every config FINISHED once {out['finished_once']}, "
        f"RUNNING left {out['running']}, all points {out['complete_points']}, {out['seconds']:.0f}s",
    )


if __name__ == "__main__":
    from losslab.bench.main import main

    sys.exit(main(["--only", "6", *sys.argv[1:]]))
