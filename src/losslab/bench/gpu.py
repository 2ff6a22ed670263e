"""GPU section: host syncs per training step with tracking on (target: none between flushes).

Runs only where CUDA is available; otherwise the row says n/a. Counted with
`torch.cuda.set_sync_debug_mode('warn')`: the warnings of a 2N-step run minus an N-step run, over N.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from losslab.bench.harness import Context, compose, mlp_overrides, tracking_env


def run(ctx: Context) -> None:
    if not torch.cuda.is_available():
        ctx.results["syncs"] = {"per_step": None, "note": "n/a (no GPU)"}
        ctx.row("syncs", "host syncs per training step (CUDA sync debug)", None, "", "n/a (no GPU)")
        return
    per_step, sources = count_syncs_per_step(ctx.sizes.threads, ctx.store("syncs"))
    ctx.row("syncs", "host syncs per training step (CUDA sync debug)", per_step, "", "LossLab, GPU")
    ctx.results["syncs"] = {
        "per_step": per_step,
        "note": "torch.cuda.set_sync_debug_mode('warn'); sources: file:line -> syncs per step",
        "sources": sources,
        "ratios": model_ratios(ctx),
    }


def count_syncs_per_step(threads: int, uri: str, steps: int = 100) -> tuple[float, dict[str, float]]:
    """Host syncs per step on CUDA: sync-debug warnings of a 2N-step run minus an N-step run, over N.

    The difference cancels set-up and end-of-run syncs (data to device, final flush, close). Also
    returns where the per-step syncs come from (the warning's file:line, same difference), so a
    non-zero count names the line that holds it.
    """
    counts: list[Counter[str]] = []
    for n in (steps, 2 * steps):
        cfg = compose([*mlp_overrides([256, 256], n, threads), "trainer.accelerator=gpu"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                losslab_run_unquiet(cfg, uri)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
        counts.append(Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs))
    extra = counts[1].copy()
    extra.subtract(counts[0])
    sources = {k: round(v / steps, 4) for k, v in extra.most_common() if v}
    return (sum(counts[1].values()) - sum(counts[0].values())) / steps, sources


def losslab_run_unquiet(cfg: Any, uri: str) -> None:
    """`task.train` without `quiet()` (which would swallow the sync warnings being counted)."""
    from losslab.train import job as task

    with tracking_env(uri), contextlib.redirect_stdout(io.StringIO()):
        task.train(cfg)


def model_ratios(ctx: Context) -> dict[str, Any]:
    """LossLab / raw loop on the GPU, small and 4x1024 MLP, alternating like section 1."""
    from losslab.bench.harness import paired_ratio
    from losslab.bench.runs import losslab_run, raw_run

    s, uri, out = ctx.sizes, ctx.store("gpu"), {}
    for fid, hidden, steps in (("gpu.small", [256, 256], s.steps), ("gpu.big", [1024] * 4, s.big_steps)):
        cfg = compose([*mlp_overrides(hidden, steps, s.threads), "trainer.accelerator=gpu"])
        samples = ctx.ab({"losslab": lambda c: losslab_run(c, uri), "raw": lambda c: raw_run(c, "cuda")}, cfg)
        r = paired_ratio(samples["losslab"], samples["raw"])
        out[fid] = round(r, 4)
        ctx.row(fid, f"GPU: LossLab / raw loop, MLP {hidden}, {steps} steps", r, "x", "on the GPU")
    return out
