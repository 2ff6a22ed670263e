"""The two-worker ceiling: what two plain training loops get side by side on this machine.

A second vCPU is often a hyper-thread or a contended share, not a free core, so two CPU-bound loops
run at ~1.5x the throughput of one here, not 2x. A parallel sweep can at best reach that, so
section 4 reports its speed-ups against this figure measured in the same bench run.

Each loop is its own process (as a joblib worker is): it imports, builds the sweep's job (the
default config, `torch_threads` as the sweep) and waits; all loops of a round are then released at
once and each times its own raw PyTorch loop. Rounds alternate one loop / two loops; per round
ceiling = 2 * t(alone) / max(t(pair)); the median is reported.

Run alone: `python -m losslab.bench.ceiling [--steps N] [--repeats R]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from losslab.bench.harness import PROJECT_ROOT, TRACKING_ENV, stop


def _child(steps: int, threads: int) -> int:
    """Build the job, say `ready`, wait for a line on stdin, run the raw loop, print its seconds."""
    from losslab.bench.harness import compose, quiet
    from losslab.bench.runs import raw_loop
    from losslab.train import job as task

    cfg = compose(
        [f"trainer.max_steps={steps}", f"torch_threads={threads}", "trainer.enable_progress_bar=false"]
    )
    with quiet():
        job = task.build(cfg)
        raw_loop(job, 20)  # first-use initialisation (allocator, kernels) is not billed
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    with quiet():
        done, _ = raw_loop(job, steps)
    print(json.dumps({"seconds": time.perf_counter() - started, "steps": done}), flush=True)
    return 0


def _loops(n: int, steps: int, threads: int, timeout: float = 600.0) -> list[float]:
    """Start `n` loop processes, release them together, return each one's loop seconds."""
    env = {k: v for k, v in os.environ.items() if k not in TRACKING_ENV}
    cmd = [
        sys.executable,
        "-m",
        "losslab.bench.ceiling",
        "--child",
        "--steps",
        str(steps),
        "--threads",
        str(threads),
    ]
    procs = [
        subprocess.Popen(
            cmd,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for _ in range(n)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline().strip()
            if line != "ready":
                raise RuntimeError(f"ceiling loop did not start (said {line!r}, exit {p.poll()})")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        out = []
        for p in procs:
            assert p.stdout is not None
            out.append(float(json.loads(p.stdout.readline())["seconds"]))
            p.wait(timeout=timeout)
        return out
    finally:
        for p in procs:
            stop(p)


def measure(steps: int, threads: int, repeats: int) -> dict[str, Any]:
    """One loop alone vs two side by side, alternating for `repeats` rounds; the median ceiling."""
    alone: list[float] = []
    pairs: list[list[float]] = []
    for r in range(repeats):
        for kind in ("alone", "pair") if r % 2 == 0 else ("pair", "alone"):
            if kind == "alone":
                alone.append(_loops(1, steps, threads)[0])
            else:
                pairs.append(_loops(2, steps, threads))
    per_round = [2 * a / max(p) for a, p in zip(alone, pairs, strict=True)]
    return {
        "steps": steps,
        "alone_s": [round(a, 6) for a in alone],
        "pair_s": [[round(v, 6) for v in p] for p in pairs],
        "ceiling_per_round": [round(c, 3) for c in per_round],
        "ceiling": round(statistics.median(per_round), 4),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m losslab.bench.ceiling", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1600)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args.steps, args.threads)
    print(json.dumps(measure(args.steps, args.threads, args.repeats), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
