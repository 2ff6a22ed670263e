"""Seeds trained stacked: the jobs of one design that differ only in `seed`, trained as one model.

`hydra/launcher=stacked` (src/hydra_plugins/losslab_stacked/) hands each group of such jobs to
`train_group`. Every seed stays its own job and its own MLflow run, made by the solo path's own code:

- *Set-up, per seed, as a solo job.* `build` (seeding, data, split, initialisation), then
  `job.start_run` (skip check, Trainer, LossLab's callbacks, params, tags, the run itself), in that
  seed's Hydra job context (output folder, `.hydra/`, train.log, result.json).
- *One batched step.* The seeds' weights are stacked along a new leading dimension
  (torch.func.stack_module_state's layout) and the forward and the loss run once for all seeds under
  `torch.func.vmap` + `functional_call`; one backward gives every seed its own gradient. Each seed
  keeps a real copy of the model whose parameters are views of its slice of the stacked weights, so
  everything after the backward runs per seed on exactly the tensors a solo run has: its gradient
  statistics, divergence guard and recording callbacks (the same `GradientStats`, `DivergenceGuard`
  and `TrackingCallback` objects, driven through the same hooks in Lightning's order), its gradient
  clipping (Lightning's precision plugin, on that seed's norm), its own optimizer and scheduler (any
  torch optimizer: state per seed), its validation, selection on val and test metrics (the same
  `LossLabModule` methods), its outcome label and final metrics (`job.finish_run`).
- *Data order per seed.* Each seed's batches are shuffled by its own copy of torch's RNG state, taken
  after its set-up, so the seed sees the permutations its solo run draws.
- *A seed that diverges* is stopped by its guard, validated once more (as Lightning does), closed
  FINISHED with its label, and dropped from the stack while the others go on.
- *Ctrl-C / SIGTERM* closes every open run of the group KILLED with its points.

Why not Lightning: a `pl.Trainer` drives one module, one optimizer loop and one `should_stop`; the
stack needs one forward for R runs but R optimizers, R guards that stop independently and R
validations. The loop here reproduces the parts of Lightning's fit loop LossLab's runs use (step
order, validation every epoch or `val_check_interval` batches and when the guard stops, scheduler
stepped after validation, clipping) and refuses the rest before any run exists (`check_group`).

The price of stacking: the replicas must share everything but the seed: model structure, data shape,
batch size, optimizer and trainer settings. Dropout is refused (vmap cannot draw a solo run's
masks), and so are losses vmap cannot trace (Python branches on tensor values, `.item()`): they
get one paragraph naming the loss and a plain launcher.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from losslab.config.build import build, user_error
from losslab.sweep import interrupts
from losslab.tracking.naming import SIZE_ENV, run_name
from losslab.tracking.params import redact_overrides, redact_uri, scrub_files
from losslab.train import job as solo
from losslab.train.stacked_checks import check_group, loss_name, loss_state
from losslab.train.stacked_replica import Replica, ReplicaTrainer, own_rng, replica_module_class, rng_state
from losslab.train.stacked_step import StackedStep

log = logging.getLogger("losslab.train.stacked")

#: the tag each stacked run carries: how many seeds were trained together
STACKED_TAG = "stacked_replicas"


# ----------------------------------------------------------------------------- the group


def train_group(configs: Sequence[DictConfig], enter: Callable[[int], Any]) -> list[solo.Result]:
    """Train the jobs `configs` (one design, several seeds) stacked; one `Result` per job, in order.

    `enter(i)` is a context manager that makes job i the current Hydra job (its output folder, its
    train.log). A group that cannot be stacked raises `ConfigError` before any run exists."""
    replicas: list[Replica] = []
    for i, cfg in enumerate(configs):
        with enter(i):
            replicas.append(_prepare(cfg))
    built = [r for r in replicas if r.result is None]
    if built:
        check_group(built)
    with interrupts.JobSignals() as signals:
        try:
            for i, rep in enumerate(replicas):
                if rep.result is None:
                    with enter(i):
                        _start(rep)
            live = [r for r in replicas if r.open]
            if live:
                _fit(live, replicas, enter)
        except BaseException as exc:
            killed = isinstance(exc, (KeyboardInterrupt, SystemExit)) or signals.signum is not None
            with signals.deferred():
                _close_all(replicas, exc, killed, signals.signum)
            first = next((r.result.run_id for r in replicas if r.result and r.result.run_id), None)
            if killed:
                reason = f"killed by {signal.Signals(signals.signum).name}" if signals.signum else ""
                raise solo.Interrupted(reason or str(exc) or "interrupted", first, signals.signum) from None
        with signals.deferred():
            for rep in replicas:
                solo.write_result(rep.out_dir, rep.result or _lost(rep), rep.overrides)
            if signals.signum is not None:
                raise KeyboardInterrupt(f"signal {signals.signum}")
    return [rep.result or _lost(rep) for rep in replicas]


def _lost(rep: Replica) -> solo.Result:
    return solo.Result("FAILED", rep.name, error="the stacked group ended before this run was closed")


def _prepare(cfg: DictConfig) -> Replica:
    """In job i's Hydra context: what `job.train` does before `_train`, then `build`."""
    choices, overrides, out_dir, job_num = solo.hydra_info()
    size = os.environ.get(SIZE_ENV, "?")
    prefix = f"[{job_num + 1}/{size}] " if job_num is not None else ""
    if prefix:
        log.info("%s%s", prefix, " ".join(redact_overrides(overrides)) or "(defaults)")
    name = run_name(cfg, choices)
    if out_dir is not None:
        scrub_files(out_dir / ".hydra" / f for f in ("config.yaml", "overrides.yaml", "hydra.yaml"))
    rep = Replica(cfg, name, prefix, overrides, out_dir, choices)
    try:
        rep.job = build(cfg)
    except Exception as exc:
        _failed(rep, exc)
        return rep
    rep.rng = rng_state()  # the RNG right after this seed's build, as in its solo run
    return rep


def _failed(rep: Replica, exc: BaseException) -> None:
    """A job that could not start: what `job.main` says and returns in a multirun."""
    err = user_error(exc)
    text = solo.describe(err or exc)
    log.error("%sError: %s", rep.prefix, text)
    rep.result = solo.Result("FAILED", rep.name, error=text)


def _start(rep: Replica) -> None:
    """In the job's Hydra context: `job.start_run` (skip, Trainer, callbacks, the run), on this seed's RNG."""
    assert rep.job is not None
    try:
        with own_rng(rep):
            started = solo.start_run(rep.cfg, rep.job, rep.choices, rep.overrides, rep.name, rep.prefix)
    except Exception as exc:
        _failed(rep, exc)
        return
    if isinstance(started, solo.Result):
        rep.result = started
        return
    rep.started = started
    log.info("%srun %s (%s) -> %s", rep.prefix, rep.name, started.recorder.run_id, redact_uri(started.uri))


# ----------------------------------------------------------------------------- the loop


def _hook(rep: Replica, name: str, *args: Any) -> None:
    """One Lightning callback hook on LossLab's callbacks, in the Trainer's order (the module's own
    hooks, where it has them, are called beside, after the callbacks' as Lightning does)."""
    assert rep.started is not None and rep.trainer is not None
    for cb in rep.started.callbacks:
        getattr(cb, name)(rep.trainer, rep.module, *args)


def _setup_replicas(live: list[Replica]) -> StackedStep:
    """Per replica: precision and device as Lightning sets them, its module, optimizer and scheduler;
    then the stack (views into it replace every replica's parameters)."""
    module_cls = replica_module_class()
    device = live[0].started.trainer.strategy.root_device  # type: ignore[union-attr]
    for rep in live:
        job = rep.job
        assert job is not None and rep.started is not None
        module = module_cls(job.model, job.loss, job.data, optimizer=job.optimizer, scheduler=job.scheduler)
        module = rep.started.trainer.precision_plugin.convert_module(module)
        module.to(device)
        rep.module = module
    losses = [rep.module.loss for rep in live]
    state = loss_state(losses, loss_name(live[0].cfg))
    step = StackedStep([rep.module.model for rep in live], losses, state)
    for rep in live:
        job = rep.job
        assert job is not None and rep.started is not None
        rep.data = job.data.to(device)
        datamodule = SimpleNamespace(data=rep.data)
        n_batches = len(rep.data.train_batches())
        rep.trainer = ReplicaTrainer(rep.started.trainer, datamodule, rep.started.callbacks, n_batches)
        rep.module.trainer = rep.trainer
        opt = rep.module.configure_optimizers()
        if isinstance(opt, dict):
            rep.optimizer, rep.scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
        else:
            rep.optimizer = opt
        solo.record_dataset(rep.started.client, rep.started.recorder.run_id, job.data)
        rep.started.recorder.set_tags({STACKED_TAG: str(len(live))})
    return step


def _next_batch(rep: Replica) -> tuple[Tensor, Tensor, Tensor | None]:
    """This replica's next batch; a new epoch's order is drawn from its own RNG."""
    if rep.batch_idx >= len(rep.batches):
        with own_rng(rep):
            rep.batches = list(rep.data.train_batches())
        rep.batch_idx = 0
        _hook(rep, "on_train_epoch_start")
    batch = rep.batches[rep.batch_idx]
    return rep.trainer.precision_plugin.convert_input(batch)  # type: ignore[union-attr]


def _validate(rep: Replica) -> None:
    """Lightning's validation of one replica: module hooks and `validation_step` over the val split."""
    module, trainer = rep.module, rep.trainer
    assert trainer is not None
    trainer.validating, trainer.training = True, False
    was = module.training
    module.eval()
    try:
        with torch.no_grad(), trainer.precision_plugin.val_step_context():
            _hook(rep, "on_validation_start")
            _hook(rep, "on_validation_epoch_start")
            module.on_validation_epoch_start()
            for i, batch in enumerate(rep.data.val_batches()):
                module.validation_step(trainer.precision_plugin.convert_input(batch), i)
            _hook(rep, "on_validation_epoch_end")
            module.on_validation_epoch_end()
            _hook(rep, "on_validation_end")
    finally:
        module.train(was)
        trainer.validating, trainer.training = False, True


def _fit(live: list[Replica], replicas: list[Replica], enter: Callable[[int], Any]) -> None:
    step = _setup_replicas(live)
    real = live[0].started.trainer  # type: ignore[union-attr]
    precision = real.precision_plugin
    from pytorch_lightning.utilities.enums import GradClipAlgorithmType

    index = {id(rep): i for i, rep in enumerate(replicas)}
    started = time.perf_counter()
    for rep in live:
        rep.started_at = started
        with own_rng(rep):  # torch.initial_seed() is this seed's in on_fit_start, as solo
            _hook(rep, "on_fit_start")
        _hook(rep, "on_train_start")
    position = {id(rep): i for i, rep in enumerate(live)}
    active = [rep for rep in live if not rep.trainer.done()]  # type: ignore[union-attr]
    while active:
        batches = [_next_batch(rep) for rep in active]
        rows = [position[id(rep)] for rep in active]
        x, y, w = _stack_batches(batches, rows, len(live))
        for rep, batch in zip(active, batches, strict=True):
            _hook(rep, "on_train_batch_start", batch, rep.batch_idx)
        for p in step.params.values():
            p.grad = None
        with precision.forward_context():
            losses, preds = step(x, y, w)
        for rep in active:
            _hook(rep, "on_before_zero_grad", rep.optimizer)
            rep.optimizer.zero_grad()
            rep.module.last_pred = preds[position[id(rep)]]
            _hook(rep, "on_before_backward", losses[position[id(rep)]])
        losses.sum().backward()
        for rep in active:
            i = position[id(rep)]
            own = dict(rep.module.model.named_parameters())
            for name, stacked in step.params.items():
                own[name].grad = None if stacked.grad is None else stacked.grad[i]
            _hook(rep, "on_after_backward")
            _hook(rep, "on_before_optimizer_step", rep.optimizer)
            clip = rep.trainer.gradient_clip_val  # type: ignore[union-attr]
            if clip:
                algorithm = GradClipAlgorithmType(rep.trainer.gradient_clip_algorithm or "norm")  # type: ignore[union-attr]
                rep.trainer.precision_plugin.clip_gradients(rep.optimizer, clip, algorithm)  # type: ignore[union-attr]
            rep.optimizer.step()
            rep.trainer.global_step += 1  # type: ignore[union-attr]
        detached = losses.detach()
        finished: list[Replica] = []
        for rep, batch in zip(active, batches, strict=True):
            trainer = rep.trainer
            assert trainer is not None
            out = {"loss": detached[position[id(rep)]]}
            _hook(rep, "on_train_batch_end", out, batch, rep.batch_idx)
            rep.batch_idx += 1
            epoch_end = rep.batch_idx >= len(rep.batches)
            if _should_validate(trainer, rep.batch_idx) or trainer.should_stop:
                _validate(rep)
            if rep.scheduler is not None:
                rep.scheduler.step()
            if epoch_end or trainer.done():
                _hook(rep, "on_train_epoch_end")
                if epoch_end:
                    trainer.current_epoch += 1
            if trainer.done():
                finished.append(rep)
        for rep in finished:
            active = [r for r in active if r is not rep]
            with enter(index[id(rep)]):
                _close_finished(rep)


def _should_validate(trainer: ReplicaTrainer, batch_in_epoch: int) -> bool:
    every = trainer.check_val_every_n_epoch
    if every is not None and (trainer.current_epoch + 1) % every != 0:
        return False
    return batch_in_epoch % trainer.val_check_batch == 0


def _stack_batches(
    batches: list[tuple[Tensor, Tensor, Tensor | None]], rows: list[int], total: int
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The active replicas' batches stacked into the stack's R rows; a stopped replica's row repeats an
    active one's batch (its weights are frozen: what it computes is never used)."""
    by_row = dict(zip(rows, batches, strict=True))
    filler = batches[0]
    full = [by_row.get(r, filler) for r in range(total)]
    sizes = {b[0].shape[0] for b in full}
    if len(sizes) > 1:  # a short last batch for some replicas only cannot happen: equal data sizes
        raise RuntimeError("stacked replicas reached batches of different sizes")
    x = torch.stack([b[0] for b in full])
    y = torch.stack([b[1] for b in full])
    w = None if full[0][2] is None else torch.stack([b[2] for b in full])  # type: ignore[misc]
    return x, y, w


def _close_finished(rep: Replica) -> None:
    """The end of this replica's fit, then the solo run's `finish_run` (label, metrics, artifacts, close)."""
    assert rep.started is not None and rep.trainer is not None
    _hook(rep, "on_train_end")
    _hook(rep, "on_fit_end")
    wall = time.perf_counter() - rep.started_at
    s = rep.started
    with interrupts.closing():
        rep.result = solo.finish_run(
            rep.cfg,
            s.recorder,
            rep.trainer,
            rep.module,
            s.guard,
            rep.job.rules,
            wall,
            rep.name,
            rep.prefix,
            s.resolved,  # type: ignore[union-attr]
        )


def _close_all(replicas: list[Replica], exc: BaseException, killed: bool, signum: int | None) -> None:
    """Every open run of the group closed: KILLED on a signal (points flushed), else FAILED with the error."""
    status = "KILLED" if killed else "FAILED"
    error = f"killed by {signal.Signals(signum).name}" if signum else (None if killed else solo.describe(exc))
    for rep in replicas:
        if not rep.open:
            continue
        s = rep.started
        assert s is not None
        if rep.trainer is not None:
            for cb in s.callbacks:
                with contextlib.suppress(Exception):
                    cb.on_exception(rep.trainer, rep.module, exc)
        with contextlib.suppress(Exception):
            s.recorder.close(status, error=error if not killed else None)
        rep.result = solo.Result(status, rep.name, run_id=s.recorder.run_id, error=error)
        if not killed:
            log.error("%sError: %s", rep.prefix, error)
        solo.write_result(rep.out_dir, rep.result, rep.overrides)
