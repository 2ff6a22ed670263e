"""Section 4: a real sweep, `python train.py -m` in a subprocess, with the basic and the joblib launcher.

Figures: start-up (process start to the first job's first line: imports, Hydra, store, parent run;
joblib also its workers' start and imports), per-job overhead beyond training (basic launcher: gap
between consecutive job starts minus that job's trainer.fit seconds, median), and joblib n_jobs=2 /
basic for the jobs phase and the whole command, each against the two-worker ceiling measured here
(see ceiling.py). Then the joblib sweep's command once more, every job FINISHED: the time a sweep
with nothing to do takes to say so (issue 25: under 5 s), beside the full sweep's.

Run alone: `python -m losslab.bench --only 4` (or `python -m losslab.bench.sweep`).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from losslab.bench import ceiling
from losslab.bench.harness import PROJECT_ROOT, TARGETS, TRACKING_ENV, Context, Sizes, stop

# this section's own target, beside the others in harness.TARGETS (checked where its row is made)
TARGETS.setdefault(
    "4.nothing_to_do", ("<=", 5.0, "s", "a sweep with every job FINISHED says so (joblib, as make sweep)")
)

NOTE = (
    "startup = process start to the first job's first line (imports, Hydra, store, parent run; joblib: "
    "also its workers' start and imports); jobs = first job's line to the sweep summary. Per-job overhead "
    "= median over jobs of (time between consecutive job starts - that job's trainer.fit seconds): build, "
    "run create/params, final writes, artifacts incl. the PNG, Hydra's per-job set-up. speedup_jobs = "
    "jobs(basic)/jobs(joblib); speedup_total likewise for the whole command; ceiling = two raw loops side "
    "by side vs one (ceiling.py), in this run."
)


def run(ctx: Context) -> None:
    s = ctx.sizes
    ceil = ceiling.measure(s.ceiling_steps, s.threads, s.repeats)
    basic = run_sweep("basic", s, ctx.tmp, ctx.store("sweep-basic", experiments=("losslab",)))
    joblib_store = ctx.store("sweep-joblib", experiments=("losslab",))
    joblib = run_sweep("joblib", s, ctx.tmp, joblib_store)
    again = run_nothing_to_do("joblib", s, ctx.tmp, joblib_store)
    speedup_jobs = basic["jobs_s"] / joblib["jobs_s"]
    speedup_total = basic["total_s"] / joblib["total_s"]
    share = speedup_jobs / ceil["ceiling"]
    ctx.results["4"] = {
        "jobs": s.sweep_jobs,
        "max_steps": s.sweep_steps,
        "ceiling": ceil,
        "basic": basic,
        "joblib": joblib,
        "overhead_per_job_s": basic["overhead_median_s"],
        "speedup_jobs": round(speedup_jobs, 4),
        "speedup_jobs_of_ceiling": round(share, 4),
        "speedup_total": round(speedup_total, 4),
        "nothing_to_do": again,
        "note": NOTE,
    }
    ctx.row(
        "4.ceiling",
        f"two-worker ceiling: two raw loops side by side / one ({s.ceiling_steps} steps each)",
        ceil["ceiling"],
        "x",
        f"alone {statistics.median(ceil['alone_s']):.2f}s, pair "
        f"{statistics.median(max(p) for p in ceil['pair_s']):.2f}s (slower of the two); rounds "
        + ", ".join(f"{c:.2f}" for c in ceil["ceiling_per_round"]),
    )
    ctx.row(
        "4.startup.basic",
        "sweep start-up, basic launcher",
        basic["startup_s"],
        "s",
        f"process start to the first job's first line; whole command {basic['total_s']:.1f}s",
    )
    ctx.row(
        "4.startup.joblib",
        "sweep start-up, joblib n_jobs=2",
        joblib["startup_s"],
        "s",
        f"process start to the first job's first line; whole command {joblib['total_s']:.1f}s",
    )
    ctx.row(
        "4.overhead",
        f"per-job overhead beyond training, basic launcher (median of {s.sweep_jobs})",
        basic["overhead_median_s"],
        "s",
        f"mean {basic['overhead_mean_s']:.2f}s, first job {basic['overhead_first_s']:.2f}s",
    )
    ctx.row(
        "4.speedup",
        f"joblib n_jobs=2 / basic, jobs phase ({s.sweep_jobs} jobs x {s.sweep_steps} steps) / ceiling",
        share,
        "x",
        f"speed-up {speedup_jobs:.2f}x against a ceiling of {ceil['ceiling']:.2f}x "
        f"({basic['jobs_s']:.1f}s vs {joblib['jobs_s']:.1f}s)",
    )
    ctx.row(
        "4.speedup_total",
        "joblib n_jobs=2 / basic, whole command",
        speedup_total,
        "x",
        f"{basic['total_s']:.1f}s vs {joblib['total_s']:.1f}s; "
        f"{speedup_total / ceil['ceiling']:.2f} of the ceiling",
    )
    ctx.row(
        "4.nothing_to_do",
        f"the joblib sweep again, all {s.sweep_jobs} jobs FINISHED: time to say so",
        again["total_s"],
        "s",
        f"beside the full sweep: {joblib['total_s']:.1f}s ({s.sweep_jobs} jobs of {s.sweep_steps} steps)",
    )


def run_sweep(
    launcher: str, sizes: Sizes, tmp: Path, uri: str, overrides: Sequence[str] = (), timeout: float = 900.0
) -> dict[str, Any]:
    """`python train.py -m` over `seed=range(N)` into the store `uri`, every output line time-stamped.

    The store exists already (as a project's mlflow.db does), so its one-off schema creation is
    not billed to the sweep.
    """
    from losslab.tracking.store import open_store

    sweep_dir = tmp / f"sweep-{launcher}"
    cmd = sweep_command(launcher, sizes, sweep_dir, overrides)
    env = sweep_env(uri)
    lines: list[tuple[float, str]] = []
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    timer = threading.Timer(timeout, stop, args=(proc,))
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.perf_counter() - started, line.rstrip("\n")))
        proc.wait()
    finally:
        timer.cancel()
        stop(proc)
    total = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "\n".join(line for _, line in lines[-40:])
        raise RuntimeError(f"sweep ({launcher}) exited {proc.returncode}:\n{tail}")
    fit = _sweep_fit_seconds(open_store(uri), sweep_dir)
    return sweep_figures(lines, fit, total, sizes.sweep_jobs, per_job=launcher == "basic")


def sweep_command(launcher: str, sizes: Sizes, sweep_dir: Path, overrides: Sequence[str] = ()) -> list[str]:
    """`python train.py -m` over `seed=range(N)` with `launcher`, its output in `sweep_dir`."""
    return [
        sys.executable,
        str(PROJECT_ROOT / "train.py"),
        "-m",
        f"hydra/launcher={launcher}",
        *(["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []),
        f"seed=range({sizes.sweep_jobs})",
        f"trainer.max_steps={sizes.sweep_steps}",
        "trainer.enable_progress_bar=false",
        f"torch_threads={sizes.threads}",
        f"hydra.sweep.dir={sweep_dir}",
        *overrides,
    ]


def sweep_env(uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TRACKING_ENV}
    env.update(MLFLOW_TRACKING_URI=uri, PYTHONUNBUFFERED="1")
    return env


def run_nothing_to_do(
    launcher: str, sizes: Sizes, tmp: Path, uri: str, timeout: float = 300.0
) -> dict[str, Any]:
    """The sweep `run_sweep` ran into `uri`, once more (in its own sweep folder): every job has its
    FINISHED run, so it only says so. Its wall time, process start to exit; an error unless it exits 0
    with the nothing-to-do message."""
    cmd = sweep_command(launcher, sizes, tmp / f"sweep-{launcher}-again")
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp, env=sweep_env(uri), capture_output=True, text=True, timeout=timeout)
    took = time.perf_counter() - started
    said = proc.stdout + proc.stderr
    if proc.returncode != 0 or f"all {sizes.sweep_jobs} configs of this sweep are done" not in said:
        raise RuntimeError(f"sweep ({launcher}) run again exited {proc.returncode}:\n{said[-3000:]}")
    return {"total_s": round(took, 3), "jobs": sizes.sweep_jobs}


def sweep_figures(
    lines: Sequence[tuple[float, str]], fit: dict[int, float], total: float, jobs: int, per_job: bool
) -> dict[str, Any]:
    """Startup, jobs phase and per-job overhead from time-stamped sweep output.

    A job's first line is `[k/N] overrides` (printed by `task.train` as it starts); the sweep ends
    with `Sweep summary`. `fit`: job number k -> its trainer.fit seconds. `per_job` only where
    jobs run one after another (basic launcher), so the gap between two job starts is one job.
    """
    starts: dict[int, float] = {}
    for t, line in lines:
        found = re.match(r"\[(\d+)/[^\]]+\] ", line)
        if found:
            starts.setdefault(int(found.group(1)), t)
    summary = next((t for t, line in lines if line.startswith("Sweep summary")), total)
    if len(starts) != jobs or set(fit) != set(starts):
        raise RuntimeError(f"sweep: saw {len(starts)} job starts and {len(fit)} results, expected {jobs}")
    first = min(starts.values())
    out: dict[str, Any] = {
        "total_s": round(total, 3),
        "startup_s": round(first, 3),
        "jobs_s": round(summary - first, 3),
        "fit_sum_s": round(sum(fit.values()), 3),
    }
    if per_job:
        order = sorted(starts)
        ends = [starts[j] for j in order[1:]] + [summary]
        over = [end - starts[j] - fit[j] for j, end in zip(order, ends, strict=True)]
        out.update(
            overhead_median_s=round(statistics.median(over), 4),
            overhead_mean_s=round(statistics.fmean(over), 4),
            overhead_first_s=round(over[0], 4),
            overhead_per_job_s=[round(v, 3) for v in over],
        )
    return out


def _sweep_fit_seconds(client: Any, sweep_dir: Path) -> dict[int, float]:
    """Job number (1-based, as printed) -> its run's `final/wall_seconds`, via each job's result.json."""
    fit: dict[int, float] = {}
    for path in sweep_dir.glob("*/result.json"):
        if not path.parent.name.isdigit():
            continue
        row = json.loads(path.read_text())
        if row.get("status") != "FINISHED":
            raise RuntimeError(f"sweep job {path.parent.name} ended {row.get('status')}: {row.get('error')}")
        metrics = client.get_run(row["run_id"]).data.metrics
        fit[int(path.parent.name) + 1] = float(metrics["final/wall_seconds"])
    return fit


if __name__ == "__main__":
    from losslab.bench.main import main

    sys.exit(main(["--only", "4", *sys.argv[1:]]))
