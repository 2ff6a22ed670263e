"""Section 2: LossLab against what a user would write with stock Lightning.

Stock = the same model and data + DataLoader(TensorDataset, shuffle) + Trainer(MLFlowLogger,
log_every_n_steps=1) + `self.log` per step + `log_dict(grad_norm)` per step, into sqlite.

Run alone: `python -m losslab.bench --only 2` (or `python -m losslab.bench.stock`).
"""

from __future__ import annotations

import sys

from losslab.bench.harness import (
    Context,
    compose,
    mib,
    mlp_overrides,
    paired_ratio,
    ratio,
    summary,
)
from losslab.bench.runs import losslab_run, stock_run


def run(ctx: Context) -> None:
    s = ctx.sizes
    ll_uri = ctx.store("s2-losslab")
    stock_uri = ctx.store("s2-stock", experiments=("bench-stock",))
    variants = {"losslab": lambda c: losslab_run(c, ll_uri), "stock": lambda c: stock_run(c, stock_uri)}
    samples = ctx.ab(variants, compose(mlp_overrides([256, 256], s.compare_steps, s.threads)))
    r = paired_ratio(samples["stock"], samples["losslab"])
    ll, stock = summary(samples["losslab"]), summary(samples["stock"])
    ctx.results["2"] = {
        "model": "32-256-256-1",
        "steps": s.compare_steps,
        "ratio": round(r, 4),
        "fit_ratio": round(paired_ratio(samples["stock"], samples["losslab"], "fit_seconds"), 4),
        "losslab": ll,
        "stock": stock,
        "peak_rss_ratio": ratio(stock["peak_rss_mib"], ll["peak_rss_mib"]),
        "note": "stock = task.build (same data/model) + DataLoader(TensorDataset, shuffle) + "
        "Trainer(MLFlowLogger, log_every_n_steps=1) + self.log per step + log_dict(grad_norm) per step, "
        "into sqlite; ratio = stock / LossLab (whole calls), fit_ratio = trainer.fit alone.",
    }
    ctx.row(
        "2",
        f"stock Lightning+MLFlowLogger+grad_norm / LossLab, {s.compare_steps} steps",
        r,
        "x",
        f"{stock['median_s']:.2f}s vs {ll['median_s']:.2f}s",
    )
    ctx.row(
        "2.mem",
        "peak RSS above start, stock vs LossLab",
        None,
        "",
        f"stock {mib(stock['peak_rss_mib'])}, LossLab {mib(ll['peak_rss_mib'])}",
    )


if __name__ == "__main__":
    from losslab.bench.main import main

    sys.exit(main(["--only", "2", *sys.argv[1:]]))
