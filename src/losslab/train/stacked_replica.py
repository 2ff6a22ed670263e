"""One seed of a stacked group (`train/stacked.py`): its job and run, the parts of a Lightning Trainer
and strategy its callbacks and module read, and its own copy of torch's RNG.

Written by hand because a stacked replica never runs inside a `pl.Trainer` (one Trainer drives one
module and one optimizer loop); these stand-ins carry exactly the attributes LossLab's callbacks and
`LossLabModule` read, with the replica's own counters.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from losslab.config.build import Job
from losslab.train import job as solo


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


def replica_module_class() -> type:
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


def rng_state() -> dict[str, Tensor]:
    """Torch's global RNG: the CPU generator and, on a CUDA machine, the current device's (a solo run
    shuffles data that lives on the GPU with the latter)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Tensor]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


@contextlib.contextmanager
def own_rng(rep: Replica) -> Iterator[None]:
    """Torch's global RNG as this replica's solo run would have it; its draws are kept for next time."""
    saved = rng_state()
    set_rng_state(rep.rng)
    try:
        yield
    finally:
        rep.rng = rng_state()
        set_rng_state(saved)
