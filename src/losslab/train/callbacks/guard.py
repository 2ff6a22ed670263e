"""`DivergenceGuard`: stop a Lightning run whose loss has truly diverged, and only then.

It applies `outcomes.divergence.first_divergence`, the rule the outcome classifier labels by, so a
run the guard stopped is always labelled `diverged`, at the step the guard saw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from losslab.outcomes.divergence import (
    BLOWUP,
    NONFINITE,
    OVER_CAP,
    _reason,
    _Watch,
)
from losslab.outcomes.rules import OutcomeRules


def _loss_of(outputs: Any) -> Tensor | None:
    """The training loss from `on_train_batch_end` outputs (a tensor, or a dict with "loss")."""
    if isinstance(outputs, Mapping):
        outputs = outputs.get("loss")
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, (int, float)):
        return torch.tensor(float(outputs))
    return None


def _planned(trainer: pl.Trainer) -> int:
    """The run's configured length in optimizer steps (0 when unknown, e.g. an infinite run)."""
    if trainer.max_steps is not None and trainer.max_steps > 0:
        return int(trainer.max_steps)
    try:
        est = trainer.estimated_stepping_batches
    except Exception:  # no dataloader length yet: the patience falls back to its minimum
        return 0
    return int(est) if math.isfinite(est) else 0


class DivergenceGuard(pl.Callback):
    """Stop training when the loss has diverged by `first_divergence`'s rule, and only then.

    A spike that comes back within the patience is left alone: the run trains to the end and gets
    the label its whole curve earns. The patience is a share of the planned run
    (`trainer.max_steps`), so the guard and `classify(curve, planned_steps=max_steps)` agree.

    On CPU the rule runs on Python floats and is checked every batch. On an accelerator it runs in
    tensor ops on the loss's device (no host sync per step) and the flag is read every `check_every`
    batches (default 50); the first bad step is tracked on the device, so it is exact either way.
    Stopping sets `trainer.should_stop` (Lightning honours it after `min_steps` / `min_epochs`).
    """

    def __init__(
        self,
        rules: OutcomeRules | None = None,
        check_every: int | None = None,
        on_device: bool | None = None,
        planned_steps: int | None = None,
    ) -> None:
        """`on_device`: None = tensor ops on accelerators, floats on CPU; True = tensor ops everywhere."""
        if check_every is not None and check_every < 1:
            raise ValueError(f"check_every must be >= 1 or None, got {check_every}")
        self.rules = rules or OutcomeRules()
        self.check_every = check_every
        self.on_device = on_device
        self.planned_steps = planned_steps
        self._reset(planned_steps or 0)

    def _reset(self, planned: int) -> None:
        self.patience = self.rules.patience(planned)
        self.stopped_step: int | None = None
        self.reason = ""
        self.stopped = False
        self._every = self.check_every
        self._seen = 0
        self._t: dict[str, Tensor] = {}
        self._host: _Watch | None = None  # the CPU path: the rule on Python floats

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset(self.planned_steps if self.planned_steps is not None else _planned(trainer))

    def _update(self, x: Tensor, step: int) -> None:
        """One step of the rule in tensor ops (mirrors `first_divergence`)."""
        t = self._t
        if not t:
            s = x.abs().clamp_min(self.rules.abs_floor)
            lim, cap = x + (self.rules.blowup_factor - 1.0) * s, x + (self.rules.hard_cap - 1.0) * s
            zero = torch.zeros((), dtype=torch.int64, device=x.device)
            t.update(
                first=x.clone(),
                limit=lim,
                cap=cap,
                streak=zero,
                step=zero - 1,
                kind=zero.clone(),
                value=x.clone(),
                bad=torch.zeros((), dtype=torch.bool, device=x.device),
            )
        nonfinite, over = ~torch.isfinite(x), x > t["cap"]
        t["streak"] = torch.where(x > t["limit"], t["streak"] + 1, 0)
        new = (nonfinite | over | (t["streak"] >= self.patience)) & ~t["bad"]
        at = torch.where(nonfinite | over, step, step - self.patience + 1)
        kind = torch.where(nonfinite, NONFINITE, torch.where(over, OVER_CAP, BLOWUP))
        t["step"] = torch.where(new, at, t["step"])
        t["kind"] = torch.where(new, kind, t["kind"])
        t["value"] = torch.where(new, x, t["value"])
        t["bad"] = t["bad"] | new

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = _loss_of(outputs)
        if loss is None:
            return
        step = max(trainer.global_step - 1, 0)
        if loss.device.type == "cpu" and not self.on_device:
            value = float(loss) if loss.numel() == 1 else float(loss.detach().double().mean())
            if self._host is None:
                self._host = _Watch(self.rules, self.patience)
            if self._host.push(value) and self.stopped_step is None:
                self.stopped_step, self.reason = self._host.found  # type: ignore[misc]
            self._every = self._every or 1
        else:
            self._update(loss.detach().to(torch.float32).mean(), step)
            self._every = self._every or (1 if loss.device.type == "cpu" else 50)
        self._seen += 1
        if self._seen % self._every == 0:
            self._check(trainer)

    def _check(self, trainer: pl.Trainer) -> None:
        """Read the flag (one host sync) and, if any rank is bad, ask Lightning to stop."""
        local = self._sync()
        if trainer.strategy.reduce_boolean_decision(local, all=False):
            trainer.should_stop = True
            self.stopped = True
            if not local:
                self.reason = self.reason or "the loss diverged on another process"

    def _sync(self) -> bool:
        """Copy the device state to `stopped_step` / `reason` once; True when the loss diverged."""
        if self.stopped_step is not None:
            return True
        t = self._t
        if not t or not bool(t["bad"]):
            return False
        step, kind, value, first = int(t["step"]), int(t["kind"]), float(t["value"]), float(t["first"])
        self.stopped_step = step
        self.reason = _reason(kind, step, value, first, self.patience, self.rules)
        return True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sync()

    def state(self) -> dict[str, Any]:
        """Summary for the tracker: diverged, first_bad_step (global step or None), reason, stopped."""
        diverged = self._sync()
        return {
            "diverged": diverged,
            "first_bad_step": self.stopped_step,
            "reason": self.reason,
            "stopped": self.stopped,
        }
