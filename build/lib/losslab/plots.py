"""Small matplotlib helpers shared by the per-run artifact and the comparison report."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: runs in sweeps, CI and over ssh
import matplotlib.pyplot as plt


def loss_curve_png(
    train: list[tuple[int, float]], val: list[tuple[int, float]], path: Path, title: str = ""
) -> Path:
    """One run's train/val loss against step, log scale when the values allow it."""
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    if train:
        ax.plot([s for s, _ in train], [v for _, v in train], lw=0.8, label="train/loss")
    if val:
        ax.plot([s for s, _ in val], [v for _, v in val], "o-", ms=3, lw=1.2, label="val/loss")
    values = [v for _, v in train + val]
    if values and min(values) > 0 and max(values) < 1e300:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
