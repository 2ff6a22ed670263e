"""`train(cfg)`: one training job, from a composed config to a closed MLflow run.

Order matters: `build` checks everything a user can get wrong before the MLflow run
exists; once the run exists, every exit path (success, divergence, exception, Ctrl-C,
SIGTERM) closes it with a final status.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn

from losslab.config.build import ConfigError, Job, build, trainer_error, user_error
from losslab.sweep import interrupts
from losslab.tracking import fingerprint
from losslab.tracking.naming import SIZE_ENV, choice_label, config_hash, loss_label, run_name
from losslab.tracking.params import (
    flatten,
    redact_overrides,
    redact_text,
    redact_tree,
    redact_uri,
    scrub_files,
)
from losslab.vocab import HIGHER_IS_BETTER, STALE_AFTER, TASK_METRICS, primary_metric

if TYPE_CHECKING:  # Lightning and MLflow cost ~7 s to import: loaded only once a config is valid
    import pytorch_lightning as pl

    from losslab.outcomes.rules import OutcomeRules
    from losslab.tracking import recorder as tracking
    from losslab.train.callbacks.guard import DivergenceGuard
#: size of the value handed back to a sweeper for a run that diverged or failed, in the bad direction
#: of the metric (-1e12 for accuracy, +1e12 for rmse): finite, so Optuna & co. keep going
PENALTY = 1.0e12
log = logging.getLogger("losslab.train.job")


def _progress_bar(cfg: DictConfig) -> bool:
    setting = OmegaConf.select(cfg, "trainer.enable_progress_bar", default=None)
    return sys.stderr.isatty() if setting is None else bool(setting)


def hydra_info() -> tuple[dict[str, str], list[str], Path | None, int | None]:
    """Choices, overrides, output dir and job number of the current Hydra job (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}, [], None, None
    hc = HydraConfig.get()
    choices = {
        k: str(v) for k, v in hc.runtime.choices.items() if v is not None and not k.startswith("hydra/")
    }
    num = hc.job.get("num") if hc.mode is not None and hc.mode.name == "MULTIRUN" else None
    return choices, list(hc.overrides.task), Path(hc.runtime.output_dir), num


@dataclass
class Result:
    """What a job hands back: to the sweeper (objective) and to the sweep summary (result.json)."""

    status: str
    name: str
    run_id: str | None = None
    outcome: str | None = None
    val_loss: float | None = None
    error: str | None = None
    metric: str | None = None  # the selection metric, e.g. "accuracy"
    metric_value: float | None = None  # its value at the selected validation (best/val_<metric>)

    @property
    def objective(self) -> float:
        """The selected val task metric; a diverged, failed or unscored run gets the bad extreme."""
        ok = self.status in ("FINISHED", "SKIPPED") and self.outcome != "diverged"
        v = self.metric_value
        if ok and v is not None and math.isfinite(v):
            return v
        return penalty(self.metric)


class Interrupted(KeyboardInterrupt):
    """A job stopped by a signal (Ctrl-C, SIGTERM, SIGHUP), its run already closed KILLED.

    Lightning turns the KeyboardInterrupt a signal raises into `SystemExit(1)`; this takes its place,
    so the command exits 128 + the signal's number with one line, and result.json names the run."""

    def __init__(self, message: str, run_id: str | None = None, signum: int | None = None) -> None:
        super().__init__(message)
        self.run_id, self.signum = run_id, signum


def penalty(metric: str | None) -> float:
    """The finite value a sweeper gets for a run with no usable score: the bad extreme of `metric`
    (-PENALTY where higher is better, +PENALTY otherwise), so a failed run never looks like the best."""
    return -PENALTY if HIGHER_IS_BETTER.get(metric or "", False) else PENALTY


def config_penalty(cfg: DictConfig) -> float:
    """`penalty` for the primary metric of the config's task (`data.task`); +PENALTY if it has none."""
    task = OmegaConf.select(cfg, "data.task", default=None)
    return penalty(primary_metric(task) if task in TASK_METRICS else None)


def write_result(out_dir: Path | None, result: Result, overrides: list[str]) -> None:
    if out_dir is None:
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {**result.__dict__, "overrides": redact_overrides(overrides)}
    if payload.get("error"):
        payload["error"] = redact_text(str(payload["error"]))
    (out_dir / "result.json").write_text(json.dumps(payload, indent=1))


def train(cfg: DictConfig) -> Result:
    """Run one job; raise on user errors before any run exists, close the run on any exit."""
    choices, overrides, out_dir, job_num = hydra_info()
    size = os.environ.get(SIZE_ENV, "?")
    prefix = f"[{job_num + 1}/{size}] " if job_num is not None else ""
    if ddp_child():
        out_dir, prefix = None, ""  # rank 0 prints and reports the job
    if prefix:
        log.info("%s%s", prefix, " ".join(redact_overrides(overrides)) or "(defaults)")
    name = run_name(cfg, choices)
    if out_dir is not None:  # Hydra wrote the config as given, secrets included, before this job ran
        scrub_files(out_dir / ".hydra" / f for f in ("config.yaml", "overrides.yaml", "hydra.yaml"))
    interrupts.watch_driver()  # a worker exits when its sweep's driver is gone (even kill -9)
    with interrupts.JobSignals() as signals:
        try:
            result = _train(cfg, choices, overrides, name, prefix)
        except BaseException as exc:
            killed = isinstance(exc, (KeyboardInterrupt, SystemExit)) or signals.signum is not None
            run_id = getattr(exc, "run_id", None)  # set once the run existed (Interrupted, RunFailed)
            with signals.deferred():
                status = "KILLED" if killed else "FAILED"
                error = (
                    f"killed by {signal.Signals(signals.signum).name}" if signals.signum else describe(exc)
                )
                write_result(out_dir, Result(status=status, name=name, run_id=run_id, error=error), overrides)
                if killed and signals.signum is not None and interrupts.in_worker():
                    if interrupts.sweep_stopping(wait=2.0):
                        interrupts.exit_worker(130)  # the sweep is stopping: take no further job
                    # only this job was signalled: a failed job, the sweep goes on and reports it
                    log.warning("%skilled: %s (%s)", prefix, name, error)
                    return Result("KILLED", name, run_id=run_id, error=error)
            if killed and (signals.signum is not None or isinstance(exc, KeyboardInterrupt)):
                raise Interrupted(error, run_id, signals.signum or getattr(exc, "signum", None)) from None
            raise
        with signals.deferred():
            write_result(out_dir, result, overrides)
            if signals.signum is not None:  # arrived while the run closed: it is complete, now stop
                if not interrupts.in_worker():
                    raise KeyboardInterrupt(f"signal {signals.signum}")
                if interrupts.sweep_stopping(wait=2.0):
                    interrupts.exit_worker(130)
    return result


def describe(exc: BaseException) -> str:
    """The error a FAILED run records: the message of a user error, else the exception type and message."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, Interrupted):  # its message is the reason (a signal, SLURM's time limit)
        return text
    return text if isinstance(user_error(exc), BaseException) else f"{type(exc).__name__}: {text}"


def ddp_child() -> bool:
    """True in the extra processes Lightning's DDP launcher starts (they re-run this script)."""
    return int(os.environ.get("LOCAL_RANK", "0") or 0) > 0 or int(os.environ.get("NODE_RANK", "0") or 0) > 0


def _train_as_ddp_child(cfg: DictConfig, job: Job) -> Result:
    """A non-zero rank: train in lockstep (collectives included) but record nothing; rank 0 owns the run."""
    from losslab.data.datamodule import TensorDataModule
    from losslab.train.callbacks import build_callbacks
    from losslab.train.module import LossLabModule

    trainer = _trainer(cfg, build_callbacks(cfg, job.rules, buffer=None).in_order())
    module = LossLabModule(job.model, job.loss, job.data, optimizer=job.optimizer, scheduler=job.scheduler)
    trainer.fit(module, datamodule=TensorDataModule(job.data))
    return Result("FINISHED", "ddp-child")


@contextlib.contextmanager
def _single_job_argv(overrides: list[str]) -> Iterator[None]:
    """Inside a multirun, DDP's launcher re-runs sys.argv: make that this one job, not the whole sweep."""
    from hydra.core.hydra_config import HydraConfig

    multirun = HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN"
    saved = sys.argv[:]
    if multirun:
        sys.argv = [sys.argv[0], *overrides]
    try:
        yield
    finally:
        sys.argv = saved


@contextlib.contextmanager
def _fresh_process_group() -> Iterator[None]:
    """Undo what a DDP job leaves behind, so the next job of a sweep in this process starts clean.

    Lightning's launcher sets LOCAL_RANK, MASTER_PORT, ... in this process's environment and keeps
    its process group; left there, the next job believes its ranks already exist and waits forever.
    """
    saved = dict(os.environ)
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key in set(os.environ) - set(saved):
            del os.environ[key]
        os.environ.update(saved)


def _train(cfg: DictConfig, choices: dict[str, str], overrides: list[str], name: str, prefix: str) -> Result:
    job = build(cfg)
    if ddp_child():
        return _train_as_ddp_child(cfg, job)
    from losslab.data.datamodule import TensorDataModule
    from losslab.train.module import LossLabModule

    started = start_run(cfg, job, choices, overrides, name, prefix)
    if isinstance(started, Result):  # skipped: a FINISHED or running run holds this config
        return started
    recorder, trainer, tracker, guard = started.recorder, started.trainer, started.tracker, started.guard
    uri, client, resolved, rules = started.uri, started.client, started.resolved, job.rules
    started_at = time.perf_counter()
    try:
        log.info("%srun %s (%s) -> %s", prefix, name, recorder.run_id, redact_uri(uri))
        record_dataset(client, recorder.run_id, job.data)
        module = LossLabModule(
            job.model, job.loss, job.data, optimizer=job.optimizer, scheduler=job.scheduler
        )
        with _single_job_argv(overrides), _fresh_process_group():
            trainer.fit(module, datamodule=TensorDataModule(job.data))
    except BaseException as exc:
        interrupted = tracker.interrupted or isinstance(exc, KeyboardInterrupt)
        status = "KILLED" if interrupted else "FAILED"
        cause = tracker.exception if tracker.exception is not None else exc
        with interrupts.closing():
            recorder.close(status, error=None if interrupted else describe(cause))
        if interrupted:  # Lightning made the signal's KeyboardInterrupt a SystemExit(1): keep its reason
            reason = tracker.exception if isinstance(tracker.exception, KeyboardInterrupt) else exc
            raise Interrupted(str(reason) or "interrupted", recorder.run_id) from None
        if tracker.exception is not None and tracker.exception is not exc:
            raise tracker.exception from None
        raise
    wall = time.perf_counter() - started_at
    with interrupts.closing():  # a signal now waits until the run is closed complete
        return finish_run(cfg, recorder, trainer, module, guard, rules, wall, name, prefix, resolved)


@dataclass
class Started:
    """A job's MLflow run, created, with what trains into it: the Trainer and LossLab's callbacks."""

    recorder: tracking.RunRecorder
    trainer: pl.Trainer
    tracker: Any  # TrackingCallback
    guard: DivergenceGuard | None
    callbacks: list[Any]  # LossLab's, in the Trainer's order: GradientStats, [guard], tracker
    client: Any
    uri: str
    resolved: dict[str, Any]


def start_run(
    cfg: DictConfig, job: Job, choices: dict[str, str], overrides: list[str], name: str, prefix: str
) -> Started | Result:
    """Open the store, skip a config already done, build the Trainer and callbacks, create the run.

    Everything Lightning can refuse is refused before the run exists. A `Result` (SKIPPED) when a
    FINISHED run of the same config and source exists or another run claimed it first."""
    from losslab.tracking import recorder as tracking
    from losslab.tracking.store import (
        ensure_experiment,
        open_store,
        resolve_experiment_name,
        resolve_tracking_uri,
    )
    from losslab.train.callbacks import build_callbacks

    uri = resolve_tracking_uri(cfg.tracking.get("uri"))
    client = open_store(uri)
    exp_id = ensure_experiment(client, resolve_experiment_name(cfg.tracking.get("experiment")))
    chash = config_hash(cfg)
    sources = fingerprint.current(cfg, {"loss": job.loss, "model": job.model})
    source_tags: dict[str, str] = dict(sources)
    if not cfg.get("rerun", False):
        done = tracking.find_finished(client, exp_id, chash, sources)
        if done is not None and not done.changed:
            log.info("%sskip: %s already FINISHED as run %s (rerun=true forces)", prefix, name, done.run_id)
            metric = primary_metric(job.data.task)
            value = client.get_run(done.run_id).data.metrics.get(f"best/val_{metric}")
            return Result("SKIPPED", name, done.run_id, done.outcome, done.val_loss, None, metric, value)
        if done is not None:
            kinds = ",".join(done.changed)
            source_tags.update({fingerprint.CHANGED_TAG: kinds, fingerprint.SINCE_TAG: done.run_id})
            log.info(
                "%sre-run: %s was FINISHED as run %s, but the %s source changed since (%s)",
                prefix,
                name,
                done.run_id,
                " and ".join(done.changed),
                ", ".join(fingerprint.target_of(cfg, k) or k for k in done.changed),
            )

    gradcheck_tags = _maybe_gradcheck(cfg, job.loss)
    rules = job.rules
    # Everything Lightning can refuse is refused here, before the run exists.
    from losslab.train.steplog import StepBuffer

    buffer = StepBuffer(capacity=int(cfg.tracking.get("flush_every", 256)))
    ours = build_callbacks(cfg, rules, buffer)
    trainer = _trainer(cfg, ours.in_order())
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    params = flatten(resolved)
    precision_tags = _precision(cfg, trainer, params, prefix)
    tags = {
        "loss": loss_label(cfg, choices),
        "loss_target": str(cfg.loss.get("_target_")),
        "model": choice_label(cfg, choices, "model"),
        "data": job.data.name,
        "task": job.data.task,
        "heldout": "true" if job.data.heldout else "false",
        "labels": job.data.labels,  # the encoding the loss trained on: pm1, 01, real
        "labels_from": job.labels_from,  # loss, config, torch docs, undeclared (see label_domains)
        "optimizer": choice_label(cfg, choices, "optimizer"),
        "overrides": " ".join(redact_overrides(overrides)),
        "losslab.config_hash": chash,
        "losslab.version": _version(),
        **source_tags,
        **gradcheck_tags,
        **precision_tags,
    }
    try:
        recorder = tracking.RunRecorder.start(
            client,
            exp_id,
            name,
            params,
            tags,
            parent_run_id=os.environ.get(tracking.PARENT_ENV) or None,
            retry_seconds=float(cfg.tracking.get("retry_seconds", 60)),
            flush_every=int(cfg.tracking.get("flush_every", 256)),
            buffer=buffer,
            claim_hash=chash,
            finished_counts=not cfg.get("rerun", False),
            heartbeat_seconds=float(cfg.tracking.get("heartbeat_seconds", 30)),
            stale_after=float(cfg.tracking.get("stale_after", STALE_AFTER)),
        )
    except tracking.ConfigClaimed as claimed:
        holder = claimed.holder
        state = "already FINISHED" if holder.info.status == "FINISHED" else "running now"
        log.info("%sskip: %s is %s as run %s (claimed first)", prefix, name, state, holder.info.run_id)
        metric = holder.data.metrics.get("final/val_loss")
        task_metric = primary_metric(job.data.task)
        chosen = holder.data.metrics.get(f"best/val_{task_metric}")
        outcome = holder.data.tags.get("outcome")
        return Result("SKIPPED", name, holder.info.run_id, outcome, metric, None, task_metric, chosen)
    ours.tracker.recorder = recorder
    return Started(recorder, trainer, ours.tracker, ours.guard, ours.in_order(), client, uri, resolved)


def finish_run(
    cfg: DictConfig,
    recorder: tracking.RunRecorder,
    trainer: pl.Trainer,
    module: Any,
    guard: DivergenceGuard | None,
    rules: OutcomeRules,
    wall: float,
    name: str,
    prefix: str,
    resolved: dict[str, Any],
) -> Result:
    """Classify the curve, record final metrics, tags and artifacts, close the run FINISHED."""
    from losslab.outcomes.classify import classify, overfitting

    try:
        curve = recorder.history.get("train/loss", [])
        values = [v for _, v in curve]
        planned = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else len(values)
        outcome = classify(values, rules, planned_steps=planned) if values else None
        val = module.val_loss
        val_loss = float(val) if val is not None else None
        vals = [v for _, v in recorder.history.get("val/loss", [])]
        finite_vals = [v for v in vals if math.isfinite(v)]
        steps = trainer.global_step
        final = {
            "final/steps": steps,
            "final/wall_seconds": wall,
            "final/steps_per_second": steps / max(wall, 1e-9),
        }
        if values:
            final["final/train_loss"] = values[-1]
        if val_loss is not None:
            final["final/val_loss"] = val_loss
        if finite_vals:
            final["best/val_loss"] = min(finite_vals)
        final.update(module.selection_metrics())  # best/val_<m>, best/step, test/<m> (selected on val)
        tags: dict[str, Any] = {}
        if outcome is not None:
            tags.update(outcome=outcome.label, outcome_reason=outcome.reason)
            bad = outcome.first_bad_step
            if bad is not None:
                bad_step = curve[bad][0]
                tags["first_bad_step"] = bad_step
                final["outcome/first_bad_step"] = bad_step
        over = overfitting(
            curve,
            recorder.history.get("val/loss", []),
            rules,
            metric=module.primary,
            metric_curve=module.primary_history,
        )
        tags.update(overfitting=str(over.flag).lower(), overfitting_reason=over.reason)
        if over.best_val_step is not None:
            tags["best_val_step"] = over.best_val_step
        stopped = guard.state() if guard is not None else {}
        if stopped.get("diverged"):
            tags["stopped_early"] = "diverged"
            tags["stop_reason"] = stopped.get("reason", "")
        elif _early_stopped(trainer):
            tags["stopped_early"] = "early_stopping"
        recorder.log_metrics(final, step=steps)
        recorder.set_tags(tags)
        _log_artifacts(cfg, recorder, resolved, curve, recorder.history.get("val/loss", []), name)
    except BaseException as exc:
        killed = isinstance(exc, KeyboardInterrupt)
        recorder.close("KILLED" if killed else "FAILED", error=None if killed else describe(exc))
        raise
    recorder.close("FINISHED")
    label = outcome.label if outcome else "unknown"
    shown = f"{val_loss:.4g}" if val_loss is not None else "n/a"
    metric = module.primary
    chosen = final.get(f"best/val_{metric}")
    shown_metric = f" best val/{metric}={chosen:.4g}" if chosen is not None else ""
    log.info(
        "%sdone: %s outcome=%s val/loss=%s%s steps=%d (%.1fs)",
        prefix,
        name,
        label,
        shown,
        shown_metric,
        trainer.global_step,
        wall,
    )
    return Result("FINISHED", name, recorder.run_id, label, val_loss, None, metric, chosen)


def _early_stopped(trainer: pl.Trainer) -> bool:
    """Whether a configured Lightning EarlyStopping callback ended the run."""
    from pytorch_lightning.callbacks import EarlyStopping

    return any(isinstance(cb, EarlyStopping) and cb.stopped_epoch > 0 for cb in trainer.callbacks)


def record_dataset(client: Any, run_id: str, data: Any) -> None:
    """The run's data as MLflow inputs (Dataset column); a failure here costs a warning, not the run."""
    from losslab.tracking import recorder as tracking

    try:
        splits = {
            "train": (data.x_train, data.y_train),
            "validation": (data.x_val, data.y_val),
            "test": (data.x_test, data.y_test),
        }
        tracking.log_dataset(client, run_id, data.name, splits)
    except Exception as exc:
        log.warning("warning: run %s has no dataset input (%s: %s)", run_id, type(exc).__name__, exc)


def _log_artifacts(
    cfg: DictConfig,
    recorder: tracking.RunRecorder,
    resolved: dict[str, Any],
    curve: list[tuple[int, float]],
    val_curve: list[tuple[int, float]],
    name: str,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "config.yaml"
        cfg_path.write_text(OmegaConf.to_yaml(OmegaConf.create(redact_tree(resolved))))
        recorder.log_artifact(cfg_path)
        if cfg.tracking.get("log_curve_png", True) and curve:
            from losslab.train.curve_plot import loss_curve_png

            png = loss_curve_png(curve, val_curve, Path(tmp) / "loss_curve.png", title=name)
            recorder.log_artifact(png)


@dataclass
class TrainerSetup:
    """The trainer config with the user's callbacks, logger and checkpointing already built.

    Built before the MLflow run exists, so a bad callback or logger leaves no run behind.
    """

    node: DictConfig
    callbacks: list[Any]
    logger: Any
    checkpointing: bool


def trainer_setup(cfg: DictConfig) -> TrainerSetup:
    """Split `trainer.callbacks`, `trainer.logger`, `trainer.enable_checkpointing` off the config, built."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    node = OmegaConf.create(OmegaConf.to_container(cfg.trainer, resolve=True))
    assert isinstance(node, DictConfig)
    user = {k: node.pop(k) if k in node else None for k in ("callbacks", "logger", "enable_checkpointing")}
    extra = _user_objects(user["callbacks"], "trainer.callbacks")
    logger = user["logger"]
    if isinstance(logger, (DictConfig, ListConfig)):
        logger = _user_objects(logger, "trainer.logger")
    checkpointing = user["enable_checkpointing"]
    if checkpointing is None:  # a configured ModelCheckpoint needs it on; LossLab itself saves none
        checkpointing = any(isinstance(cb, ModelCheckpoint) for cb in extra)
    return TrainerSetup(node, extra, False if logger is None else logger, bool(checkpointing))


def _trainer(cfg: DictConfig, callbacks: list[Any], setup: TrainerSetup | None = None) -> pl.Trainer:
    """The configured Trainer; the config's callbacks (after LossLab's), logger and
    enable_checkpointing are merged with LossLab's settings, never dropped."""
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    warnings.filterwarnings("ignore", message=".*treespec.*LeafSpec.*")  # Lightning 2.6 vs torch 2.13 noise
    # where SLURM is installed, Lightning suggests `srun python ...` for every run outside a SLURM job
    warnings.filterwarnings("ignore", message="The `srun` command is available on your system")
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    setup = setup or trainer_setup(cfg)
    kwargs = {
        "callbacks": [*callbacks, *setup.callbacks],
        "logger": setup.logger,
        "enable_checkpointing": setup.checkpointing,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "enable_progress_bar": _progress_bar(cfg),
    }
    try:
        return instantiate(setup.node, **kwargs)
    except InstantiationException as exc:
        raise trainer_error(exc, cfg) from None
    except MisconfigurationException as exc:  # e.g. a ModelCheckpoint with enable_checkpointing=false
        raise ConfigError(f"Lightning refused the trainer callbacks: {' '.join(str(exc).split())}") from None


def _user_objects(node: Any, key: str) -> list[Any]:
    """Instantiate a configured callback or logger (one node or a list of them)."""
    if node is None:
        return []
    items = list(node) if isinstance(node, ListConfig) else [node]
    out = []
    for item in items:
        if not isinstance(item, DictConfig) or "_target_" not in item:
            shown = OmegaConf.to_container(item) if isinstance(item, (DictConfig, ListConfig)) else item
            raise ConfigError(
                f"{key} entry {shown!r} is not valid; accepted: a config with _target_, e.g. "
                f"'+{key}=[{{_target_:pytorch_lightning.callbacks.EarlyStopping,monitor:val/loss}}]'."
            )
        try:
            out.append(instantiate(item))
        except InstantiationException as exc:
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"{key} entry {item.get('_target_')} rejected: {text}") from None
    return out


def _precision(cfg: DictConfig, trainer: pl.Trainer, params: dict[str, str], prefix: str) -> dict[str, str]:
    """Record the precision Lightning really uses (16 on a CPU becomes bf16-mixed), not the one asked."""
    asked = str(OmegaConf.select(cfg, "trainer.precision", default=""))
    used = str(trainer.precision)
    params["trainer.precision"] = used
    if asked in ("", used):
        return {"precision": used}
    log.info("%snote: trainer.precision=%s runs as %s here (recorded as %s)", prefix, asked, used, used)
    return {"precision": used, "precision_requested": asked}


def _maybe_gradcheck(cfg: DictConfig, loss: nn.Module) -> dict[str, str]:
    if not cfg.get("check_grads", False):
        return {}
    from losslab.losses.fd_check import check_configured_loss

    report = check_configured_loss(loss)
    if not report.passed and not cfg.get("check_grads_continue", False):
        raise ConfigError(
            f"the gradient check failed for loss {cfg.loss.get('_target_')}: {report.summary()}. "
            "Fix the loss's backward, or pass check_grads_continue=true to train anyway."
        )
    return {"gradcheck": "passed" if report.passed else "failed"}


def _version() -> str:
    from losslab import __version__

    return __version__


def main(cfg: DictConfig) -> float:
    """Entry point behind train.py: one paragraph for user errors, a finite objective for sweepers.

    In a multirun, a failing job is recorded (result.json, MLflow FAILED) and the sweep goes
    on; the sweep callback reports it and exits non-zero at the end.
    """
    from hydra.core.hydra_config import HydraConfig

    multirun = HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN"
    try:
        return train(cfg).objective
    except KeyboardInterrupt as stop:
        if multirun:
            raise  # the sweep's driver says it and exits 130
        signum = getattr(stop, "signum", None) or signal.SIGINT
        run_id = getattr(stop, "run_id", None)
        closed = f"; run {run_id} was closed as KILLED with its points" if run_id else "; no run was recorded"
        print(f"interrupted by {signal.Signals(signum).name}{closed}", file=sys.stderr, flush=True)
        sys.exit(128 + int(signum))
    except Exception as exc:
        err = user_error(exc)
        if not multirun and (err is None or os.environ.get("HYDRA_FULL_ERROR") == "1"):
            raise  # a programming error (ours or a user's loss), or asked for: keep the traceback
        log.error("Error: %s", describe(err or exc))
        if not multirun:
            sys.exit(2)
        return config_penalty(cfg)
