"""Gradient statistics recorded at every optimizer step, computed on the device.

What a loss does to the gradient is the thing LossLab exists to show. The callback
computes, with foreach kernels and no host reads, per step:

- `grad/global_norm`, `grad/max_abs`, `grad/nonfinite` (count of non-finite values);
- `grad/norm/<layer>` per module (all of a module's tensors together);
- `grad/update_ratio/<layer>` = ||w_after - w_before|| / ||w_before||;
- `grad/pred/mean_abs`, `grad/pred/max_abs`, `grad/pred/zero_frac`: dL/dy_hat captured by a
  tensor hook during the normal backward (zero_frac = share of samples whose gradient is
  exactly zero: hinge's inactive margin, a saturated weight);
- optionally every K steps, `grad/noise_scale` and `grad/snr` from per-sample gradients
  (torch.func vmap) on a fixed probe batch.

Rows go into the run's `StepBuffer`, which reaches the host once per flush.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from .steplog import StepBuffer


def layer_of(param_name: str) -> str:
    """`model.fc0.weight` -> `fc0`; parameters are grouped by the module that owns them."""
    parts = param_name.split(".")
    if parts and parts[0] == "model" and len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts[:-1]) or parts[-1]


class GradientStats(pl.Callback):
    """Records gradient statistics into `buffer` (see module doc for the metric names)."""

    def __init__(
        self,
        buffer: StepBuffer,
        every_n_steps: int = 1,
        per_layer: bool = True,
        update_ratio: bool = True,
        pred_grad: bool = True,
        noise_every: int = 0,
        probe_size: int = 32,
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"grad_stats.every_n_steps must be >= 1, got {every_n_steps}")
        self.buffer = buffer
        self.every = every_n_steps
        self.per_layer = per_layer
        self.update_ratio = update_ratio
        self.pred_grad = pred_grad
        self.noise_every = noise_every
        self.probe_size = probe_size
        self._params: list[Tensor] = []
        self._layer_index: Tensor | None = None
        self._layers: list[str] = []
        self._names: tuple[str, ...] = ()
        self._prev: list[Tensor] = []
        self._pred_stats: Tensor | None = None
        self._pending_ratio = False

    # -------------------------------------------------------------- set-up

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        named = [(n, p) for n, p in pl_module.named_parameters() if p.requires_grad]
        self._params = [p for _, p in named]
        layers = list(OrderedDict.fromkeys(layer_of(n) for n, _ in named))
        index = [layers.index(layer_of(n)) for n, _ in named]
        self._layers = layers
        self._layer_index = torch.tensor(index, device=pl_module.device)
        names = ["grad/global_norm", "grad/max_abs", "grad/nonfinite"]
        if self.per_layer:
            names += [f"grad/norm/{layer}" for layer in layers]
        self._names = tuple(names)

    def _active(self, trainer: pl.Trainer) -> bool:
        return trainer.global_step % self.every == 0

    # -------------------------------------------------------------- dL/dy_hat

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        pred = getattr(pl_module, "last_pred", None)
        if self.pred_grad and self._active(trainer) and isinstance(pred, Tensor) and pred.requires_grad:
            pred.register_hook(self._on_pred_grad)

    def _on_pred_grad(self, grad: Tensor) -> None:
        g = grad.detach().reshape(grad.shape[0], -1)
        a = g.abs()
        self._pred_stats = torch.stack([a.mean(), a.amax(), (g == 0).all(dim=1).to(a.dtype).mean()]).float()

    # -------------------------------------------------------------- parameter gradients

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self._active(trainer) or not self._params:
            return
        step = trainer.global_step
        with torch.no_grad():
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._params]
            sq = torch.stack(torch._foreach_norm(grads)).float() ** 2
            total = sq.sum().sqrt()
            max_abs = torch.stack(torch._foreach_norm(grads, ord=math.inf)).amax().float()
            nonfinite = self._nonfinite(grads, total)
            row = [total.reshape(1), max_abs.reshape(1), nonfinite.reshape(1)]
            if self.per_layer:
                per_layer = torch.zeros(len(self._layers), device=sq.device).index_add_(
                    0, self._layer_index, sq
                )
                row.append(per_layer.sqrt())
            self.buffer.record(step, self._names, torch.cat(row))
            if self._pred_stats is not None:
                names = ("grad/pred/mean_abs", "grad/pred/max_abs", "grad/pred/zero_frac")
                self.buffer.record(step, names, self._pred_stats)
                self._pred_stats = None
            if self.update_ratio:
                if not self._prev:
                    self._prev = [torch.empty_like(p) for p in self._params]
                torch._foreach_copy_(self._prev, [p.detach() for p in self._params])
                self._pending_ratio = True
        if self.noise_every and step % self.noise_every == 0:
            self._noise_scale(trainer, pl_module, step)

    @staticmethod
    def _nonfinite(grads: list[Tensor], total: Tensor) -> Tensor:
        """Count non-finite values; on CPU skip the per-tensor pass when the total norm is finite."""
        if total.device.type == "cpu" and math.isfinite(float(total)):
            return torch.zeros((), dtype=torch.float32)
        counts = torch.stack([(~torch.isfinite(g)).sum() for g in grads]).sum().float()
        return counts

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._pending_ratio:
            return
        self._pending_ratio = False
        with torch.no_grad():
            params = [p.detach() for p in self._params]
            delta = torch._foreach_sub(params, self._prev)
            d_sq = torch.stack(torch._foreach_norm(delta)).float() ** 2
            w_sq = torch.stack(torch._foreach_norm(self._prev)).float() ** 2
            n = len(self._layers)
            d = torch.zeros(n, device=d_sq.device).index_add_(0, self._layer_index, d_sq)
            w = torch.zeros(n, device=w_sq.device).index_add_(0, self._layer_index, w_sq)
            ratio = d.sqrt() / w.sqrt().clamp_min(1e-12)
        names = tuple(f"grad/update_ratio/{layer}" for layer in self._layers)
        self.buffer.record(trainer.global_step - 1, names, ratio)

    # -------------------------------------------------------------- gradient noise scale

    def _noise_scale(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        """Simple noise scale B = tr(Sigma) / |G|^2 and SNR = |G|^2 / (tr(Sigma) / B_probe)."""
        from torch.func import functional_call, grad, vmap

        data = getattr(pl_module, "data", None)
        if data is None:
            return
        x = data.x_train[: self.probe_size]
        y = data.y_train[: self.probe_size]
        model, loss_fn = pl_module.model, pl_module.loss
        params = {k: v.detach() for k, v in model.named_parameters()}
        checked = getattr(loss_fn, "check_values", None)

        def sample_loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
            return loss_fn(functional_call(model, p, (xi.unsqueeze(0),)), yi.unsqueeze(0))

        try:
            if checked is not None:
                loss_fn.check_values = False  # data was validated up front; vmap cannot branch on values
            per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, x, y)
        except Exception as exc:  # a user loss that vmap cannot trace: turn the probe off, keep training
            warnings.warn(f"gradient noise probe disabled: {exc}", stacklevel=1)
            self.noise_every = 0
            return
        finally:
            if checked is not None:
                loss_fn.check_values = checked
        flat = torch.cat([g.reshape(g.shape[0], -1) for g in per_sample.values()], dim=1)
        mean = flat.mean(0)
        g2 = (mean**2).sum()
        tr_sigma = ((flat - mean) ** 2).sum(1).mean()
        noise_scale = tr_sigma / g2.clamp_min(1e-30)
        snr = g2 / (tr_sigma / flat.shape[0]).clamp_min(1e-30)
        self.buffer.record(step, ("grad/noise_scale", "grad/snr"), torch.stack([noise_scale, snr]).float())


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
