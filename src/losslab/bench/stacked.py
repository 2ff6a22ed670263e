"""Section 7, `stacked`: R seeds trained stacked (`hydra/launcher=stacked`) against one after another.

Both variants run in this process on the same configs (the seeds 0..R-1 of one design) into a fresh
store: *sequential* is `job.train` for each seed in turn (what the basic launcher runs per job),
*stacked* is `stacked.train_group` on all of them (what the stacked launcher runs per group). The
figure is sequential wall time / stacked wall time, i.e. the stacked throughput in runs per second
over the sequential one, the median of paired rounds (alternating which goes first); the detail gives
the same ratio of process CPU time, which a busy shared machine moves less than wall time. Models: the
bench's 256x256 MLP and, with `--stacked-cnn`, the MNIST-1D CNN. Seeds: 4 and 8 on the CPU; 8 and
32 on a GPU (issue 24's target there: 8 stacked seeds >= 5x the throughput of 8 sequential runs).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

import torch

from losslab.bench.harness import Context, cnn_overrides, compose, mlp_overrides, quiet, tracking_env


def _configs(model: str, seeds: int, steps: int, threads: int, gpu: bool) -> list[Any]:
    base = mlp_overrides([256, 256], steps, threads) if model == "mlp" else cnn_overrides(steps, threads)
    if gpu:
        base.append("trainer.accelerator=gpu")
    return [compose([*base, f"seed={s}"]) for s in range(seeds)]


def _sequential(configs: list[Any]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of training the configs one after another."""
    from losslab.train import job as task

    began, cpu = time.perf_counter(), time.process_time()
    for cfg in configs:
        result = task.train(cfg)
        assert result.status == "FINISHED", result.error
    return time.perf_counter() - began, time.process_time() - cpu


def _stacked(configs: list[Any]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of training the configs as one stacked group."""
    from losslab.train import stacked

    began, cpu = time.perf_counter(), time.process_time()
    results = stacked.train_group(configs, lambda i: contextlib.nullcontext())
    assert all(r.status == "FINISHED" for r in results), [r.error for r in results]
    return time.perf_counter() - began, time.process_time() - cpu


def measure(ctx: Context, model: str, seeds: int, steps: int, gpu: bool) -> dict[str, Any]:
    """Paired rounds of sequential and stacked on the same seeds; the ratio per round and its median."""
    uri = ctx.store(f"stacked-{model}-{seeds}")
    rounds = []
    with tracking_env(uri), quiet():
        configs = _configs(model, seeds, steps, ctx.sizes.threads, gpu)
        _stacked(_configs(model, 2, 5, ctx.sizes.threads, gpu))  # imports and first-use set-up, untimed
        _sequential(_configs(model, 1, 5, ctx.sizes.threads, gpu))
        for r in range(ctx.sizes.repeats):
            order = ("sequential", "stacked") if r % 2 == 0 else ("stacked", "sequential")
            timed = {name: (_sequential if name == "sequential" else _stacked)(configs) for name in order}
            rounds.append({k: v[0] for k, v in timed.items()} | {f"{k}_cpu": v[1] for k, v in timed.items()})
    ratios = [t["sequential"] / t["stacked"] for t in rounds]
    cpu_ratios = [t["sequential_cpu"] / t["stacked_cpu"] for t in rounds]
    return {
        "model": model,
        "seeds": seeds,
        "steps": steps,
        "device": "cuda" if gpu else "cpu",
        "rounds": [{k: round(v, 3) for k, v in t.items()} for t in rounds],
        "ratio_median": round(statistics.median(ratios), 4),
        "cpu_ratio_median": round(statistics.median(cpu_ratios), 4),
    }


def run(ctx: Context) -> None:
    gpu = torch.cuda.is_available()
    steps = 60 if ctx.sizes.quick else 200
    plan = [("mlp", s) for s in ((2,) if ctx.sizes.quick else (8, 32) if gpu else (4, 8))]
    if gpu and not ctx.sizes.quick:
        plan += [("cnn", 8), ("cnn", 32)]
    out = []
    for model, seeds in plan:
        m = measure(ctx, model, seeds, steps, gpu)
        out.append(m)
        name = "MLP 256x256" if model == "mlp" else "MNIST-1D CNN"
        where = "GPU" if gpu else "CPU"
        target = "; target on a GPU, 8 seeds: >= 5x" if gpu and seeds == 8 else ""
        ctx.row(
            f"7.{model}.{seeds}",
            f"stacked / sequential throughput, {seeds} seeds, {name}, {steps} steps ({where})",
            m["ratio_median"],
            "x",
            f"sequential {statistics.median(t['sequential'] for t in m['rounds']):.1f}s, "
            f"stacked {statistics.median(t['stacked'] for t in m['rounds']):.1f}s (median); process CPU "
            f"sequential / stacked {m['cpu_ratio_median']:.2f}x{target}",
        )
    ctx.results["stacked"] = {
        "note": "sequential job.train per seed vs stacked.train_group, same configs, paired rounds",
        "measurements": out,
    }


if __name__ == "__main__":
    import sys

    from losslab.bench.main import main

    sys.exit(main(["--only", "7", *sys.argv[1:]]))
