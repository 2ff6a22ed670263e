"""The Lightning side of tracking: a callback that feeds a run's `RunRecorder`.

Kept apart from tracking.py so the command-line tools that only read MLflow
(compare, migrate) do not pay for importing Lightning.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch

from losslab.tracking.recorder import RunRecorder


class TrackingCallback(pl.Callback):
    """Feeds the recorder: `train/loss` every step, `val/loss` and the val task metrics every
    validation, flushes when full.

    Values stay on the device until the buffer fills; then one host transfer and one
    log_batch. Under DDP every rank runs this callback so the step loss can be averaged
    over ranks (a collective), and only rank 0, the one with a recorder, writes.
    `on_exception` remembers Ctrl-C (Lightning turns it into SystemExit) so the run ends
    KILLED rather than FAILED.
    """

    def __init__(self, recorder: RunRecorder | None) -> None:
        self.recorder = recorder
        self.interrupted = False
        self.exception: BaseException | None = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        if loss is None:
            return
        loss = loss.detach()
        if trainer.world_size > 1:
            loss = trainer.strategy.reduce(loss, reduce_op="mean")
        if self.recorder is None:
            return
        buf = self.recorder.buffer
        buf.record(trainer.global_step - 1, ("train/loss",), loss.reshape(1))
        if buf.full:
            self.recorder.flush()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # facts about the data, once: data/noise_rate (realised corrupted share), data/imbalance_ratio
        data = getattr(pl_module, "data", None)
        facts = getattr(data, "data_metrics", None)
        if self.recorder is not None and facts:
            self.recorder.log_metrics(facts, step=0)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after the module's on_validation_epoch_end, which computes the task metrics
        val = getattr(pl_module, "val_loss", None)
        if self.recorder is None or val is None or trainer.sanity_checking:
            return
        metrics = getattr(pl_module, "val_metrics", None) or {}
        fit = getattr(pl_module, "fit_metrics", None) or {}  # train/fit_noisy, train/fit_clean
        names = ("val/loss", *(f"val/{k}" for k in metrics), *fit)
        values = [*metrics.values(), *fit.values()]
        row = torch.stack([val.detach().reshape(()), *(v.detach().reshape(()) for v in values)])
        self.recorder.buffer.record(trainer.global_step, names, row.float())
        if self.recorder.buffer.full:
            self.recorder.flush()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.recorder is not None:
            self.recorder.flush()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.exception = exception
        self.interrupted = isinstance(exception, KeyboardInterrupt)
        if self.recorder is not None:
            with contextlib.suppress(Exception):
                self.recorder.flush()
