"""Section 5: the comparison report (`losslab.compare.build_report`) over a synthetic experiment.

The experiment (`synthetic_experiment`: runs x steps of curves in one sweep) is written untimed;
each timing builds the report into a fresh folder, artifacts logged to the parent run.

Run alone: `python -m losslab.bench --only 5` (or `python -m losslab.bench.report`).
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time

from losslab.bench.harness import Context, quiet


def run(ctx: Context) -> None:
    from losslab import compare
    from losslab.testing.synthetic import synthetic_experiment

    s = ctx.sizes
    uri = ctx.store("s5")
    with quiet():
        started = time.perf_counter()
        parent = synthetic_experiment(uri, s.report_runs, s.report_steps)
        setup = time.perf_counter() - started
    times = []
    for i in range(max(1, min(s.repeats, 3))):
        out = ctx.tmp / f"report-{i}"
        with quiet():
            started = time.perf_counter()
            compare.build_report(uri, "losslab-bench", parent, out)
            times.append(time.perf_counter() - started)
        shutil.rmtree(out, ignore_errors=True)
    median = statistics.median(times)
    ctx.results["5"] = {
        "runs": s.report_runs,
        "steps": s.report_steps,
        "report_s": [round(t, 3) for t in times],
        "median_s": round(median, 3),
        "setup_s": round(setup, 2),
        "note": "compare.build_report over one synthetic sweep (written by synthetic_experiment, "
        "not timed), sqlite, artifacts logged to the parent run; a fresh output folder each time.",
    }
    ctx.row(
        "5",
        f"comparison report, {s.report_runs} runs x {s.report_steps} steps",
        median,
        "s",
        f"each {', '.join(f'{t:.1f}s' for t in times)}; writing the experiment: {setup:.0f}s (untimed)",
    )


if __name__ == "__main__":
    from losslab.bench.main import main

    sys.exit(main(["--only", "5", *sys.argv[1:]]))
