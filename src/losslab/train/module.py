"""The LightningModule: one optimizer step per batch; validation loss, task metrics and selection.

Free of MLflow: the recording callback reads what it needs from `outputs` and from the
attributes set here. Validation values also go through `self.log`, so Lightning callbacks
configured by the user (EarlyStopping, ModelCheckpoint with `monitor="val/loss"` or
`"val/accuracy"`) see them. Nothing here runs in a training step beyond the forward and the loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from losslab.data.datasets import EVAL_BATCH, TensorData, like_weights
from losslab.losses import accepts_weight
from losslab.train.metrics import better, decision_threshold, task_metrics
from losslab.vocab import FIT_CLEAN, FIT_NOISY, primary_metric

#: training rows the memorisation metrics are computed on (the first ones of the shuffled split)
FIT_ROWS = 2048


class LossLabModule(pl.LightningModule):
    """Trains `model` on `data` by minimising `loss(model(x), y[, weight])`.

    `optimizer` and `scheduler` are partials (Hydra `_partial_: true`) that take the
    parameters / the optimizer. `last_pred` holds the current batch's predictions so the
    gradient callback can hook dL/dy_hat during the normal backward.

    Selection: after every validation the primary task metric (accuracy: max, rmse: min) is
    compared with the best so far; on a strict improvement the weights are copied in memory.
    `test_metrics()` scores the test split with that copy (`test/<m>`), and the final weights
    (`test_last/<m>`). Only val takes part in selection.
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
        self._data = data
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.weighted = accepts_weight(loss)
        self.task = data.task
        self.primary = primary_metric(data.task)
        self.threshold = decision_threshold(loss, data.labels)
        self.last_pred: Tensor | None = None
        self.val_loss: Tensor | None = None
        self.val_metrics: dict[str, Tensor] = {}
        self.best_metrics: dict[str, float] | None = None
        self.best_step: int | None = None
        #: (global step, value) of the primary metric at every validation (the overfitting tag reads it)
        self.primary_history: list[tuple[int, float]] = []
        self._best_state: dict[str, Tensor] | None = None
        self._val_sum: Tensor | None = None
        self._val_count = 0
        self._val_scores: list[Tensor] = []
        self._val_targets: list[Tensor] = []
        #: train/fit_noisy, train/fit_clean at the last validation (only on data with corrupted labels)
        self.fit_metrics: dict[str, Tensor] = {}
        self._fit_probe: tuple[Tensor, Tensor, Tensor, tuple[str, ...]] | None = None

    #: Set ~50 times a step: Lightning writes `_current_fx_name` around every hook call, the steps
    #: write the rest. None is ever a parameter, buffer or submodule, so the bookkeeping of
    #: nn.Module.__setattr__ (~2 us a call) is skipped for them.
    _PLAIN_ATTRS = frozenset({"_current_fx_name", "last_pred", "val_loss", "_val_sum", "_val_count"})

    def __setattr__(self, name: str, value: Any) -> None:
        if name in LossLabModule._PLAIN_ATTRS:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def data(self) -> TensorData:
        """The data on the training device once the datamodule moved it (the gradient probe reads it)."""
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        return dm.data if dm is not None and hasattr(dm, "data") else self._data

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

    # ------------------------------------------------------------------ validation and selection

    def on_validation_epoch_start(self) -> None:
        self._val_sum, self._val_count = None, 0
        self._val_scores, self._val_targets = [], []

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor | None], batch_idx: int) -> None:
        x, y, _ = batch  # val/test losses are unweighted: no weight may depend on a held-out target
        y_pred = self.model(x)
        loss = self._loss(y_pred, y, None).detach() * x.shape[0]
        self._val_sum = loss if self._val_sum is None else self._val_sum + loss
        self._val_count += x.shape[0]
        self.val_loss = self._val_sum / self._val_count
        self._val_scores.append(y_pred.detach())
        self._val_targets.append(y)

    def on_validation_epoch_end(self) -> None:
        if not self._val_scores:
            return
        values = task_metrics(
            self.task, torch.cat(self._val_scores), torch.cat(self._val_targets), self.threshold
        )
        self._val_scores, self._val_targets = [], []
        self.val_metrics = values
        self.fit_metrics = self._memorisation()
        log = {"val/loss": self.val_loss, **{f"val/{k}": v for k, v in values.items()}, **self.fit_metrics}
        for name, value in log.items():
            if value is not None:
                self.log(name, value, on_step=False, on_epoch=True, batch_size=1)
        if self._trainer is None or not self.trainer.sanity_checking:
            self._select(values)

    def _probe(self) -> tuple[Tensor, Tensor, Tensor, tuple[str, ...]] | None:
        """(x, noisy labels, corrupted mask, metric names) of the first FIT_ROWS training rows, on the
        device, built once; None when the training labels were not corrupted."""
        data = self.data
        if data.y_train_clean is None:
            return None
        if self._fit_probe is None or self._fit_probe[0].device != data.x_train.device:
            n = min(FIT_ROWS, data.n_train)
            y = data.y_train[:n]
            noisy = (y != data.y_train_clean[:n]).reshape(-1)
            n_noisy = int(noisy.sum())  # once per run: which of the two shares exist
            names = tuple(
                name for name, count in ((FIT_NOISY, n_noisy), (FIT_CLEAN, n - n_noisy)) if count > 0
            )
            self._fit_probe = (data.x_train[:n], y, noisy, names)
        return self._fit_probe

    @torch.no_grad()
    def _memorisation(self) -> dict[str, Tensor]:
        """train/fit_noisy: share of the corrupted training rows predicted as their (wrong) label;
        train/fit_clean: share of the clean rows predicted as their label. One forward pass over at most
        FIT_ROWS training rows, on the device, no host read."""
        probe = self._probe()
        if probe is None or not probe[3]:
            return {}
        x, y, noisy, names = probe
        scores = torch.cat([self.model(*like_weights(self.model, xb)) for xb in x.split(EVAL_BATCH)]).float()
        if self.task == "multiclass":
            hit = scores.argmax(dim=1) == y.reshape(-1)
        else:  # binary: the positive class is label 1 in either encoding
            hit = (scores.reshape(-1) > self.threshold) == (y.reshape(-1) == 1)
        hit = hit.float()
        shares = {
            FIT_NOISY: (hit * noisy).sum() / noisy.sum().clamp_min(1),
            FIT_CLEAN: (hit * ~noisy).sum() / (~noisy).sum().clamp_min(1),
        }
        return {name: shares[name] for name in names}

    def _select(self, values: dict[str, Tensor]) -> None:
        """Keep the weights of the validation with the best primary metric (one host read)."""
        host = dict(zip(values, torch.stack(list(values.values())).tolist(), strict=True))
        step = self.trainer.global_step if self._trainer is not None else 0
        self.primary_history.append((step, host[self.primary]))
        best = None if self.best_metrics is None else self.best_metrics[self.primary]
        if better(self.primary, host[self.primary], best):
            self.best_metrics = host
            self.best_step = step
            self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    @torch.no_grad()
    def _test_values(self, state: dict[str, Tensor] | None) -> dict[str, Tensor]:
        """Task metrics on the test split as device tensors, with the weights in `state` (through
        `torch.func.functional_call`: the module's own weights are not touched) or, for None, the
        module's current weights."""
        from torch.func import functional_call

        data = self.data
        model = self.model
        was_training = model.training
        model.eval()
        try:
            # outside Lightning's loop: inputs meet the weights where Lightning put them (cuda, or
            # float64/bf16 under trainer.precision=64-true/bf16-true)
            scores_list, targets_list = [], []
            for x, y, _ in data.test_batches():
                inputs = tuple(like_weights(model, x))
                out = model(*inputs) if state is None else functional_call(model, state, inputs)
                scores_list.append(out.float())
                targets_list.append(y)
            scores = torch.cat(scores_list)
            targets = torch.cat(targets_list).to(scores.device)
            return task_metrics(self.task, scores, targets, self.threshold)
        finally:
            model.train(was_training)

    def test_metrics(self, selected: bool = True) -> dict[str, float]:
        """Task metrics on the test split, with the selected weights (the final ones if none was),
        or with the final weights (`selected=False`)."""
        values = self._test_values(self._best_state if selected else None)
        return dict(zip(values, torch.stack(list(values.values())).tolist(), strict=True))

    def _selected_is_final(self) -> bool:
        """True when the selected weights are the final ones: none was selected, or no optimizer step
        came after the validation that selected them."""
        if self._best_state is None:
            return True
        return self._trainer is not None and self.best_step == self.trainer.global_step

    def selection_metrics(self) -> dict[str, float]:
        """What the run reports at its end: best/val_<m> and best/step of the selected validation,
        test/<m> on its weights (on the final weights, with no best/*, if no validation scored),
        and test_last/<m> on the final weights, so a run that peaked and then degraded shows both.

        One pass over the test split when the selected weights are the final ones, two otherwise,
        and one host read for all of it."""
        last = self._test_values(None)
        selected = last if self._selected_is_final() else self._test_values(self._best_state)
        host = torch.stack([*selected.values(), *last.values()]).tolist()
        out: dict[str, float] = {f"test/{k}": v for k, v in zip(selected, host, strict=False)}
        out.update({f"test_last/{k}": v for k, v in zip(last, host[len(selected) :], strict=True)})
        if self.best_metrics is not None and self.best_step is not None:
            out.update({f"best/val_{k}": v for k, v in self.best_metrics.items()})
            out["best/step"] = float(self.best_step)
        return out

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
