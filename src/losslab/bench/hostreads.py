"""Host reads per training step, counted on any device: the CPU's stand-in for CUDA's sync count.

On a GPU every read of a device value to the host (`.item()`, `float(t)`, `bool(t)`, `.tolist()`,
`.cpu()`, ...) waits for the queue to drain. `torch.cuda.set_sync_debug_mode` counts those waits,
but only on CUDA. Here a `TorchFunctionMode` counts the same calls on any device, with the file:line
that made each one, while LossLab trains with its accelerator code paths forced on
(`GradientStats.host_reads = False`, the divergence guard's tensor rule and its every-50-steps
check), so a machine without a GPU shows what a GPU run would wait on.

Like the GPU section, the per-step figure is the reads of a 2N-step run minus an N-step run, over
N: set-up, the end-of-run flush and close cancel out; validation passes and flushes that grow with
the steps do not.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

#: tensor methods that hand a value to Python (each one a device sync when the tensor is on a GPU)
READS = frozenset(
    {
        "item",
        "tolist",
        "cpu",
        "numpy",
        "__bool__",
        "__float__",
        "__int__",
        "__index__",
        "__format__",
        "is_nonzero",
        "equal",
        "allclose",
    }
)
_TORCH_DIR = str(Path(torch.__file__).parent)
#: torch's optimizers read their step counters (`state["step"]`, kept on the CPU unless
#: `capturable`): no device value, so no sync on a GPU either, and the raw loop makes the same reads
_OPTIM_DIR = str(Path(torch.__file__).parent / "optim")


def _caller() -> str | None:
    """file:line of the innermost frame outside torch and this module; None for torch.optim's reads."""
    frame = sys._getframe(2)
    if frame.f_code.co_filename.startswith(_OPTIM_DIR):
        return None
    while frame is not None:
        name = frame.f_code.co_filename
        if not name.startswith(_TORCH_DIR) and name != __file__:
            return f"{Path(name).name}:{frame.f_lineno}"
        frame = frame.f_back  # type: ignore[assignment]
    return "?"


class HostReads(TorchFunctionMode):
    """Counts calls of `READS` by file:line while active (`counts`); everything else passes through."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if getattr(func, "__name__", "") in READS:
            where = _caller()
            if where is not None:
                self.counts[f"{func.__name__} {where}"] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def accelerator_paths() -> Iterator[None]:
    """LossLab's callbacks as they run on an accelerator, on whatever device this is."""
    from losslab.train.callbacks import gradients, guard

    plain_guard = guard.DivergenceGuard

    class DeviceGuard(plain_guard):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("on_device", True)
            kwargs.setdefault("check_every", 50)  # the guard's default off the CPU
            super().__init__(*args, **kwargs)

    saved = gradients.GradientStats.host_reads
    gradients.GradientStats.host_reads = False
    guard.DivergenceGuard = DeviceGuard  # type: ignore[misc]
    try:
        yield
    finally:
        gradients.GradientStats.host_reads = saved
        guard.DivergenceGuard = plain_guard  # type: ignore[misc]


def count_run(cfg: Any, uri: str) -> Counter[str]:
    """Host reads of one `task.train(cfg)` on the accelerator paths, by `method file:line`."""
    from losslab.bench.harness import tracking_env
    from losslab.train import job as task

    mode = HostReads()
    with tracking_env(uri), contextlib.redirect_stdout(io.StringIO()), accelerator_paths(), mode:
        result = task.train(cfg)
    if result.status != "FINISHED":
        raise RuntimeError(f"host-read count: run ended {result.status}: {result.error}")
    return mode.counts


def reads_per_step(cfg_for: Any, uri: str, steps: int = 100) -> tuple[float, dict[str, float]]:
    """(reads per step, {source: reads per step}) from a 2N-step run minus an N-step run, over N.

    `cfg_for(n)` composes the job with `trainer.max_steps=n`."""
    counts = [count_run(cfg_for(n), uri) for n in (steps, 2 * steps)]
    extra = counts[1].copy()
    extra.subtract(counts[0])
    sources = {k: round(v / steps, 4) for k, v in extra.most_common() if v}
    return (sum(counts[1].values()) - sum(counts[0].values())) / steps, sources
