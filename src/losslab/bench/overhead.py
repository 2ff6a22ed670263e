"""Section 1: what LossLab costs per training step, against a raw PyTorch loop doing the same work.

LossLab with full tracking (`task.train`: train/loss and gradient statistics every step, validation
every epoch, a sqlite store) vs the raw loop, on a small (32-256-256-1) and a 4x1024 MLP. On both,
plain Lightning (same module, no callbacks, no tracking) runs alongside: Lightning's loop is a
floor LossLab cannot go under, and LossLab / plain Lightning is the part LossLab adds.

Row 1.cnn: the same comparison per training step for the multiclass task, the MNIST-1D reference CNN
(model=cnn1d, data=mnist1d, loss=cross_entropy, batch 100): LossLab's `trainer.fit` seconds per step /
the raw loop's training seconds per step (no Lightning variant, to keep it cheap).

Run alone: `python -m losslab.bench --only 1` (or `python -m losslab.bench.overhead`).
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

from losslab.bench.harness import (
    Context,
    cnn_overrides,
    compose,
    mib,
    mlp_overrides,
    paired_ratio,
    ratio,
    summary,
)
from losslab.bench.runs import lightning_run, losslab_run, raw_run
from losslab.data import corruption

NOTE = (
    "ratio = the whole task.train(cfg) call (build, run create + params, training with every metric "
    "write, final metrics, config artifact, close; loss-curve PNG off) / the raw loop (same build, "
    "training and per-epoch validation); fit_ratio = trainer.fit (final/wall_seconds) / the raw "
    "loop's training alone. lightning = LossLabModule in a Trainer with no callbacks and no tracking. "
    "peak_rss_mib = growth of the process's RSS high-water mark above its RSS before the call "
    "(Linux clear_refs reset)."
)


def run(ctx: Context) -> None:
    s = ctx.sizes
    out: dict[str, Any] = {"note": NOTE}
    uri = ctx.store("s1")
    for fid, hidden, steps in (("1.small", [256, 256], s.steps), ("1.big", [1024] * 4, s.big_steps)):
        variants = {"losslab": lambda c: losslab_run(c, uri), "raw": raw_run, "lightning": lightning_run}
        samples = ctx.ab(variants, compose(mlp_overrides(hidden, steps, s.threads)))
        r = paired_ratio(samples["losslab"], samples["raw"])
        fit_r = paired_ratio(samples["losslab"], samples["raw"], "fit_seconds")
        name = f"32-{'-'.join(map(str, hidden))}-1"
        ll, raw = summary(samples["losslab"]), summary(samples["raw"])
        fig: dict[str, Any] = {
            "model": name,
            "steps": steps,
            "ratio": round(r, 4),
            "fit_ratio": round(fit_r, 4),
            "losslab": ll,
            "raw": raw,
            "peak_rss_ratio": ratio(ll["peak_rss_mib"], raw["peak_rss_mib"]),
        }
        ctx.row(
            fid,
            f"LossLab / raw loop, MLP {name}, {steps} steps",
            r,
            "x",
            f"{ll['median_s']:.2f}s vs {raw['median_s']:.2f}s; training alone {fit_r:.2f}x",
        )
        if "lightning" in samples:
            pl_raw = paired_ratio(samples["lightning"], samples["raw"], "fit_seconds")
            ll_pl = paired_ratio(samples["losslab"], samples["lightning"], "fit_seconds")
            fig.update(
                lightning=summary(samples["lightning"]),
                lightning_fit_ratio=round(pl_raw, 4),
                losslab_over_lightning_fit=round(ll_pl, 4),
            )
            ctx.row(
                f"{fid}.lightning",
                f"plain Lightning (no callbacks) / raw loop, MLP {name}, training alone",
                pl_raw,
                "x",
                f"LossLab / plain Lightning, training alone: {ll_pl:.2f}x (what LossLab adds)",
            )
        gpu = (
            f"; GPU {ll['device_peak_mib']} vs {raw['device_peak_mib']} MiB" if ll["device_peak_mib"] else ""
        )
        closes = [x.info["close_s"] for x in samples["losslab"] if "close_s" in x.info]
        if closes:
            close = statistics.median(closes)
            fig["close_s"] = closes
            ctx.row(
                "1.close" if fid == "1.small" else f"{fid}.close",
                f"run close after the last step, MLP {name} (median of {len(closes)})",
                close,
                "s",
                "last step -> task.train returns: fit end, flush, outcome, test scores, final "
                "metrics/tags, config artifact, status; runs " + ", ".join(f"{c:.3f}" for c in closes),
            )
        ctx.row(
            f"{fid}.mem",
            f"peak RSS above start, MLP {name}",
            None,
            "",
            f"LossLab {mib(ll['peak_rss_mib'])}, raw {mib(raw['peak_rss_mib'])}{gpu}",
        )
        out[fid] = fig
    out["1.cnn"] = _cnn_row(ctx, uri)
    out["1.reads"] = _reads_row(ctx, uri)
    ctx.results["1"] = out


def _reads_row(ctx: Context, uri: str) -> dict[str, Any]:
    """Host reads per training step with LossLab's accelerator paths forced on (`bench.hostreads`):
    what a GPU run would wait on, counted on whatever device this is."""
    from losslab.bench.hostreads import reads_per_step

    steps = max(10, min(100, ctx.sizes.steps // 30))
    per_step, sources = reads_per_step(
        lambda n: compose(mlp_overrides([256, 256], n, ctx.sizes.threads)), uri, steps
    )
    shown = ", ".join(f"{k} {v:g}" for k, v in sources.items()) or "none"
    ctx.row("1.reads", "host reads per training step, accelerator paths (2N - N steps)", per_step, "", shown)
    return {"per_step": per_step, "steps": steps, "sources": sources}


def _cnn_row(ctx: Context, uri: str) -> dict[str, Any]:
    """LossLab / raw loop per training step, CNN on MNIST-1D; a fifth of the small MLP's steps."""
    from hydra.utils import instantiate

    s = ctx.sizes
    steps = max(5, s.steps // 5)
    cfg = compose(cnn_overrides(steps, s.threads))
    instantiate(corruption.split_data_config(cfg.data)[0])  # MNIST-1D into its cache once, untimed
    samples = ctx.ab({"losslab": lambda c: losslab_run(c, uri), "raw": raw_run}, cfg)
    per_step = {
        name: [(x.fit_seconds or 0.0) / max(int(x.info.get("steps", steps)), 1) for x in samples[name]]
        for name in ("losslab", "raw")
    }
    ll_ms = 1000 * sorted(per_step["losslab"])[len(per_step["losslab"]) // 2]
    raw_ms = 1000 * sorted(per_step["raw"])[len(per_step["raw"]) // 2]
    r = paired_ratio(samples["losslab"], samples["raw"], "fit_seconds")
    ctx.row(
        "1.cnn",
        f"LossLab / raw loop per step, CNN (cnn1d) on MNIST-1D, {steps} steps",
        r,
        "x",
        f"{ll_ms:.2f} ms vs {raw_ms:.2f} ms a step (median)",
    )
    return {
        "model": "cnn1d",
        "data": "mnist1d",
        "steps": steps,
        "ratio": round(r, 4),
        "losslab_ms_per_step": round(ll_ms, 4),
        "raw_ms_per_step": round(raw_ms, 4),
        "losslab": summary(samples["losslab"]),
        "raw": summary(samples["raw"]),
    }


if __name__ == "__main__":
    from losslab.bench.main import main

    sys.exit(main(["--only", "1", *sys.argv[1:]]))
