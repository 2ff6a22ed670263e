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
  `LossLabModule` methods), its outcome label and final metrics (`job._finish`).
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
import copy
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from losslab.config.build import ConfigError, Job, build, probe_copy, user_error
from losslab.losses import accepts_weight
from losslab.losses.base import call_loss
from losslab.sweep import interrupts
from losslab.tracking.naming import SIZE_ENV, run_name
from losslab.tracking.params import redact_overrides, redact_uri, scrub_files
from losslab.train import job as solo

log = logging.getLogger("losslab.train.stacked")

#: trainer keys the stacked loop honours (any value, checked below where it matters); any other
#: trainer key (accumulate_grad_batches, limit_*_batches, min_steps, ...) is refused before any run
SUPPORTED_TRAINER_KEYS = frozenset(
    {
        "_target_",
        "max_epochs",
        "max_steps",
        "accelerator",
        "devices",
        "strategy",
        "precision",
        "check_val_every_n_epoch",
        "val_check_interval",
        "gradient_clip_val",
        "gradient_clip_algorithm",
        "deterministic",
        "benchmark",
        "enable_progress_bar",
        "enable_model_summary",
        "num_sanity_val_steps",
        "default_root_dir",
        "callbacks",
        "logger",
        "enable_checkpointing",
    }
)
PRECISIONS = ("32-true", "64-true")
#: the tag each stacked run carries: how many seeds were trained together
STACKED_TAG = "stacked_replicas"
PLAIN = "hydra/launcher=basic (one job after another) or hydra/launcher=joblib (parallel workers)"


class _OneDevice:
    """The parts of a Lightning strategy LossLab's callbacks read, for one process on one device."""

    def __init__(self, device: torch.device) -> None:
        self.root_device = device

    def reduce(self, value: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return value

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        return decision


class ReplicaTrainer:
    """What LossLab's callbacks and module read of a `pl.Trainer`, for one replica of the stack.

    The values come from the replica's real Trainer (built by `start_run`, never fitted): max steps,
    clipping, precision; the counters are this replica's."""

    def __init__(self, real: Any, datamodule: Any, callbacks: list[Any], batches_per_epoch: int) -> None:
        self.global_step = 0
        self.current_epoch = 0
        self.should_stop = False
        self.sanity_checking = False
        self.training, self.validating, self.testing = True, False, False
        self.world_size, self.global_rank, self.local_rank, self.is_global_zero = 1, 0, 0, True
        self.max_steps = int(real.max_steps)
        self.max_epochs = real.max_epochs
        self.gradient_clip_val = real.gradient_clip_val
        self.gradient_clip_algorithm = real.gradient_clip_algorithm
        self.check_val_every_n_epoch = real.check_val_every_n_epoch
        self.precision = real.precision
        self.precision_plugin = real.precision_plugin
        self.strategy = _OneDevice(real.strategy.root_device)
        self.datamodule = datamodule
        self.callbacks = callbacks
        self.num_training_batches = batches_per_epoch
        epochs = self.max_epochs if self.max_epochs is not None and self.max_epochs >= 0 else None
        by_epochs = epochs * batches_per_epoch if epochs is not None else math.inf
        self.estimated_stepping_batches = min(self.max_steps, by_epochs) if self.max_steps >= 0 else by_epochs
        self.val_check_batch = _val_check_batch(real.val_check_interval, batches_per_epoch)

    def done(self) -> bool:
        """Lightning's fit-loop end: max_steps reached, max_epochs done, or a callback asked to stop."""
        if self.should_stop:
            return True
        if self.max_steps >= 0 and self.global_step >= self.max_steps:
            return True
        return self.max_epochs is not None and self.max_epochs >= 0 and self.current_epoch >= self.max_epochs


def _val_check_batch(interval: Any, batches: int) -> int:
    """Lightning's `val_check_batch`: validate every N training batches (1.0: at the end of each epoch)."""
    if isinstance(interval, int) and not isinstance(interval, bool):
        return interval
    return max(1, int(batches * float(interval)))


def _replica_module_class() -> type:
    from losslab.train.module import LossLabModule

    class ReplicaModule(LossLabModule):
        """LossLabModule outside a Trainer: `self.log` feeds Lightning's loggers and callbacks, which
        a stacked run has none of (both refused by `check_group`); LossLab's recording reads the
        values from the attributes the module sets."""

        def log(self, *args: Any, **kwargs: Any) -> None:
            return None

    return ReplicaModule


@dataclass(eq=False)  # compared by identity: equal configs are different seeds' jobs
class Replica:
    """One seed of the group: its Hydra job, its built job and run, its view of the stack."""

    cfg: DictConfig
    name: str
    prefix: str
    overrides: list[str]
    out_dir: Path | None
    choices: dict[str, str] = field(default_factory=dict)
    job: Job | None = None
    started: solo.Started | None = None
    result: solo.Result | None = None
    rng: dict[str, Tensor] = field(default_factory=dict)
    module: Any = None
    trainer: ReplicaTrainer | None = None
    optimizer: Any = None
    scheduler: Any = None
    data: Any = None
    batches: list[tuple[Tensor, Tensor, Tensor | None]] = field(default_factory=list)
    batch_idx: int = 0
    started_at: float = 0.0

    @property
    def open(self) -> bool:
        """Training (its run exists and is not closed)."""
        return self.started is not None and self.result is None

    @property
    def seed(self) -> Any:
        return self.cfg.get("seed")


# ----------------------------------------------------------------------------- RNG per replica


def _rng_state() -> dict[str, Tensor]:
    """Torch's global RNG: the CPU generator and, on a CUDA machine, the current device's (a solo run
    shuffles data that lives on the GPU with the latter)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


@contextlib.contextmanager
def _own_rng(rep: Replica) -> Iterator[None]:
    """Torch's global RNG as this replica's solo run would have it; its draws are kept for next time."""
    saved = _rng_state()
    _set_rng_state(rep.rng)
    try:
        yield
    finally:
        rep.rng = _rng_state()
        _set_rng_state(saved)


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
                solo._write_result(rep.out_dir, rep.result or _lost(rep), rep.overrides)
            if signals.signum is not None:
                raise KeyboardInterrupt(f"signal {signals.signum}")
    return [rep.result or _lost(rep) for rep in replicas]


def _lost(rep: Replica) -> solo.Result:
    return solo.Result("FAILED", rep.name, error="the stacked group ended before this run was closed")


def _prepare(cfg: DictConfig) -> Replica:
    """In job i's Hydra context: what `job.train` does before `_train`, then `build`."""
    choices, overrides, out_dir, job_num = solo._hydra_info()
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
    rep.rng = _rng_state()  # the RNG right after this seed's build, as in its solo run
    return rep


def _failed(rep: Replica, exc: BaseException) -> None:
    """A job that could not start: what `job.main` says and returns in a multirun."""
    err = user_error(exc)
    text = solo._describe(err or exc)
    log.error("%sError: %s", rep.prefix, text)
    rep.result = solo.Result("FAILED", rep.name, error=text)


def _start(rep: Replica) -> None:
    """In the job's Hydra context: `job.start_run` (skip, Trainer, callbacks, the run), on this seed's RNG."""
    assert rep.job is not None
    try:
        with _own_rng(rep):
            started = solo.start_run(rep.cfg, rep.job, rep.choices, rep.overrides, rep.name, rep.prefix)
    except Exception as exc:
        _failed(rep, exc)
        return
    if isinstance(started, solo.Result):
        rep.result = started
        return
    rep.started = started
    log.info("%srun %s (%s) -> %s", rep.prefix, rep.name, started.recorder.run_id, redact_uri(started.uri))


# ----------------------------------------------------------------------------- what can be stacked


def _loss_name(cfg: DictConfig) -> str:
    return str(OmegaConf.select(cfg, "loss._target_", default="loss")).rsplit(".", 1)[-1]


def check_group(replicas: Sequence[Replica]) -> None:
    """Refuse, before any run exists, a group the stacked loop cannot train as its solo runs train.

    One paragraph (a `ConfigError`) naming what and the plain launchers."""
    first = replicas[0]
    cfg = first.cfg
    assert first.job is not None
    extra = sorted(set(cfg.trainer) - SUPPORTED_TRAINER_KEYS)
    if extra:
        raise ConfigError(
            f"hydra/launcher=stacked does not support trainer.{extra[0]}: the stacked loop reproduces "
            "Lightning's fit loop for max_steps/max_epochs, validation every epoch (or val_check_interval "
            f"batches), gradient clipping and precision 32-true/64-true only. Use {PLAIN}."
        )
    setup = solo.trainer_setup(cfg)
    if setup.callbacks or setup.logger is not False or setup.checkpointing:
        raise ConfigError(
            "hydra/launcher=stacked cannot drive Lightning callbacks, loggers or checkpointing from "
            "trainer.callbacks / trainer.logger / trainer.enable_checkpointing (e.g. EarlyStopping). "
            f"Use {PLAIN}."
        )
    asked = str(OmegaConf.select(cfg, "trainer.precision", default="32-true"))
    if asked not in (*PRECISIONS, "32", "64"):
        raise ConfigError(
            f"hydra/launcher=stacked supports trainer.precision=32-true or 64-true, not {asked}. Use {PLAIN}."
        )
    if str(OmegaConf.select(cfg, "trainer.devices", default=1)) not in ("1", "auto"):
        raise ConfigError(f"hydra/launcher=stacked trains on one device (trainer.devices=1). Use {PLAIN}.")
    if OmegaConf.select(cfg, "trainer.strategy", default="auto") not in ("auto", None):
        raise ConfigError(
            f"hydra/launcher=stacked runs one process on one device (trainer.strategy=auto). Use {PLAIN}."
        )
    for rep in replicas:
        assert rep.job is not None
        model = rep.job.model
        if any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
            raise ConfigError(
                "hydra/launcher=stacked cannot train a model with dropout: a stacked step cannot draw the "
                f"dropout masks each seed's solo run draws. Set model.dropout=0 or use {PLAIN}."
            )
        if list(model.buffers()):
            raise ConfigError(
                f"hydra/launcher=stacked cannot train a model with buffers ({type(model).__name__}: e.g. "
                f"batch-norm statistics), which vmap cannot update per seed. Use {PLAIN}."
            )
        if any(p.requires_grad for p in rep.job.loss.parameters()):
            raise ConfigError(
                f"loss {_loss_name(cfg)} has trainable parameters; hydra/launcher=stacked stacks the model's "
                f"weights only. Use {PLAIN}."
            )
    shapes = {_shape_key(rep) for rep in replicas}
    if len(shapes) > 1:
        raise ConfigError(
            "hydra/launcher=stacked needs the seeds of a group to share the model's parameter shapes and the "
            f"data's shapes and batch size; these differ between seeds ({len(shapes)} variants). Use {PLAIN}."
        )
    _probe_vmap(replicas)  # also refuses per-seed loss state that cannot be stacked


def _shape_key(rep: Replica) -> tuple[Any, ...]:
    assert rep.job is not None
    d = rep.job.data
    params = tuple((n, tuple(p.shape), p.dtype) for n, p in rep.job.model.named_parameters())
    data = tuple(
        None if t is None else (tuple(t.shape), t.dtype)
        for t in (d.x_train, d.y_train, d.w_train, d.x_val, d.x_test)
    )
    return params, data, d.batch_size


def _loss_state(losses: Sequence[nn.Module], loss_name: str) -> dict[str, Tensor] | None:
    """The loss's buffers stacked over the seeds when they differ (class weights from each seed's
    split); None when every seed's loss holds the same state. Other per-seed tensors are refused."""
    first = losses[0]
    buffers = [dict(loss.named_buffers()) for loss in losses]
    plain = [
        k
        for k, v in vars(first).items()
        if isinstance(v, Tensor) and any(not torch.equal(v, vars(o).get(k, v)) for o in losses[1:])
    ]
    if plain:
        raise ConfigError(
            f"loss {loss_name} holds a tensor ({plain[0]}) that differs between the seeds and is not a "
            f"registered buffer, so it cannot be stacked. Use {PLAIN}."
        )
    if all(torch.equal(t, other[n]) for n, t in buffers[0].items() for other in buffers[1:]):
        return None
    return {n: torch.stack([b[n] for b in buffers]) for n in buffers[0]}


def _probe_vmap(replicas: Sequence[Replica]) -> None:
    """One stacked forward, loss and backward on copies, on each seed's first rows: a loss (or model)
    vmap cannot trace fails here, before any run exists."""
    jobs = [rep.job for rep in replicas]
    n = min(jobs[0].data.batch_size or jobs[0].data.n_train, jobs[0].data.n_train, 8)  # type: ignore[union-attr]
    models = [copy.deepcopy(j.model) for j in jobs]  # type: ignore[union-attr]
    losses = [probe_copy(j.loss) for j in jobs]  # type: ignore[union-attr]
    step = StackedStep(models, losses, _loss_state(losses, _loss_name(replicas[0].cfg)))
    x = torch.stack([j.data.x_train[:n] for j in jobs])  # type: ignore[union-attr]
    y = torch.stack([j.data.y_train[:n] for j in jobs])  # type: ignore[union-attr]
    w0 = jobs[0].data.w_train  # type: ignore[union-attr]
    w = None if w0 is None else torch.stack([j.data.w_train[:n] for j in jobs])  # type: ignore[union-attr,index]
    try:
        losses_out, _ = step(x, y, w)
        losses_out.sum().backward()
    except Exception as exc:
        text = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise ConfigError(
            f"loss {_loss_name(replicas[0].cfg)} cannot be trained stacked: torch.func.vmap failed on it "
            f"({type(exc).__name__}: {text}). hydra/launcher=stacked computes every seed's loss in one "
            "batched call, which needs a loss made of torch operations only: no .item() or float() of a "
            f"tensor, no Python `if` on tensor values, no in-place writes to tensors it did not create. "
            f"Train this design with {PLAIN}; nothing was recorded for these jobs."
        ) from None


# ----------------------------------------------------------------------------- the batched step


class StackedStep:
    """The forward and loss of R models as one vmapped call over stacked weights.

    `params` are leaf tensors (R, *shape) that require grad; `models[i]`'s parameters are replaced by
    views of slice i (real `nn.Parameter`s sharing its storage), so per-replica code (optimizers,
    clipping, statistics, validation) updates and reads exactly the stacked weights."""

    def __init__(
        self, models: Sequence[nn.Module], losses: Sequence[nn.Module], loss_state: dict[str, Tensor] | None
    ) -> None:
        from torch.func import stack_module_state

        self.models = list(models)
        params, _ = stack_module_state(self.models)
        self.params: dict[str, Tensor] = params
        self.template = copy.deepcopy(self.models[0]).to("meta")
        self.loss = losses[0]
        self.loss_state = loss_state
        for i, model in enumerate(self.models):
            for name, stacked in self.params.items():
                owner, _, leaf = name.rpartition(".")
                module = model.get_submodule(owner) if owner else model
                setattr(module, leaf, nn.Parameter(stacked.detach()[i], requires_grad=True))

    def __call__(self, x: Tensor, y: Tensor, w: Tensor | None) -> tuple[Tensor, list[Tensor]]:
        """(R,) losses and each replica's prediction (B, ...), as tensors the backward passes through."""
        from torch.func import functional_call, vmap

        template, loss = self.template, self.loss

        def forward(p: dict[str, Tensor], xi: Tensor) -> Tensor:
            return functional_call(template, p, (xi,))

        preds = vmap(forward)(self.params, x).unbind(0)  # a hook on preds[i] sees replica i's dL/dy_hat
        pred = torch.stack(preds)
        if self.loss_state is None:
            if w is None:
                out = vmap(lambda yp, yt: call_loss(loss, yp, yt, None))(pred, y)
            else:
                out = vmap(lambda yp, yt, wi: call_loss(loss, yp, yt, wi))(pred, y, w)
        else:
            weighted = w is not None and accepts_weight(loss)

            def with_state(state: dict[str, Tensor], yp: Tensor, yt: Tensor, *wi: Tensor) -> Tensor:
                return functional_call(loss, state, (yp, yt), {"weight": wi[0]} if wi else {})

            args = (self.loss_state, pred, y, *((w,) if weighted else ()))
            out = vmap(with_state)(*args)
        return out, list(preds)


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
    module_cls = _replica_module_class()
    device = live[0].started.trainer.strategy.root_device  # type: ignore[union-attr]
    for rep in live:
        job = rep.job
        assert job is not None and rep.started is not None
        module = module_cls(job.model, job.loss, job.data, optimizer=job.optimizer, scheduler=job.scheduler)
        module = rep.started.trainer.precision_plugin.convert_module(module)
        module.to(device)
        rep.module = module
    losses = [rep.module.loss for rep in live]
    state = _loss_state(losses, _loss_name(live[0].cfg))
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
        solo._log_dataset(rep.started.client, rep.started.recorder.run_id, job.data)
        rep.started.recorder.set_tags({STACKED_TAG: str(len(live))})
    return step


def _next_batch(rep: Replica) -> tuple[Tensor, Tensor, Tensor | None]:
    """This replica's next batch; a new epoch's order is drawn from its own RNG."""
    if rep.batch_idx >= len(rep.batches):
        with _own_rng(rep):
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
        with _own_rng(rep):  # torch.initial_seed() is this seed's in on_fit_start, as solo
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
    """The end of this replica's fit, then the solo run's `_finish` (label, metrics, artifacts, close)."""
    assert rep.started is not None and rep.trainer is not None
    _hook(rep, "on_train_end")
    _hook(rep, "on_fit_end")
    wall = time.perf_counter() - rep.started_at
    s = rep.started
    with interrupts.closing():
        rep.result = solo._finish(
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
    import signal

    status = "KILLED" if killed else "FAILED"
    error = (
        f"killed by {signal.Signals(signum).name}" if signum else (None if killed else solo._describe(exc))
    )
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
        solo._write_result(rep.out_dir, rep.result, rep.overrides)
