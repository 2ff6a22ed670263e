"""The forward and loss of a stacked group's R models as one `torch.func.vmap` call (`train/stacked.py`)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from losslab.losses import accepts_weight
from losslab.losses.base import call_loss


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
