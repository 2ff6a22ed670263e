"""A/B of two LossLab trees on one sweep: `python scripts/ab_sweep.py A_SRC B_SRC [ROUNDS] [ARGS...]`.

Each round runs `train.py -m ARGS` from tree A then tree B (B first on odd rounds), each into a fresh
sqlite store, and records start-up (process start -> the first job's first line) and the whole
command. Prints per-round B/A ratios, their medians and the load average: on a shared machine the
ratio of neighbours in time is what means something, not the seconds.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one(src: Path, args: list[str]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(src), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/m.db"}
        cmd = [sys.executable, str(src.parent / "train.py"), "-m", *args, f"hydra.sweep.dir={tmp}/mr"]
        start = time.perf_counter()
        first = None
        proc = subprocess.Popen(
            cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if first is None and line.lstrip().startswith("[1/"):
                first = time.perf_counter() - start
        if proc.wait() != 0:
            raise SystemExit(f"{src}: exit {proc.returncode}")
        return first or float("nan"), time.perf_counter() - start


def main() -> None:
    a, b = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    args = sys.argv[4:] or ["seed=range(16)", "trainer.max_steps=100"]
    su, wall = [], []
    for r in range(rounds):
        order = [(a, "A"), (b, "B")] if r % 2 == 0 else [(b, "B"), (a, "A")]
        got = {tag: one(src, args) for src, tag in order}
        su.append(got["B"][0] / got["A"][0])
        wall.append(got["B"][1] / got["A"][1])
        print(
            f"round {r}: start-up A {got['A'][0]:.2f} s B {got['B'][0]:.2f} s ({su[-1]:.3f}); "
            f"whole A {got['A'][1]:.2f} s B {got['B'][1]:.2f} s ({wall[-1]:.3f}); "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    print(f"B/A median: start-up {statistics.median(su):.3f}, whole command {statistics.median(wall):.3f}")


if __name__ == "__main__":
    main()
