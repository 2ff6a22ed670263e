"""What every benchmark section shares: sizes, timed samples, A/B alternation, configs, stores, rows.

A machine shared with other jobs moves absolute timings by tens of percent from one minute to the
next, so every comparison is a ratio of two variants run side by side in one process, alternating
A,B / B,A for `repeats` rounds; the ratio is taken per round (the two halves of a round see the
same load) and the median is reported. The load average is recorded at every row.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import re
import shutil
import socket
import statistics
import subprocess
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from losslab import CONF_DIR

PROJECT_ROOT = Path(__file__).resolve().parents[3]
TRACKING_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "LOSSLAB_PARENT_RUN_ID")

#: figure id -> (comparison, bound, unit, what). The issue-14 table; every row with an id here is met/MISSED.
TARGETS: dict[str, tuple[str, float, str, str]] = {
    "1.small": ("<=", 1.4, "x", "LossLab / raw loop, small MLP"),  # issue 24 (issue 14: 1.3x)
    "1.big": ("<=", 1.1, "x", "LossLab / raw loop, 4x1024 MLP"),
    "1.close": ("<=", 0.3, "s", "run close: last training step to task.train's return (median)"),
    "2": (">=", 4.0, "x", "stock Lightning+MLFlowLogger / LossLab"),
    "3": ("<=", 1.1, "x", "LossLab over HTTP / into sqlite"),
    "4.startup.basic": ("<=", 3.0, "s", "sweep start-up, basic launcher"),
    "4.startup.joblib": ("<=", 5.0, "s", "sweep start-up, joblib n_jobs=2"),
    "4.overhead": ("<=", 0.15, "s", "per-job overhead beyond training, basic launcher (median)"),
    "4.speedup": (">=", 0.9, "x", "joblib/basic jobs phase, as a share of the two-worker ceiling"),
    "4.speedup_total": (">=", 1.0, "x", "joblib/basic, whole command"),
    "5": ("<=", 10.0, "s", "report over the synthetic experiment"),
}


@dataclass
class Sizes:
    """How much work each section does; `--quick` shrinks all of it to a smoke run."""

    steps: int = 3000
    big_steps: int = 150
    compare_steps: int = 1000  # sections 2 and 3: the stock run costs ~20-30 ms a step
    repeats: int = 3
    sweep_jobs: int = 16
    sweep_steps: int = 400
    ceiling_steps: int = 1600
    report_runs: int = 200
    report_steps: int = 1000
    soak_jobs: int = 64
    soak_steps: int = 50
    threads: int = 1
    quick: bool = False


# ----------------------------------------------------------------------------- measuring


def _status_kib(field_name: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field_name}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(found.group(1)) if found else None


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's RSS (Linux: write 5 to clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class Sample:
    """One timed call: wall seconds of the whole call, of training alone, and memory."""

    seconds: float
    fit_seconds: float | None = None
    peak_mib: float | None = None  # RSS high-water mark above the RSS before the call
    peak_abs_mib: float | None = None  # the high-water mark itself (the whole process)
    device_peak_mib: float | None = None
    info: dict[str, Any] = field(default_factory=dict)


def measured(fn: Callable[[], Sample]) -> Sample:
    """Run one variant with memory accounting; garbage is collected first so it is not billed here."""
    gc.collect()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = _status_kib("VmRSS")
    resettable = _reset_peak_rss()
    sample = fn()
    peak = _status_kib("VmHWM")
    if resettable and before is not None and peak is not None:
        sample.peak_mib = max(peak - before, 0) / 1024
        sample.peak_abs_mib = peak / 1024
    if cuda:
        sample.device_peak_mib = torch.cuda.max_memory_allocated() / 2**20
    return sample


def alternate(variants: dict[str, Callable[[], Sample]], repeats: int) -> dict[str, list[Sample]]:
    """Each variant once per round, order reversed every other round (A B, B A, ...)."""
    names = list(variants)
    out: dict[str, list[Sample]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            out[name].append(measured(variants[name]))
    return out


def paired_ratio(num: list[Sample], den: list[Sample], attr: str = "seconds") -> float:
    """Median over rounds of num/den, each ratio taken within one round."""
    ratios = [getattr(a, attr) / getattr(b, attr) for a, b in zip(num, den, strict=True)]
    return statistics.median(ratios)


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def summary(samples: list[Sample]) -> dict[str, Any]:
    return {
        "seconds": [round(s.seconds, 4) for s in samples],
        "median_s": round(statistics.median(s.seconds for s in samples), 4),
        "fit_median_s": rounded(_median([s.fit_seconds for s in samples])),
        "peak_rss_mib": rounded(_median([s.peak_mib for s in samples]), 1),
        "peak_rss_process_mib": rounded(_median([s.peak_abs_mib for s in samples]), 1),
        "device_peak_mib": rounded(_median([s.device_peak_mib for s in samples]), 1),
        **({"info": samples[-1].info} if samples and samples[-1].info else {}),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 3)


def mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MiB"


def load_average() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


# ----------------------------------------------------------------------------- configs


def compose(overrides: Sequence[str]) -> Any:
    """The training config exactly as `python train.py OVERRIDES` composes it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    if not CONF_DIR.is_dir():
        raise SystemExit(f"Error: {CONF_DIR} not found; run the benchmark from a LossLab checkout.")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides))


def mlp_overrides(hidden: Sequence[int], steps: int, threads: int) -> list[str]:
    """The benchmark's job: regression, 32 features, batch 128, Adam, MSE, validation every epoch.

    8000 samples with a 20% validation split give 6400 training rows = 50 full batches per epoch,
    so every epoch (and validation pass) is the same for LossLab and the raw loop.
    """
    return [
        "data=regression",
        "data.n_features=32",
        "data.n_samples=8000",
        "data.batch_size=128",
        "model=mlp",
        f"model.hidden=[{','.join(str(h) for h in hidden)}]",
        "loss=mse",
        "optimizer=adam",
        f"trainer.max_steps={steps}",
        "trainer.enable_progress_bar=false",
        f"torch_threads={threads}",
        "rerun=true",
        "tracking.experiment=bench",
        "tracking.log_curve_png=false",  # a report artifact (matplotlib), not tracking; see --help
    ]


def cnn_overrides(steps: int, threads: int) -> list[str]:
    """The multiclass job: the MNIST-1D paper's CNN with cross-entropy, batch 100, Adam, val every epoch."""
    return [
        "data=mnist1d",
        "model=cnn1d",
        "loss=cross_entropy",
        "optimizer=adam",
        "optimizer.lr=0.01",
        f"trainer.max_steps={steps}",
        "trainer.enable_progress_bar=false",
        f"torch_threads={threads}",
        "rerun=true",
        "tracking.experiment=bench",
        "tracking.log_curve_png=false",
    ]


@contextlib.contextmanager
def tracking_env(uri: str) -> Iterator[None]:
    """MLFLOW_TRACKING_URI=uri for the duration; the caller's tracking variables restored after."""
    saved = {k: os.environ.get(k) for k in TRACKING_ENV}
    for key in TRACKING_ENV:
        os.environ.pop(key, None)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keep the runs' own prints and Lightning's notices out of the table."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


# ----------------------------------------------------------------------------- processes


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(proc: subprocess.Popen) -> None:
    """Stop a child started in its own session, and its workers (its process group) with it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, 9)
            proc.wait(timeout=20)


# ----------------------------------------------------------------------------- the run's context


@dataclass
class Context:
    """One bench run: its sizes, scratch folder, the rows of the table and the JSON sections."""

    sizes: Sizes
    tmp: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    _stores: int = 0

    def store(self, tag: str, uri: str | None = None, experiments: Sequence[str] = ("bench",)) -> str:
        """A fresh store, its schema and experiments made before any timing (a one-off ~5 s per store).

        Fresh per section, so nothing a variant finds was left by another section.
        """
        from losslab.tracking.store import ensure_experiment, open_store

        if uri is None:
            self._stores += 1
            path = self.tmp / f"{tag}-{self._stores}.db"
            template = self.tmp / "empty-store.db"
            if not template.exists():  # MLflow's schema migrations take seconds: run them once, copy after
                with quiet():
                    open_store(f"sqlite:///{template}")
            shutil.copyfile(template, path)
            uri = f"sqlite:///{path}"
        with quiet():
            client = open_store(uri)
            for name in experiments:
                ensure_experiment(client, name)
        return uri

    def row(self, fid: str, figure: str, value: float | None, unit: str, detail: str) -> None:
        """One line of the table; the load average at the time it was measured goes with it."""
        target = TARGETS.get(fid)
        status, bound = "-", ""
        if target is not None and value is not None:
            op, limit, _, _ = target
            ok = value <= limit if op == "<=" else value >= limit
            status = "met" if ok else "MISSED"
            bound = f"{op} {limit:g}{unit}"
        self.rows.append(
            {
                "id": fid,
                "figure": figure,
                "value": None if value is None else round(value, 4),
                "unit": unit,
                "target": bound,
                "status": status,
                "detail": detail,
                "load": load_average(),
            }
        )

    def warm_up(self, variants: dict[str, Callable[[Any], Sample]]) -> None:
        """One short untimed call of each variant: imports and first-use initialisation aren't billed."""
        cfg = compose(mlp_overrides([16], 5, self.sizes.threads))
        for fn in variants.values():
            fn(cfg)

    def ab(self, variants: dict[str, Callable[[Any], Sample]], cfg: Any) -> dict[str, list[Sample]]:
        """Warm every variant, then alternate them on `cfg` for `repeats` rounds."""
        self.warm_up(variants)
        return alternate({name: (lambda f=fn: f(cfg)) for name, fn in variants.items()}, self.sizes.repeats)
