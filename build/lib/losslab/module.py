"""The LightningModule: one optimizer step per batch, validation loss, optimizer set-up.

Deliberately free of logging and instrumentation: callbacks (gradients, outcomes,
tracking) read what they need from `outputs` and from the attributes set here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from .data import TensorBatches, TensorData
from .losses import accepts_weight


class LossLabModule(pl.LightningModule):
    """Trains `model` on `data` by minimising `loss(model(x), y[, weight])`.

    `optimizer` and `scheduler` are partials (Hydra `_partial_: true`) that take the
    parameters / the optimizer. `last_pred` holds the current batch's predictions so the
    gradient callback can hook dL/dy_hat during the normal backward.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        data: TensorData,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.data = data
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.weighted = accepts_weight(loss)
        self.last_pred: Tensor | None = None
        self.val_loss: Tensor | None = None
        self._val_sum: Tensor | None = None
        self._val_count = 0

    #: Set ~50 times a step: Lightning writes `_current_fx_name` around every hook call, the steps
    #: write the rest. None is ever a parameter, buffer or submodule, so the bookkeeping of
    #: nn.Module.__setattr__ (~2 us a call) is skipped for them.
    _PLAIN_ATTRS = frozenset({"_current_fx_name", "last_pred", "val_loss", "_val_sum", "_val_count"})

    def __setattr__(self, name: str, value: Any) -> None:
        if name in LossLabModule._PLAIN_ATTRS:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _loss(self, y_pred: Tensor, y: Tensor, w: Tensor | None) -> Tensor:
        if w is not None and self.weighted:  # signature inspected once, not per step
            return self.loss(y_pred, y, weight=w)
        return self.loss(y_pred, y)

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor | None], batch_idx: int) -> Tensor:
        x, y, w = batch
        y_pred = self.model(x)
        self.last_pred = y_pred
        return self._loss(y_pred, y, w)

    def on_validation_epoch_start(self) -> None:
        self._val_sum, self._val_count = None, 0

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor | None], batch_idx: int) -> None:
        x, y, w = batch
        loss = self._loss(self.model(x), y, w).detach() * x.shape[0]
        self._val_sum = loss if self._val_sum is None else self._val_sum + loss
        self._val_count += x.shape[0]
        # kept current after every batch: callbacks' on_validation_epoch_end runs before the module's
        self.val_loss = self._val_sum / self._val_count

    def train_dataloader(self) -> TensorBatches:
        self.data = self.data.to(self.device)
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1:  # DDP: each rank trains on its own shard; validation sees the whole set
            rank = self.trainer.global_rank
            shard = self.data.x_train[rank::world], self.data.y_train[rank::world]
            w = None if self.data.w_train is None else self.data.w_train[rank::world]
            return TensorBatches(*shard, w, self.data.batch_size, shuffle=True)
        return self.data.train_batches()

    def val_dataloader(self) -> TensorBatches:
        self.data = self.data.to(self.device)
        return self.data.val_batches()

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch  # slices of tensors already on the device

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
