"""Gradient statistics recorded at every optimizer step, computed on the device.

What a loss does to the gradient is the thing LossLab exists to show. The callback
computes, with foreach kernels and no host reads, per step:

- `grad/global_norm`, `grad/max_abs`, `grad/nonfinite` (count of non-finite values);
- `grad/norm/<layer>` per module (all of a module's tensors together);
- `grad/update_ratio/<layer>` = ||w_after - w_before|| / ||w_before||;
- `grad/pred/mean_abs`, `grad/pred/max_abs`, `grad/pred/zero_frac`: the per-sample dL/dy_hat
  (the batch-mean loss's gradient times the batch size), captured by a tensor hook during the
  normal backward (zero_frac = share of samples whose gradient is exactly zero: hinge's inactive
  margin, a saturated weight);
- `grad/global_norm_clipped` when `trainer.gradient_clip_val` is set: the global norm after
  Lightning's clipping (by norm: min(norm, clip); by value: the norm of the clamped gradients);
- optionally every K steps, `grad/noise_scale` and `grad/snr` from per-sample gradients
  (torch.func vmap) on a probe of rows drawn afresh each time, with unbiased estimators
  (`unbiased_noise_scale`; see `noise_probe` for the rows, weights, dropout and the probe size).

Every `grad/*` norm above is measured *before* gradient clipping: it is the gradient the loss
produced, which is what LossLab compares. Only `grad/global_norm_clipped` is after clipping.

Rows go into the run's `StepBuffer`, which reaches the host once per flush.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from losslab.data.datasets import like_weights
from losslab.losses.base import call_loss
from losslab.train.steplog import StepBuffer

PRED_NAMES = ("grad/pred/mean_abs", "grad/pred/max_abs", "grad/pred/zero_frac")
#: default rows per noise probe: see `noise_probe` for the measurement behind it
PROBE_SIZE = 512


def layer_of(param_name: str) -> str:
    """`model.fc0.weight` -> `fc0`; parameters are grouped by the module that owns them."""
    parts = param_name.split(".")
    if parts and parts[0] == "model" and len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts[:-1]) or parts[-1]


#: below this many gradient values (on the CPU) max |g| is taken with two foreach calls that copy
#: |g| (fewer ops: a small model's cost is per op); above it, with `aminmax` (no copy: a large
#: model's cost is memory passes)
FOREACH_MAX_NUMEL = 1 << 20


def _max_abs(grads: list[Tensor], small: bool = False) -> Tensor:
    """max |g| over all gradients, as a float32 0-dim tensor on their device.

    On CUDA the fused `_foreach_norm(ord=inf)` is one kernel launch. On CPU that op falls back to
    a scalar loop (torch 2.13: 0.3 ms for the 74k gradients of a 32-256-256-1 MLP, 12 ms for a
    4x1024 MLP, i.e. a fifth of a training step), while one vectorised `aminmax` per tensor
    takes 0.05 ms / 1 ms; `small` (no empty tensor, under `FOREACH_MAX_NUMEL` values) takes the
    max of a foreach |g| instead, 4 ops in all. None of them reads anything back to the host; all
    give the same value (a maximum does not round).
    """
    if grads[0].device.type != "cpu":
        return torch.stack(torch._foreach_norm(grads, ord=math.inf)).amax().float()
    if small:
        return torch.stack(torch._foreach_max(torch._foreach_abs(grads))).amax().float()
    extremes = [t for g in grads if g.numel() for t in torch.aminmax(g)]
    if not extremes:
        return torch.zeros((), device=grads[0].device)
    return torch.stack(extremes).abs().amax().float()


class GradientStats(pl.Callback):
    """Records gradient statistics into `buffer` (see module doc for the metric names).

    Cost matters more than elegance here: this runs at every optimizer step, and for a small model
    each eager op costs about as much as its arithmetic (a few microseconds on CPU). So the L2 norms
    of the gradients and of the weights come from one foreach call, the per-layer sums of both from
    one `index_add`, the whole row (dL/dy_hat stats included) goes into the buffer as one tensor,
    the update ratio subtracts in place into a buffer kept between steps and divides by the weight
    norms found before the step, and grad mode is switched off by hand (the `no_grad` object costs
    more than the op it guards). Nothing is read back to the host on an accelerator.
    """

    def __init__(
        self,
        buffer: StepBuffer,
        every_n_steps: int = 1,
        per_layer: bool = True,
        update_ratio: bool = True,
        pred_grad: bool = True,
        noise_every: int = 0,
        probe_size: int = PROBE_SIZE,
        seed: int | None = None,
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
        self.seed = seed  # probe rows: None means the run's torch seed (`torch.initial_seed()`)
        self._probe_gen: torch.Generator | None = None
        self._clip: tuple[float, str] | None = None
        self._params: list[Tensor] = []
        self._layer_index: Tensor | None = None
        self._layers: list[str] = []
        self._names: tuple[str, ...] = ()
        self._names_pred: tuple[str, ...] = ()
        self._ratio_names: tuple[str, ...] = ()
        self._layer_zeros: Tensor | None = None  # (L,) / (2, L) zeros that index_add sums into
        self._ratio_zeros: Tensor | None = None
        self._zero: Tensor | None = None
        self._prev: list[Tensor] = []
        self._w_root: Tensor | None = None  # per-layer ||w_before||, clamped: the ratio's denominator
        self._small = False
        self._pred_stats: Tensor | None = None
        self._pending_ratio = False
        self._host_reads = True

    #: None: read values on the host only where that is free (CPU tensors); False: never, on any
    #: device (the accelerator path, which tests run on the CPU); True: always (a CPU shortcut).
    host_reads: bool | None = None

    # -------------------------------------------------------------- set-up

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        named = [(n, p) for n, p in pl_module.named_parameters() if p.requires_grad]
        self._params = [p for _, p in named]
        layers = list(OrderedDict.fromkeys(layer_of(n) for n, _ in named))
        index = [layers.index(layer_of(n)) for n, _ in named]
        device = pl_module.device
        self._host_reads = device.type == "cpu" if self.host_reads is None else bool(self.host_reads)
        self._layers = layers
        self._layer_index = torch.tensor(index, device=device)
        self._layer_zeros = torch.zeros(len(layers), device=device)
        self._ratio_zeros = torch.zeros(2, len(layers), device=device)
        self._zero = torch.zeros(1, device=device)
        self._prev = []
        numel = [p.numel() for p in self._params]
        self._small = bool(numel) and min(numel) > 0 and sum(numel) <= FOREACH_MAX_NUMEL
        names = ["grad/global_norm"]
        if self.per_layer:
            names += [f"grad/norm/{layer}" for layer in layers]
        names += ["grad/max_abs", "grad/nonfinite"]
        self._names = tuple(names)
        self._names_pred = (*names, *PRED_NAMES)
        self._ratio_names = tuple(f"grad/update_ratio/{layer}" for layer in layers)
        seed = torch.initial_seed() if self.seed is None else self.seed
        self._probe_gen = torch.Generator().manual_seed(int(seed) % 2**63 + 0x5EED)
        clip = getattr(trainer, "gradient_clip_val", None)
        algorithm = str(getattr(trainer, "gradient_clip_algorithm", None) or "norm")
        self._clip = (float(clip), algorithm) if clip else None
        if self._clip is not None:
            self._names = (*self._names, "grad/global_norm_clipped")
            self._names_pred = (*self._names, *PRED_NAMES)

    def _active(self, trainer: pl.Trainer) -> bool:
        return self.every == 1 or trainer.global_step % self.every == 0

    # -------------------------------------------------------------- dL/dy_hat

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        pred = getattr(pl_module, "last_pred", None)
        if self.pred_grad and self._active(trainer) and isinstance(pred, Tensor) and pred.requires_grad:
            pred.register_hook(self._on_pred_grad)

    def _on_pred_grad(self, grad: Tensor) -> None:
        # dL/dy_hat of the batch-mean loss is (1/B) x each sample's derivative: times B it is the
        # per-sample derivative, so the last short batch of an epoch does not double the curve
        if grad.requires_grad:  # only under create_graph
            grad = grad.detach()
        a = grad.reshape(grad.shape[0], -1).abs() * grad.shape[0]
        per_sample = a.amax(dim=1)  # 0 exactly when all of a sample's gradient is 0 (NaN is not 0)
        zero_frac = (per_sample == 0).to(a.dtype).mean()
        self._pred_stats = torch.stack([a.mean(), per_sample.amax(), zero_frac]).float()

    # -------------------------------------------------------------- parameter gradients

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self._params:
            return
        step = trainer.global_step
        if self.every != 1 and step % self.every:
            return
        enabled = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)
        try:
            self._record_gradients(step)
        finally:
            torch._C._set_grad_enabled(enabled)
        if self.noise_every and step % self.noise_every == 0:
            self._noise_scale(trainer, pl_module, step)

    def _record_gradients(self, step: int) -> None:
        params, n = self._params, len(self._params)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        # one foreach call for the L2 norms of the gradients and, for the update ratio, the weights
        l2 = torch.stack(torch._foreach_norm(grads + params if self.update_ratio else grads)).float()
        sq = l2.square()
        g_sq = sq[:n] if self.update_ratio else sq
        total = g_sq.sum()
        parts = [total.sqrt().reshape(1)]
        if self.update_ratio:
            # per-layer sums of squared gradient and weight norms in one index_add: rows g, w
            root = torch.index_add(self._ratio_zeros, 1, self._layer_index, sq.view(2, n)).sqrt()
            if self.per_layer:
                parts.append(root[0])
            self._w_root = root[1].clamp_min(1e-12)
        elif self.per_layer:
            parts.append(torch.index_add(self._layer_zeros, 0, self._layer_index, g_sq).sqrt())
        max_abs = _max_abs(grads, self._small)
        parts += [max_abs.reshape(1), self._nonfinite(grads, total)]
        if self._clip is not None:
            parts.append(self._clipped_norm(grads, total).reshape(1))
        names = self._names
        if self._pred_stats is not None:
            parts.append(self._pred_stats)
            names = self._names_pred
            self._pred_stats = None
        self.buffer.record(step, names, torch.cat(parts))
        if self.update_ratio:
            if not self._prev:
                self._prev = [torch.empty_like(p) for p in params]
            torch._foreach_copy_(self._prev, params)
            self._pending_ratio = True

    def _clipped_norm(self, grads: list[Tensor], total_sq: Tensor) -> Tensor:
        """The global norm after Lightning clips (it clips after this hook, with torch's rules)."""
        assert self._clip is not None
        clip, algorithm = self._clip
        if algorithm == "value":
            clamped = [g.clamp(-clip, clip) for g in grads]
            return torch.stack(torch._foreach_norm(clamped)).float().square().sum().sqrt()
        norm = total_sq.sqrt()
        # torch.nn.utils.clip_grad_norm_: scale by clip / (norm + 1e-6) when that is below 1
        return norm * torch.clamp(clip / (norm + 1e-6), max=1.0)

    def _nonfinite(self, grads: list[Tensor], total: Tensor) -> Tensor:
        """Count the non-finite gradient values, shape (1,).

        Any non-finite value makes the global norm non-finite, so a finite norm means 0. On the host
        path (CPU, where reading a value is free) that test skips the count. Off it (an accelerator:
        no host read between flushes) the count is two fused multi-tensor kernels, whatever the norm:
        g * 0 is 0 where g is finite and NaN elsewhere, and the 0-"norm" counts the non-zeros. It is
        exact, also when finite values overflow the float32 norm (then the count is 0, not a guess).
        """
        if self._host_reads:
            if math.isfinite(float(total)):
                assert self._zero is not None
                return self._zero
            return torch.stack([(~torch.isfinite(g)).sum() for g in grads]).sum().float().reshape(1)
        marked = torch._foreach_mul(grads, 0.0)
        return torch.stack(torch._foreach_norm(marked, ord=0)).sum().float().reshape(1)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._pending_ratio:
            return
        self._pending_ratio = False
        assert self._w_root is not None and self._layer_zeros is not None
        enabled = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)
        try:
            torch._foreach_sub_(self._prev, self._params)  # prev := w_before - w_after, in place
            d_sq = torch.stack(torch._foreach_norm(self._prev)).float().square()
            d_root = torch.index_add(self._layer_zeros, 0, self._layer_index, d_sq).sqrt()
            ratio = d_root.div_(self._w_root)
        finally:
            torch._C._set_grad_enabled(enabled)
        self.buffer.record(trainer.global_step - 1, self._ratio_names, ratio)

    # -------------------------------------------------------------- gradient noise scale

    def _noise_scale(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        """`grad/noise_scale` and `grad/snr` from per-sample gradients of a fresh probe (`noise_probe`)."""
        data = getattr(pl_module, "data", None)
        if data is None:
            return
        n = int(data.x_train.shape[0])
        assert self._probe_gen is not None
        rows = torch.randperm(n, generator=self._probe_gen)[: min(self.probe_size, n)]
        w = None if data.w_train is None else data.w_train[rows.to(data.w_train.device)]
        rows = rows.to(data.x_train.device)
        try:
            flat = noise_probe(
                pl_module.model, pl_module.loss, data.x_train[rows], data.y_train[rows], w, rows
            )
        except Exception as exc:  # a user loss or model that vmap cannot trace: probe off, keep training
            warnings.warn(f"gradient noise probe disabled: {exc}", stacklevel=1)
            self.noise_every = 0
            return
        noise_scale, snr = unbiased_noise_scale(flat)
        self.buffer.record(step, ("grad/noise_scale", "grad/snr"), torch.stack([noise_scale, snr]).float())


def noise_probe(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module,
    x: Tensor,
    y: Tensor,
    weight: Tensor | None = None,
    rows: Tensor | None = None,
) -> Tensor:
    """Per-sample gradients (P, n_params) of the loss the run trains on, over the P probe rows.

    - *The training loss, weights included.* Sample i's gradient is P x its share of the gradient of
      the batch loss over the probe, loss(model(x), y, weight): each row runs through the model with
      its own copy of the parameters (torch.func.vmap) and the loss sees the whole probe at once, so
      a weighted loss (`weighted_mse`, with weights from the data or, matched by position through
      `rows`, from `loss.weights`; `normalize=True` included) probes exactly what it trains on.
    - *Dropout.* vmap runs with randomness="different": every row draws its own dropout mask, as it
      does in a training batch ("same" would share one mask across the probe and understate the
      noise; the default, "error", refused any model with dropout).
    - *Rows.* The callback draws P rows without replacement afresh at every probe, from a generator
      seeded by the run's seed, so successive probes are independent samples of the gradient noise.
    - *Probe size* (`grad_stats.probe_size`, default `PROBE_SIZE` = 512; capped at the training rows).
      Measured on linear regression with a known noise scale (x ~ N(0, I_20), y = x.beta + N(0, 1),
      no bias, MSE at a point delta = w - beta away from the optimum: per-sample gradients
      2 (delta.x - eps) x, G = 2 delta, tr(Sigma) = 4 ((d + 1) |delta|^2 + d sigma^2), so
      B_simple = d + 1 + d sigma^2 / |delta|^2, set to 400), 400 seeds per size
      (tests/unit/train/callbacks/test_noise_probe.py):

      | probe | median B / 400 | IQR of B / 400 | within 20% | NaN share |
      |---|---|---|---|---|
      | 32 | 1.41 | [0.17, 0.75] | 4% | 40% |
      | 128 | 1.26 | [0.53, 1.70] | 12% | 20% |
      | 256 | 1.07 | [0.66, 1.74] | 22% | 5.8% |
      | 512 | 1.08 | [0.80, 1.53] | 35% | 0.25% |
      | 1024 | 1.04 | [0.83, 1.29] | 46% | 0% |

      (median with a NaN counted as +inf; IQR over the finite estimates.) 512 is the smallest size
      whose median is within 20% of the truth with under 5% NaN. One probe's estimate stays wide
      (B = tr Sigma / |G|^2 divides by a noisy |G|^2; a product of Gaussians is heavy-tailed), so
      read the curve over several probes rather than one value.
    """
    from torch.func import functional_call, grad, vmap

    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    x, y = like_weights(model, x, y)
    if weight is not None:
        (weight,) = like_weights(model, weight)
    p = x.shape[0]
    stacked = {k: v.unsqueeze(0).expand(p, *v.shape) for k, v in params.items()}

    def one_row(theta: dict[str, Tensor], xi: Tensor) -> Tensor:
        return functional_call(model, {**theta, **buffers}, (xi.unsqueeze(0),)).squeeze(0)

    def batch_loss(theta: dict[str, Tensor]) -> Tensor:
        pred = vmap(one_row, randomness="different")(theta, x)
        return call_loss(loss_fn, pred, y, weight)

    checked = getattr(loss_fn, "check_values", None)
    own = getattr(loss_fn, "weights", None)
    by_position = isinstance(own, Tensor) and rows is not None
    try:
        if checked is not None:
            loss_fn.check_values = False  # data was validated up front; vmap cannot branch on values
        if by_position:
            loss_fn.weights = own[rows.to(own.device)]  # config weights follow the probe's rows
        per_sample = grad(batch_loss)(stacked)
    finally:
        if checked is not None:
            loss_fn.check_values = checked
        if by_position:
            loss_fn.weights = own
    return torch.cat([g.reshape(p, -1) for g in per_sample.values()], dim=1) * p


def unbiased_noise_scale(per_sample: Tensor) -> tuple[Tensor, Tensor]:
    """Simple noise scale B = tr(Sigma) / |G|^2 and SNR = |G|^2 / (tr(Sigma) / P) from P per-sample gradients.

    |mean|^2 over P samples overestimates |G|^2 by tr(Sigma) / P, which capped the old estimate at about
    P. The unbiased estimators of McCandlish et al. (2018, "An Empirical Model of Large-Batch Training",
    appendix A), with batch sizes 1 and P, are S = sum |g_i - mean|^2 / (P - 1) for tr(Sigma) and
    |mean|^2 - S / P for |G|^2; B is their ratio. When the |G|^2 estimate is not positive the gradient
    is indistinguishable from noise at this probe size: B is undefined (nan) and the SNR 0.
    """
    p = per_sample.shape[0]
    if p < 2:
        nan = torch.full((), math.nan, device=per_sample.device)
        return nan, nan
    per_sample = per_sample.double()
    mean = per_sample.mean(0)
    tr_sigma = ((per_sample - mean) ** 2).sum() / (p - 1)
    g2 = (mean**2).sum() - tr_sigma / p
    positive = g2 > 0
    nan = torch.full((), math.nan, dtype=g2.dtype, device=g2.device)
    noise_scale = torch.where(positive, tr_sigma / g2.clamp_min(1e-300), nan)
    snr = torch.where(positive, g2 / (tr_sigma / p).clamp_min(1e-300), torch.zeros_like(g2))
    return noise_scale, snr
