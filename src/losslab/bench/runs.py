"""The variants the sections time: LossLab's `task.train`, a raw PyTorch loop doing the same work,
plain Lightning (the same module, no callbacks, no tracking) and stock Lightning + MLFlowLogger.

Every variant builds its objects with `task.build(cfg)`, so model, data tensors, loss and optimizer
are the same; only the loop and what it records differ.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from losslab.bench.harness import Sample, quiet, tracking_env


def _optimizer_factory(job: Any) -> Callable[..., torch.optim.Optimizer]:
    """The configured optimizer partial, wherever this version of `task.Job` keeps it."""
    factory = getattr(job, "optimizer", None)
    if factory is None and hasattr(job, "module"):
        factory = job.module.optimizer_factory
    if factory is None:
        raise RuntimeError("task.build() returned no optimizer factory")
    return factory


@contextlib.contextmanager
def last_step_clock() -> Iterator[dict[str, float]]:
    """`marks["last_step"]`: perf_counter when the recording callback last ended a training step.

    `task.train`'s return minus it is the run's close: everything after the last step (Lightning's
    end of fit, the final flush, the outcome, the test-split scores, final metrics and tags, the
    config artifact, the heartbeat's stop and the run's end status)."""
    from losslab.train.callbacks.recording import TrackingCallback

    marks: dict[str, float] = {}
    plain = TrackingCallback.on_train_batch_end

    def marked(self: Any, *args: Any, **kwargs: Any) -> None:
        plain(self, *args, **kwargs)
        marks["last_step"] = time.perf_counter()

    TrackingCallback.on_train_batch_end = marked  # type: ignore[method-assign]
    try:
        yield marks
    finally:
        TrackingCallback.on_train_batch_end = plain  # type: ignore[method-assign]


def losslab_run(cfg: Any, uri: str) -> Sample:
    """`task.train(cfg)` timed as a whole; training alone from the run's `final/wall_seconds`; the
    close (last step to `task.train`'s return) in `info["close_s"]`."""
    from losslab.tracking.store import open_store
    from losslab.train import job as task

    with tracking_env(uri), quiet(), last_step_clock() as marks:
        started = time.perf_counter()
        result = task.train(cfg)
        ended = time.perf_counter()
    seconds = ended - started
    if result.status != "FINISHED" or result.run_id is None:
        raise RuntimeError(f"benchmark run ended {result.status}: {result.error}")
    client = open_store(uri)
    metrics = client.get_run(result.run_id).data.metrics
    vals = client.get_metric_history(result.run_id, "val/loss")
    info: dict[str, Any] = {"steps": int(metrics.get("final/steps", 0)), "val_points": len(vals)}
    if "last_step" in marks:
        info["close_s"] = round(ended - marks["last_step"], 4)
    return Sample(seconds, fit_seconds=metrics.get("final/wall_seconds"), info=info)


def raw_run(cfg: Any, device: str | None = None) -> Sample:
    """The same work without Lightning or tracking: same build, batches, loss, optimizer, validation."""
    from losslab.train import job as task

    with quiet():
        started = time.perf_counter()
        job = task.build(cfg)
        fit_started = time.perf_counter()
        steps, val_passes = raw_loop(job, int(cfg.trainer.max_steps), device)
        done = time.perf_counter()
    return Sample(
        done - started, fit_seconds=done - fit_started, info={"steps": steps, "val_passes": val_passes}
    )


def raw_loop(job: Any, max_steps: int, device: str | None = None) -> tuple[int, int]:
    """Plain PyTorch: an epoch of TensorBatches, then a validation pass, until max_steps."""
    from losslab.losses import call_loss

    model, loss_fn, data = job.model, job.loss, job.data
    if device is not None:
        model, loss_fn, data = model.to(device), loss_fn.to(device), data.to(device)
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
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return step, val_passes


def _raw_validation(model: torch.nn.Module, loss_fn: torch.nn.Module, data: Any) -> float:
    from losslab.losses import call_loss

    model.eval()
    total, count = None, 0
    with torch.no_grad():
        for x, y, w in data.val_batches():
            part = call_loss(loss_fn, model(x), y, w) * x.shape[0]
            total = part if total is None else total + part
            count += x.shape[0]
    model.train()
    return float(total) / max(count, 1) if total is not None else math.nan


def lightning_run(cfg: Any) -> Sample:
    """Lightning's own floor: LossLab's module and Trainer settings, but no callbacks and no tracking.

    The gap between this and the raw loop is Lightning's loop; the gap between LossLab and this is
    what LossLab adds (gradient statistics, the metric buffer, the divergence guard, the run).
    """
    from losslab.data.datamodule import TensorDataModule
    from losslab.train import job as task
    from losslab.train.module import LossLabModule

    with quiet():
        started = time.perf_counter()
        job = task.build(cfg)
        trainer = task._trainer(cfg, [])
        module = LossLabModule(
            job.model, job.loss, job.data, optimizer=job.optimizer, scheduler=job.scheduler
        )
        fit_started = time.perf_counter()
        trainer.fit(module, datamodule=TensorDataModule(job.data))
        done = time.perf_counter()
    return Sample(done - started, fit_seconds=done - fit_started, info={"steps": trainer.global_step})


# ----------------------------------------------------------------------------- stock Lightning


def stock_run(cfg: Any, uri: str) -> Sample:
    """What a user would write: LightningModule + self.log + MLFlowLogger(every step) + grad_norm.

    Same data tensors, model and optimizer as LossLab (built by `task.build`), served the usual
    way: DataLoader(TensorDataset, shuffle=True), i.e. per-sample indexing and collation.
    """
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import MLFlowLogger
    from torch.utils.data import DataLoader, TensorDataset

    from losslab.train import job as task

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
