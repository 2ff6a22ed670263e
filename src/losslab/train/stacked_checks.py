"""What can be trained stacked (`hydra/launcher=stacked`, `train/stacked.py`): a group is refused,
before any run exists, with one paragraph naming what and the plain launchers."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from losslab.config.build import ConfigError, probe_copy
from losslab.train import job as solo
from losslab.train.stacked_replica import Replica
from losslab.train.stacked_step import StackedStep

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
PLAIN = "hydra/launcher=basic (one job after another) or hydra/launcher=joblib (parallel workers)"


def loss_name(cfg: DictConfig) -> str:
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
                f"loss {loss_name(cfg)} has trainable parameters; hydra/launcher=stacked stacks the model's "
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


def loss_state(losses: Sequence[nn.Module], name: str) -> dict[str, Tensor] | None:
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
            f"loss {name} holds a tensor ({plain[0]}) that differs between the seeds and is not a "
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
    step = StackedStep(models, losses, loss_state(losses, loss_name(replicas[0].cfg)))
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
            f"loss {loss_name(replicas[0].cfg)} cannot be trained stacked: torch.func.vmap failed on it "
            f"({type(exc).__name__}: {text}). hydra/launcher=stacked computes every seed's loss in one "
            "batched call, which needs a loss made of torch operations only: no .item() or float() of a "
            f"tensor, no Python `if` on tensor values, no in-place writes to tensors it did not create. "
            f"Train this design with {PLAIN}; nothing was recorded for these jobs."
        ) from None
