"""The labelled outcome corpus: synthetic families (tests/data/outcome_curves/synthetic.csv) and curves
recorded from LossLab runs (real_*.json, written by scripts/record_outcome_curves.py).

A synthetic row names a family (a shape over the run, u = step / n, drop 1) and how it is drawn:
run length `n`, `offset` and `scale` (y = offset + scale * (shape + noise)), Gaussian `noise` (in units
of the drop), `period` (oscillations), `spike_at` (the step of a spike, a blow-up or a NaN), `seed`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "data" / "outcome_curves"


@dataclass(frozen=True)
class Spec:
    name: str
    family: str
    n: int
    offset: float
    scale: float
    noise: float
    period: float
    spike_at: int
    seed: int
    expected: str


def _piecewise(u: np.ndarray, xs: list[float], ys: list[float]) -> np.ndarray:
    return np.interp(u, xs, ys)


# shapes of u = t / n in [0, 1) (or of t, for the fixed-time families); drop 1 unless stated
SHAPES: dict[str, Callable[[np.ndarray, np.ndarray, Spec], np.ndarray]] = {
    "exp_fast": lambda u, t, s: np.exp(-u / 0.05),
    "exp_tau10": lambda u, t, s: np.exp(-t / 10.0),
    "power": lambda u, t, s: 1.0 / (1.0 + 50.0 * u),
    "to_zero": lambda u, t, s: np.maximum(0.0, 1.0 - t / 100.0),
    "linear": lambda u, t, s: 1.0 - u,
    "exp_slow": lambda u, t, s: np.exp(-u),
    "late_fall": lambda u, t, s: _piecewise(u, [0, 0.6, 1], [1, 1, 0]),
    "sqrt_fall": lambda u, t, s: 1.0 - np.sqrt(u),
    "flat": lambda u, t, s: np.zeros_like(u),
    "settle_up": lambda u, t, s: _piecewise(u, [0, 0.3, 0.5, 1], [1, 0, 0.5, 0.5]),
    "turn_up": lambda u, t, s: np.exp(-u / 0.05) + _piecewise(u, [0, 0.8, 1], [0, 0, 0.2]),
    "osc": lambda u, t, s: np.exp(-u / 0.1) + 0.1 * np.cos(2 * np.pi * t / s.period + 0.3),
    "osc_flat": lambda u, t, s: 0.1 * np.cos(2 * np.pi * t / s.period + 0.3),
    # a loss that alternates +-30% of its level around a falling curve (period 2: every step)
    "osc_relative": lambda u, t, s: (
        (0.3 + np.exp(-u / 0.1)) * (1.0 + 0.3 * np.cos(2 * np.pi * t / s.period + 0.3))
    ),
    "exp_growth": lambda u, t, s: np.exp(5.0 * u) - 1.0,
    "linear_rise": lambda u, t, s: u,
    "rise_50x": lambda u, t, s: 1.0 + 49.0 * u,
    "v_shape": lambda u, t, s: _piecewise(u, [0, 0.4, 1], [1, 0, 0.8]),
    "v_above": lambda u, t, s: _piecewise(u, [0, 0.3, 1], [1, 0, 1.2]),
    "jump_stay": lambda u, t, s: np.where(t >= s.spike_at, 1.5, 0.0),
    "spike_linear": lambda u, t, s: 1.0 - 0.8 * u,
}
# families that put an event on a fast exponential (or on their own shape) relative to the first value
EVENTS = {"nan_at", "inf_at", "blowup", "cap_spike", "spike", "spike_linear", "zero_jitter"}


def curve(spec: Spec) -> np.ndarray:
    """The curve a spec describes (deterministic in its seed)."""
    rng = np.random.default_rng(spec.seed)
    t = np.arange(spec.n, dtype=np.float64)
    u = t / spec.n
    if spec.family == "zero_jitter":  # hinge on separable data: exactly 0 on most batches
        tail = np.where(rng.random(spec.n - 60) < 0.15, rng.uniform(0.01, 0.4, spec.n - 60), 0.0)
        return spec.offset + spec.scale * np.concatenate([np.linspace(2.0, 0.05, 60), tail])
    base = SHAPES.get(spec.family, SHAPES["exp_fast"])(u, t, spec)
    y = spec.offset + spec.scale * (base + spec.noise * rng.standard_normal(spec.n))
    s, first = spec.spike_at, y[0]
    if spec.family == "nan_at":
        y[s:] = np.nan
    elif spec.family == "inf_at":
        y[s] = np.inf
    elif spec.family == "blowup":
        y[s:] = 30.0 * abs(first) * (1 + 0.05 * rng.standard_normal(spec.n - s))
    elif spec.family == "cap_spike":
        y[s] = 1e7 * abs(first)
    elif spec.family in ("spike", "spike_linear"):
        y[s] = 120.0 * abs(first)
    return y


def synthetic() -> list[Spec]:
    with (DATA / "synthetic.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    return [
        Spec(
            name=r["name"],
            family=r["family"],
            n=int(r["n"]),
            offset=float(r["offset"]),
            scale=float(r["scale"]),
            noise=float(r["noise"]),
            period=float(r["period"]),
            spike_at=int(r["spike_at"]),
            seed=int(r["seed"]),
            expected=r["expected"],
        )
        for r in rows
    ]


#: run lengths and periods of the short-run oscillation corpus: each must read `oscillating`
SHORT_LENGTHS = (20, 30, 40, 60, 80, 150)
SHORT_PERIODS = (2, 3, 5)


def short_oscillations() -> list[Spec]:
    """A loss alternating +-30% of its level with period 2, 3 or 5, over 20 to 150 steps, noise 1% of
    the final level: `oscillating` at every length (the rule holds from 20 steps)."""
    return [
        Spec(
            f"osc_relative_p{p}_{n}",
            "osc_relative",
            n,
            0.0,
            1.0,
            0.003,
            float(p),
            0,
            1000 * p + n,
            "oscillating",
        )
        for n in SHORT_LENGTHS
        for p in SHORT_PERIODS
    ]


def stretched(spec: Spec, factor: float) -> Spec:
    """The same shape over `factor` x the steps (periods and event steps scale with it)."""
    n = max(40, round(spec.n * factor))
    at = spec.spike_at if spec.spike_at < 10 else round(spec.spike_at * n / spec.n)
    return replace(
        spec, n=n, period=spec.period * n / spec.n if spec.period > 2 else spec.period, spike_at=at
    )


@dataclass(frozen=True)
class Real:
    name: str
    command: str
    expected: str
    expected_overfitting: bool | None
    train: list[tuple[int, float]]
    val: list[tuple[int, float]]

    @property
    def values(self) -> np.ndarray:
        return np.array([v for _, v in self.train], dtype=np.float64)


def real() -> list[Real]:
    out = []
    for path in sorted(DATA.glob("real_*.json")):
        doc = json.loads(path.read_text())
        out.append(
            Real(
                name=path.stem.removeprefix("real_"),
                command=doc["command"],
                expected=doc["expected"],
                expected_overfitting=doc.get("expected_overfitting"),
                train=[(int(s), float(v)) for s, v in doc["train"]],
                val=[(int(s), float(v)) for s, v in doc["val"]],
            )
        )
    return out
