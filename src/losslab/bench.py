"""Tracking-overhead benchmark: `python -m losslab.bench [--quick] [--only 1,3] [--steps N] [--repeats R]`.

Prints a table and writes bench-results/latest.json. A machine shared with other jobs moves absolute
timings by tens of percent from one minute to the next, so every comparison is a ratio of two
variants run side by side in this one process, alternating A,B / B,A for `--repeats` rounds; the
ratio is taken per round (the two halves of a round see the same load) and the median is reported.

Sections (each can be picked with --only):
  1. LossLab with full tracking (`task.train`: train/loss every step, gradient statistics every
     step, validation every epoch, a sqlite store) vs a raw PyTorch loop doing the same steps on the
     same model, data, loss, optimizer and validation schedule; a small and a 4x1024 MLP.
  2. The same LossLab run vs stock Lightning + MLFlowLogger(log_every_n_steps=1) + `grad_norm`.
  3. LossLab into a local `mlflow server` over HTTP vs into a local sqlite file.
  4. A real 16-job sweep in a subprocess: per-job overhead beyond training (basic launcher), and the
     2-worker joblib launcher's speedup over the in-process one.
  5. The comparison report over a synthetic experiment (200 runs x 1000 steps).
  6. Soak: a 64-job sweep on 2 joblib workers into one sqlite store; every train/loss point counted.
Peak memory (RSS above the pre-call level) is recorded for 1 and 2; host syncs per step where CUDA
is available.

Nothing is cached between variants or runs: every LossLab run is `rerun=true` into a fresh store.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import logging
import math
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import CONF_DIR

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ("1", "2", "3", "4", "5", "6")
TARGETS = {  # figure id -> (comparison, bound, what)
    "1.small": ("<=", 1.3, "LossLab / raw loop, small MLP"),
    "1.big": ("<=", 1.1, "LossLab / raw loop, 4x1024 MLP"),
    "2": (">=", 4.0, "stock Lightning+MLFlowLogger / LossLab"),
    "3": ("<=", 1.2, "LossLab over HTTP / into sqlite"),
    "4.overhead": ("<=", 0.3, "per-job overhead, basic launcher (s)"),
    "4.speedup": (">=", 1.7, "joblib n_jobs=2 speedup over basic"),
    "5": ("<=", 10.0, "report over the synthetic experiment (s)"),
}
TRACKING_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "LOSSLAB_PARENT_RUN_ID")


@dataclass
class Sizes:
    """How much work each section does; `--quick` shrinks all of it to a smoke run."""

    steps: int = 3000
    big_steps: int = 150
    compare_steps: int = 1000  # sections 2 and 3: the stock run costs ~20-30 ms a step
    repeats: int = 3
    sweep_jobs: int = 16
    sweep_steps: int = 400
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


def _measured(fn: Callable[[], Sample]) -> Sample:
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
            out[name].append(_measured(variants[name]))
    return out


def paired_ratio(num: list[Sample], den: list[Sample], attr: str = "seconds") -> float:
    """Median over rounds of num/den, each ratio taken within one round."""
    ratios = [getattr(a, attr) / getattr(b, attr) for a, b in zip(num, den, strict=True)]
    return statistics.median(ratios)


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _summary(samples: list[Sample]) -> dict[str, Any]:
    return {
        "seconds": [round(s.seconds, 4) for s in samples],
        "median_s": round(statistics.median(s.seconds for s in samples), 4),
        "fit_median_s": _round(_median([s.fit_seconds for s in samples])),
        "peak_rss_mib": _round(_median([s.peak_mib for s in samples]), 1),
        "peak_rss_process_mib": _round(_median([s.peak_abs_mib for s in samples]), 1),
        "device_peak_mib": _round(_median([s.device_peak_mib for s in samples]), 1),
        **({"info": samples[-1].info} if samples and samples[-1].info else {}),
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


# ----------------------------------------------------------------------------- configs and runs


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


def _optimizer_factory(job: Any) -> Callable[..., torch.optim.Optimizer]:
    """The configured optimizer partial, wherever this version of `task.Job` keeps it."""
    factory = getattr(job, "optimizer", None)
    if factory is None and hasattr(job, "module"):
        factory = job.module.optimizer_factory
    if factory is None:
        raise RuntimeError("task.build() returned no optimizer factory")
    return factory


def losslab_run(cfg: Any, uri: str) -> Sample:
    """`task.train(cfg)` timed as a whole; training alone from the run's `final/wall_seconds`."""
    from . import task, tracking

    with tracking_env(uri), quiet():
        started = time.perf_counter()
        result = task.train(cfg)
        seconds = time.perf_counter() - started
    if result.status != "FINISHED" or result.run_id is None:
        raise RuntimeError(f"benchmark run ended {result.status}: {result.error}")
    client = tracking.open_store(uri)
    metrics = client.get_run(result.run_id).data.metrics
    vals = client.get_metric_history(result.run_id, "val/loss")
    info = {"steps": int(metrics.get("final/steps", 0)), "val_points": len(vals)}
    return Sample(seconds, fit_seconds=metrics.get("final/wall_seconds"), info=info)


def raw_run(cfg: Any) -> Sample:
    """The same work without Lightning or tracking: same build, batches, loss, optimizer, validation."""
    from . import task

    with quiet():
        started = time.perf_counter()
        job = task.build(cfg)
        fit_started = time.perf_counter()
        steps, val_passes = raw_loop(job, int(cfg.trainer.max_steps))
        done = time.perf_counter()
    return Sample(
        done - started, fit_seconds=done - fit_started, info={"steps": steps, "val_passes": val_passes}
    )


def raw_loop(job: Any, max_steps: int) -> tuple[int, int]:
    """Plain PyTorch: an epoch of TensorBatches, then a validation pass, until max_steps."""
    from .losses import call_loss

    model, loss_fn, data = job.model, job.loss, job.data
    optimizer = _optimizer_factory(job)(model.parameters())
    step = val_passes = 0
    while step < max_steps:
        model.train()
        for x, y, w in data.train_batches():
            loss = call_loss(loss_fn, model(x), y, w)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step >= max_steps:
                break
        else:  # a whole epoch: validate, as Lightning does at every epoch end
            _raw_validation(model, loss_fn, data)
            val_passes += 1
            continue
        break
    return step, val_passes


def _raw_validation(model: torch.nn.Module, loss_fn: torch.nn.Module, data: Any) -> float:
    from .losses import call_loss

    model.eval()
    total, count = None, 0
    with torch.no_grad():
        for x, y, w in data.val_batches():
            part = call_loss(loss_fn, model(x), y, w) * x.shape[0]
            total = part if total is None else total + part
            count += x.shape[0]
    model.train()
    return float(total) / max(count, 1) if total is not None else math.nan


# ----------------------------------------------------------------------------- stock Lightning


def stock_run(cfg: Any, uri: str) -> Sample:
    """What a user would write: LightningModule + self.log + MLFlowLogger(every step) + grad_norm.

    Same data tensors, model and optimizer as LossLab (built by `task.build`), served the usual
    way: DataLoader(TensorDataset, shuffle=True), i.e. per-sample indexing and collation.
    """
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import MLFlowLogger
    from torch.utils.data import DataLoader, TensorDataset

    from . import task

    with tracking_env(uri), quiet():
        started = time.perf_counter()
        job = task.build(cfg)
        data = job.data
        bs = int(cfg.data.batch_size)
        train = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=bs, shuffle=True)
        val = DataLoader(TensorDataset(data.x_val, data.y_val), batch_size=bs)
        module = _stock_module_class()(job.model, job.loss, _optimizer_factory(job))
        logger = MLFlowLogger(experiment_name="bench-stock", tracking_uri=uri)
        trainer = pl.Trainer(
            max_steps=int(cfg.trainer.max_steps),
            max_epochs=-1,
            accelerator=str(cfg.trainer.accelerator),
            devices=1,
            logger=logger,
            log_every_n_steps=1,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        fit_started = time.perf_counter()
        trainer.fit(module, train, val)
        done = time.perf_counter()
    return Sample(done - started, fit_seconds=done - fit_started, info={"steps": trainer.global_step})


_STOCK_CLASS: Any = None


def _stock_module_class() -> Any:
    """Built on first use so that importing this module does not import Lightning."""
    global _STOCK_CLASS
    if _STOCK_CLASS is not None:
        return _STOCK_CLASS
    import pytorch_lightning as pl
    from pytorch_lightning.utilities import grad_norm

    class StockModule(pl.LightningModule):
        """The Lightning docs' pattern: log in the steps, grad norms in on_before_optimizer_step."""

        def __init__(self, model: torch.nn.Module, loss: torch.nn.Module, optimizer: Callable) -> None:
            super().__init__()
            self.model, self.loss, self.optimizer_factory = model, loss, optimizer

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = self.loss(self.model(x), y)
            self.log("train/loss", loss)
            return loss

        def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
            self.log_dict(grad_norm(self, norm_type=2))

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            self.log("val/loss", self.loss(self.model(x), y))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return self.optimizer_factory(self.parameters())

    _STOCK_CLASS = StockModule
    return StockModule


# ----------------------------------------------------------------------------- sections


@dataclass
class Bench:
    sizes: Sizes
    tmp: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    _stores: int = 0

    def store(self, tag: str, uri: str | None = None, experiments: Sequence[str] = ("bench",)) -> str:
        """A fresh store, its schema and experiments made before any timing (a one-off ~5 s per store).

        Fresh per section, so nothing a variant finds was left by another section.
        """
        from . import tracking

        if uri is None:
            self._stores += 1
            path = self.tmp / f"{tag}-{self._stores}.db"
            template = self.tmp / "empty-store.db"
            if not template.exists():  # MLflow's schema migrations take seconds: run them once, copy after
                with quiet():
                    tracking.open_store(f"sqlite:///{template}")
            shutil.copyfile(template, path)
            uri = f"sqlite:///{path}"
        with quiet():
            client = tracking.open_store(uri)
            for name in experiments:
                tracking.ensure_experiment(client, name)
        return uri

    def row(self, fid: str, figure: str, value: float | None, unit: str, detail: str) -> None:
        target = TARGETS.get(fid)
        status, bound = "-", ""
        if target is not None and value is not None:
            op, limit, _ = target
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
            }
        )

    # -------------------------------------------------------------- 1 + 2

    def warm_up(self, variants: dict[str, Callable[[Any], Sample]]) -> None:
        """One short untimed call of each variant: imports and first-use initialisation aren't billed."""
        cfg = compose(mlp_overrides([16], 5, self.sizes.threads))
        for fn in variants.values():
            fn(cfg)

    def _ab(self, variants: dict[str, Callable[[Any], Sample]], cfg: Any) -> dict[str, list[Sample]]:
        self.warm_up(variants)
        return alternate({name: (lambda f=fn: f(cfg)) for name, fn in variants.items()}, self.sizes.repeats)

    def section1(self) -> None:
        s = self.sizes
        out: dict[str, Any] = {}
        uri = self.store("s1")
        variants = {"losslab": lambda c: losslab_run(c, uri), "raw": raw_run}
        for fid, hidden, steps in (("1.small", [256, 256], s.steps), ("1.big", [1024] * 4, s.big_steps)):
            samples = self._ab(variants, compose(mlp_overrides(hidden, steps, s.threads)))
            ratio = paired_ratio(samples["losslab"], samples["raw"])
            fit_ratio = paired_ratio(samples["losslab"], samples["raw"], "fit_seconds")
            name = f"32-{'-'.join(map(str, hidden))}-1"
            ll, raw = _summary(samples["losslab"]), _summary(samples["raw"])
            out[fid] = {
                "model": name,
                "steps": steps,
                "ratio": round(ratio, 4),
                "fit_ratio": round(fit_ratio, 4),
                "losslab": ll,
                "raw": raw,
                "peak_rss_ratio": _ratio(ll["peak_rss_mib"], raw["peak_rss_mib"]),
            }
            self.row(
                fid,
                f"LossLab / raw loop, MLP {name}, {steps} steps",
                ratio,
                "x",
                f"{ll['median_s']:.2f}s vs {raw['median_s']:.2f}s; training alone {fit_ratio:.2f}x",
            )
            gpu = (
                f"; GPU {ll['device_peak_mib']} vs {raw['device_peak_mib']} MiB"
                if ll["device_peak_mib"]
                else ""
            )
            self.row(
                f"{fid}.mem",
                f"peak RSS above start, MLP {name}",
                None,
                "",
                f"LossLab {_mib(ll['peak_rss_mib'])}, raw {_mib(raw['peak_rss_mib'])}{gpu}",
            )
        out["note"] = (
            "ratio = the whole task.train(cfg) call (build, run create + params, training with every metric "
            "write, final metrics, config artifact, close; loss-curve PNG off) / the raw loop (same build, "
            "training and per-epoch validation); fit_ratio = trainer.fit (final/wall_seconds) / the raw "
            "loop's training alone. peak_rss_mib = growth of the process's RSS high-water mark above its "
            "RSS before the call (Linux clear_refs reset): memory freed by earlier calls is reused, so "
            "this is what a call needs beyond that."
        )
        self.results["1"] = out

    def section2(self) -> None:
        s = self.sizes
        ll_uri = self.store("s2-losslab")
        stock_uri = self.store("s2-stock", experiments=("bench-stock",))
        variants = {"losslab": lambda c: losslab_run(c, ll_uri), "stock": lambda c: stock_run(c, stock_uri)}
        samples = self._ab(variants, compose(mlp_overrides([256, 256], s.compare_steps, s.threads)))
        ratio = paired_ratio(samples["stock"], samples["losslab"])
        ll, stock = _summary(samples["losslab"]), _summary(samples["stock"])
        self.results["2"] = {
            "model": "32-256-256-1",
            "steps": s.compare_steps,
            "ratio": round(ratio, 4),
            "fit_ratio": round(paired_ratio(samples["stock"], samples["losslab"], "fit_seconds"), 4),
            "losslab": ll,
            "stock": stock,
            "peak_rss_ratio": _ratio(stock["peak_rss_mib"], ll["peak_rss_mib"]),
            "note": "stock = task.build (same data/model) + DataLoader(TensorDataset, shuffle) + "
            "Trainer(MLFlowLogger, log_every_n_steps=1) + self.log per step + log_dict(grad_norm) per step, "
            "into sqlite; ratio = stock / LossLab (whole calls), fit_ratio = trainer.fit alone.",
        }
        self.row(
            "2",
            f"stock Lightning+MLFlowLogger+grad_norm / LossLab, {s.compare_steps} steps",
            ratio,
            "x",
            f"{stock['median_s']:.2f}s vs {ll['median_s']:.2f}s",
        )
        self.row(
            "2.mem",
            "peak RSS above start, stock vs LossLab",
            None,
            "",
            f"stock {_mib(stock['peak_rss_mib'])}, LossLab {_mib(ll['peak_rss_mib'])}",
        )

    def section3(self) -> None:
        s = self.sizes
        with mlflow_server(self.tmp / "server") as server_uri:
            http_uri = self.store("s3-http", uri=server_uri)
            sqlite_uri = self.store("s3-sqlite")
            variants = {
                "http": lambda c: losslab_run(c, http_uri),
                "sqlite": lambda c: losslab_run(c, sqlite_uri),
            }
            samples = self._ab(variants, compose(mlp_overrides([256, 256], s.compare_steps, s.threads)))
        ratio = paired_ratio(samples["http"], samples["sqlite"])
        http, local = _summary(samples["http"]), _summary(samples["sqlite"])
        self.results["3"] = {
            "steps": s.compare_steps,
            "ratio": round(ratio, 4),
            "fit_ratio": round(paired_ratio(samples["http"], samples["sqlite"], "fit_seconds"), 4),
            "http": http,
            "sqlite": local,
            "note": "`mlflow server --workers 1` on 127.0.0.1 (this machine) over its own sqlite file; "
            "ratio = whole task.train calls, fit_ratio = trainer.fit alone.",
        }
        self.row(
            "3",
            f"LossLab over HTTP / into sqlite, {s.compare_steps} steps",
            ratio,
            "x",
            f"{http['median_s']:.2f}s vs {local['median_s']:.2f}s; training alone "
            f"{self.results['3']['fit_ratio']:.2f}x",
        )

    # -------------------------------------------------------------- 4

    def section4(self) -> None:
        s = self.sizes
        basic = run_sweep("basic", s, self.tmp, self.store("sweep-basic", experiments=("losslab",)))
        joblib = run_sweep("joblib", s, self.tmp, self.store("sweep-joblib", experiments=("losslab",)))
        speedup_jobs = basic["jobs_s"] / joblib["jobs_s"]
        speedup_total = basic["total_s"] / joblib["total_s"]
        self.results["4"] = {
            "jobs": s.sweep_jobs,
            "max_steps": s.sweep_steps,
            "basic": basic,
            "joblib": joblib,
            "overhead_per_job_s": basic["overhead_median_s"],
            "speedup_jobs": round(speedup_jobs, 4),
            "speedup_total": round(speedup_total, 4),
            "note": (
                "startup = process start to the first job's first line (imports, Hydra, store, parent run; "
                "joblib: also its workers' start and imports); jobs = first job's line to the sweep summary. "
                "Per-job overhead = median over jobs of (time between consecutive job starts - that job's "
                "trainer.fit seconds): build, run create/params, final writes, artifacts incl. the PNG, "
                "Hydra's per-job set-up. speedup_jobs = jobs(basic)/jobs(joblib); speedup_total likewise "
                "for the whole command."
            ),
        }
        self.row(
            "4.overhead",
            f"per-job overhead beyond training, basic launcher ({s.sweep_jobs} jobs)",
            basic["overhead_median_s"],
            "s",
            f"mean {basic['overhead_mean_s']:.2f}s, first job {basic['overhead_first_s']:.2f}s; "
            f"startup once per sweep {basic['startup_s']:.1f}s",
        )
        self.row(
            "4.speedup",
            f"joblib n_jobs=2 / basic, jobs phase ({s.sweep_jobs} jobs x {s.sweep_steps} steps)",
            speedup_jobs,
            "x",
            f"{basic['jobs_s']:.1f}s vs {joblib['jobs_s']:.1f}s; whole command {speedup_total:.2f}x "
            f"({basic['total_s']:.1f}s vs {joblib['total_s']:.1f}s; startup basic {basic['startup_s']:.1f}s, "
            f"joblib {joblib['startup_s']:.1f}s)",
        )

    # -------------------------------------------------------------- 5

    def section5(self) -> None:
        from . import compare
        from .synthetic import synthetic_experiment

        s = self.sizes
        uri = self.store("s5")
        with quiet():
            started = time.perf_counter()
            parent = synthetic_experiment(uri, s.report_runs, s.report_steps)
            setup = time.perf_counter() - started
        times = []
        for i in range(max(1, min(s.repeats, 3))):
            out = self.tmp / f"report-{i}"
            with quiet():
                started = time.perf_counter()
                compare.build_report(uri, "losslab-bench", parent, out)
                times.append(time.perf_counter() - started)
            shutil.rmtree(out, ignore_errors=True)
        median = statistics.median(times)
        self.results["5"] = {
            "runs": s.report_runs,
            "steps": s.report_steps,
            "report_s": [round(t, 3) for t in times],
            "median_s": round(median, 3),
            "setup_s": round(setup, 2),
            "note": "compare.build_report over one synthetic sweep (written by synthetic_experiment, "
            "not timed), sqlite, artifacts logged to the parent run; a fresh output folder each time.",
        }
        self.row(
            "5",
            f"comparison report, {s.report_runs} runs x {s.report_steps} steps",
            median,
            "s",
            f"each {', '.join(f'{t:.1f}s' for t in times)}; writing the experiment: {setup:.0f}s (untimed)",
        )

    # -------------------------------------------------------------- 6

    def section6(self) -> None:
        """Soak: many short jobs on 2 reused workers; count what reached the store, point by point."""
        s = self.sizes
        uri = self.store("soak", experiments=("losslab",))
        soak = Sizes(**{**s.__dict__, "sweep_jobs": s.soak_jobs, "sweep_steps": s.soak_steps})
        folder = self.tmp / "soak"
        folder.mkdir(exist_ok=True)
        figures = run_sweep("joblib", soak, folder, uri)
        from . import tracking

        client = tracking.open_store(uri)
        runs = [
            r
            for r in client.search_runs(
                [client.get_experiment_by_name("losslab").experiment_id], max_results=5000
            )
            if "mlflow.parentRunId" in r.data.tags
        ]
        finished = sum(r.info.status == "FINISHED" for r in runs)
        counts = [len(client.get_metric_history(r.info.run_id, "train/loss")) for r in runs]
        exact = sum(c == s.soak_steps for c in counts)
        self.results["6"] = {
            "jobs": s.soak_jobs,
            "steps": s.soak_steps,
            "runs": len(runs),
            "finished": finished,
            "points": sum(counts),
            "points_expected": s.soak_jobs * s.soak_steps,
            "runs_with_exactly_one_point_per_step": exact,
            "total_s": figures["total_s"],
        }
        self.row(
            "6",
            f"soak: {s.soak_jobs} jobs x {s.soak_steps} steps, joblib n_jobs=2",
            sum(counts),
            "points",
            f"{finished}/{s.soak_jobs} FINISHED, {exact} runs with exactly one point per step, "
            f"{sum(counts)} of {s.soak_jobs * s.soak_steps} points, {figures['total_s']:.0f}s",
        )

    # -------------------------------------------------------------- syncs

    def host_syncs(self) -> None:
        if not torch.cuda.is_available():
            self.results["syncs"] = {"per_step": None, "note": "n/a (no GPU)"}
            self.row("syncs", "host syncs per training step (CUDA sync debug)", None, "", "n/a (no GPU)")
            return
        per_step = count_syncs_per_step(self.sizes.threads, self.store("syncs"))
        self.results["syncs"] = {"per_step": per_step, "note": "torch.cuda.set_sync_debug_mode('warn')"}
        self.row("syncs", "host syncs per training step (CUDA sync debug)", per_step, "", "LossLab, GPU")


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 3)


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MiB"


def count_syncs_per_step(threads: int, uri: str, steps: int = 100) -> float:
    """Host syncs per step on CUDA: sync-debug warnings of a 2N-step run minus an N-step run, over N.

    The difference cancels set-up and end-of-run syncs (data to device, final flush, close).
    """
    counts = []
    for n in (steps, 2 * steps):
        cfg = compose([*mlp_overrides([256, 256], n, threads), "trainer.accelerator=gpu"])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                losslab_run_unquiet(cfg, uri)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(w.message).lower() for w in caught))
    return (counts[1] - counts[0]) / steps


def losslab_run_unquiet(cfg: Any, uri: str) -> None:
    """`task.train` without `quiet()` (which would swallow the sync warnings being counted)."""
    from . import task

    with tracking_env(uri), contextlib.redirect_stdout(io.StringIO()):
        task.train(cfg)


# ----------------------------------------------------------------------------- mlflow server


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def mlflow_server(folder: Path, timeout: float = 180.0) -> Iterator[str]:
    """A real `mlflow server` subprocess on a free local port; stopped on exit whatever happened."""
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]
    cmd += [
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder / 'server.db'}",
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = open(folder / "server.log", "w")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({proc.returncode}); see {folder / 'server.log'}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                if resp.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy after {timeout:.0f}s")
            time.sleep(0.25)
        _warm_server(uri)
        yield uri
    finally:
        _stop(proc)
        log.close()


def _warm_server(uri: str, calls: int = 12) -> None:
    """Write into a scratch run until the server has settled.

    Right after start a fresh `mlflow server` answers 1000-point log_batch calls 3-8x slower for
    ~10 s (lazy imports, its periodic jobs registering); timing that would bill start-up to HTTP.
    """
    from mlflow.entities import Metric

    from . import tracking

    with quiet():
        client = tracking.open_store(uri)
        run = client.create_run(tracking.ensure_experiment(client, "bench-warm-up"))
        ts = int(time.time() * 1000)
        for i in range(calls):
            points = [Metric(f"m{k}", 0.5, ts, i * 100 + s) for s in range(100) for k in range(10)]
            client.log_batch(run.info.run_id, metrics=points)
        client.set_terminated(run.info.run_id)


def _stop(proc: subprocess.Popen) -> None:
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


# ----------------------------------------------------------------------------- sweeps


def run_sweep(
    launcher: str, sizes: Sizes, tmp: Path, uri: str, overrides: Sequence[str] = (), timeout: float = 900.0
) -> dict[str, Any]:
    """`python train.py -m` over `seed=range(N)` into the store `uri`, every output line time-stamped.

    The store exists already (as a project's mlflow.db does), so its one-off schema creation is
    not billed to the sweep.
    """
    from . import tracking

    sweep_dir = tmp / f"sweep-{launcher}"
    cmd = [
        sys.executable,
        str(PROJECT_ROOT / "train.py"),
        "-m",
        f"hydra/launcher={launcher}",
        *(["hydra.launcher.n_jobs=2"] if launcher == "joblib" else []),
        f"seed=range({sizes.sweep_jobs})",
        f"trainer.max_steps={sizes.sweep_steps}",
        "trainer.enable_progress_bar=false",
        f"torch_threads={sizes.threads}",
        f"hydra.sweep.dir={sweep_dir}",
        *overrides,
    ]
    env = {k: v for k, v in os.environ.items() if k not in TRACKING_ENV}
    env.update(MLFLOW_TRACKING_URI=uri, PYTHONUNBUFFERED="1")
    lines: list[tuple[float, str]] = []
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    timer = threading.Timer(timeout, _stop, args=(proc,))
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.perf_counter() - started, line.rstrip("\n")))
        proc.wait()
    finally:
        timer.cancel()
        _stop(proc)
    total = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "\n".join(line for _, line in lines[-40:])
        raise RuntimeError(f"sweep ({launcher}) exited {proc.returncode}:\n{tail}")
    fit = _sweep_fit_seconds(tracking.open_store(uri), sweep_dir)
    return sweep_figures(lines, fit, total, sizes.sweep_jobs, per_job=launcher == "basic")


def sweep_figures(
    lines: Sequence[tuple[float, str]], fit: dict[int, float], total: float, jobs: int, per_job: bool
) -> dict[str, Any]:
    """Startup, jobs phase and per-job overhead from time-stamped sweep output.

    A job's first line is `[k/N] overrides` (printed by `task.train` as it starts); the sweep ends
    with `Sweep summary`. `fit`: job number k -> its trainer.fit seconds. `per_job` only where
    jobs run one after another (basic launcher), so the gap between two job starts is one job.
    """
    starts: dict[int, float] = {}
    for t, line in lines:
        found = re.match(r"\[(\d+)/[^\]]+\] ", line)
        if found:
            starts.setdefault(int(found.group(1)), t)
    summary = next((t for t, line in lines if line.startswith("Sweep summary")), total)
    if len(starts) != jobs or set(fit) != set(starts):
        raise RuntimeError(f"sweep: saw {len(starts)} job starts and {len(fit)} results, expected {jobs}")
    first = min(starts.values())
    out: dict[str, Any] = {
        "total_s": round(total, 3),
        "startup_s": round(first, 3),
        "jobs_s": round(summary - first, 3),
        "fit_sum_s": round(sum(fit.values()), 3),
    }
    if per_job:
        order = sorted(starts)
        ends = [starts[j] for j in order[1:]] + [summary]
        over = [end - starts[j] - fit[j] for j, end in zip(order, ends, strict=True)]
        out.update(
            overhead_median_s=round(statistics.median(over), 4),
            overhead_mean_s=round(statistics.fmean(over), 4),
            overhead_first_s=round(over[0], 4),
            overhead_per_job_s=[round(v, 3) for v in over],
        )
    return out


def _sweep_fit_seconds(client: Any, sweep_dir: Path) -> dict[int, float]:
    """Job number (1-based, as printed) -> its run's `final/wall_seconds`, via each job's result.json."""
    fit: dict[int, float] = {}
    for path in sweep_dir.glob("*/result.json"):
        if not path.parent.name.isdigit():
            continue
        row = json.loads(path.read_text())
        if row.get("status") != "FINISHED":
            raise RuntimeError(f"sweep job {path.parent.name} ended {row.get('status')}: {row.get('error')}")
        metrics = client.get_run(row["run_id"]).data.metrics
        fit[int(path.parent.name) + 1] = float(metrics["final/wall_seconds"])
    return fit


# ----------------------------------------------------------------------------- output


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = found.group(1).strip() if found else cpu
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "loadavg_start": [round(v, 2) for v in load] if load else None,
    }


def render(rows: list[dict[str, Any]], header: str) -> str:
    head = ("#", "figure", "value", "target", "status", "detail")
    body = []
    for r in rows:
        if r["value"] is None:
            value = "-"
        elif r["unit"] == "points":
            value = f"{int(r['value'])} points"
        else:
            value = f"{r['value']:.3g}{r['unit']}"
        body.append((r["id"], r["figure"], value, r["target"] or "-", r["status"], r["detail"]))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head[:-1])]
    lines = [header, ""]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False))  # noqa: E731
    lines.append(fmt(head[:-1]) + "  " + head[-1])
    lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    lines += [fmt(b[:-1]) + "  " + b[-1] for b in body]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    d = Sizes()
    p = argparse.ArgumentParser(
        prog="python -m losslab.bench",
        description="Tracking-overhead benchmark: ratios measured side by side in one process "
        "(alternating, median of paired rounds). Writes a table to stdout and JSON to --out.",
    )
    p.add_argument("--steps", type=int, default=d.steps, help=f"steps of the small MLP (default {d.steps})")
    p.add_argument(
        "--big-steps", type=int, default=d.big_steps, help=f"steps of the 4x1024 MLP (default {d.big_steps})"
    )
    p.add_argument(
        "--repeats", type=int, default=d.repeats, help=f"A/B rounds per ratio (default {d.repeats})"
    )
    p.add_argument(
        "--compare-steps",
        type=int,
        default=d.compare_steps,
        help=f"steps of the small MLP in sections 2 and 3 (default {d.compare_steps})",
    )
    p.add_argument("--sweep-jobs", type=int, default=d.sweep_jobs, help="jobs in the section-4 sweep")
    p.add_argument("--sweep-steps", type=int, default=d.sweep_steps, help="max_steps of each sweep job")
    p.add_argument("--report-runs", type=int, default=d.report_runs, help="runs in the section-5 experiment")
    p.add_argument("--report-steps", type=int, default=d.report_steps, help="steps per synthetic run")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads, the same for every variant")
    p.add_argument("--only", default=",".join(SECTIONS), help="sections to run, e.g. --only 1,3")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (figures not meaningful)")
    p.add_argument("--out", type=Path, default=Path("bench-results/latest.json"), help="JSON output path")
    return p


def sizes_from(args: argparse.Namespace) -> Sizes:
    if args.quick:
        return Sizes(
            steps=60,
            big_steps=4,
            compare_steps=60,
            repeats=1,
            sweep_jobs=2,
            sweep_steps=10,
            report_runs=6,
            report_steps=60,
            soak_jobs=4,
            soak_steps=10,
            threads=args.threads,
            quick=True,
        )
    return Sizes(
        steps=args.steps,
        big_steps=args.big_steps,
        compare_steps=args.compare_steps,
        repeats=args.repeats,
        sweep_jobs=args.sweep_jobs,
        sweep_steps=args.sweep_steps,
        report_runs=args.report_runs,
        report_steps=args.report_steps,
        threads=args.threads,
    )


def run(sizes: Sizes, only: Sequence[str], out: Path | None) -> dict[str, Any]:
    """Run the picked sections; return (and write to `out`) the JSON document."""
    torch.set_num_threads(sizes.threads)
    started = time.perf_counter()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="losslab-bench-") as tmp:
        bench = Bench(sizes, Path(tmp))
        sections = {"1": bench.section1, "2": bench.section2, "3": bench.section3, "4": bench.section4}
        sections["5"] = bench.section5
        sections["6"] = bench.section6
        for key in SECTIONS:
            if key in only:
                began = time.perf_counter()
                print(f"section {key} ...", end=" ", file=sys.stderr, flush=True)
                sections[key]()
                print(f"{time.perf_counter() - began:.0f}s", file=sys.stderr, flush=True)
        bench.host_syncs()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    info["loadavg_end"] = [round(v, 2) for v in load] if load else None
    doc = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join(["python -m losslab.bench", *sys.argv[1:]]),
        "machine": info,
        "sizes": sizes.__dict__,
        "seconds": round(time.perf_counter() - started, 1),
        "rows": bench.rows,
        "sections": bench.results,
        "targets": {k: {"op": op, "bound": b, "what": w} for k, (op, b, w) in TARGETS.items()},
    }
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1))
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        print(
            f"Error: unknown section(s) {', '.join(unknown)}; accepted: {', '.join(SECTIONS)}.",
            file=sys.stderr,
        )
        return 2
    sizes = sizes_from(args)
    doc = run(sizes, only, args.out)
    m = doc["machine"]
    header = (
        f"LossLab bench {doc['date']}  {m['cpus']} CPUs ({m['cpu']}), torch {m['torch']}, "
        f"{sizes.threads} thread(s), {sizes.repeats} paired round(s), load {m['loadavg_start']} -> "
        f"{m['loadavg_end']}, {doc['seconds']:.0f}s"
        + ("\n--quick: smoke-run sizes; the figures say nothing about the targets" if sizes.quick else "")
    )
    print(render(doc["rows"], header))
    if args.out is not None:
        print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
