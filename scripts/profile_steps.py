"""cProfile of one LossLab training run as bench section 1 runs it: `python scripts/profile_steps.py [big]`.

small: MLP 32-256-256-1, 3000 steps; big: 32-1024x4-1, 150 steps (the bench's sizes). A first run warms the
imports; the second is profiled. Prints the LossLab functions by cumulative time: divide by the steps for
the per-step cost of each callback (README "What holds each missed target").
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile

import torch

from losslab.bench.harness import compose, mlp_overrides
from losslab.bench.runs import losslab_run

SIZES = {"small": ([256, 256], 3000), "big": ([1024] * 4, 150)}

if __name__ == "__main__":
    hidden, steps = SIZES[sys.argv[1] if len(sys.argv) > 1 else "small"]
    torch.set_num_threads(1)
    cfg = compose(mlp_overrides(hidden, steps, 1))
    uri = f"sqlite:///{tempfile.mkdtemp()}/m.db"
    losslab_run(cfg, uri)
    profile = cProfile.Profile()
    profile.enable()
    sample = losslab_run(cfg, uri)
    profile.disable()
    print(
        f"{steps} steps: task.train {sample.seconds:.2f} s, trainer.fit {sample.fit_seconds:.2f} s (profiled)"
    )
    pstats.Stats(profile).sort_stats("cumtime").print_stats(r"losslab/(?!bench)", 30)
