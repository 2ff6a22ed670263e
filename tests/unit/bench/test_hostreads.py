"""No host read in LossLab's per-step path: what a GPU would wait on, counted on the CPU.

`losslab.bench.hostreads` counts every call that hands a tensor's value to Python (`.item()`,
`float(t)`, `bool(t)`, `.tolist()`, `.cpu()`, ...) while LossLab trains with its accelerator code
paths forced on, so the count stands in for CUDA's sync count on a machine without a GPU.
"""

from __future__ import annotations

import torch

from conftest import compose
from losslab.bench.hostreads import HostReads, accelerator_paths, reads_per_step


def _cfg(steps: int):
    # 600 rows, 60% train, batch 36: 10 steps an epoch, so validation runs every 10 steps
    return compose(
        [
            "loss=mse",
            "model.hidden=[8,8]",
            f"trainer.max_steps={steps}",
            "tracking.log_curve_png=false",
            "tracking.flush_every=256",
            "rerun=true",
        ]
    )


def test_the_counter_sees_every_kind_of_read():
    t = torch.tensor([1.5])
    with HostReads() as mode:
        t.item()
        float(t)
        bool(t > 0)
        t.tolist()
        int(t)
        t.cpu()
        t.numpy()
        t + 1  # not a read
    kinds = {k.split()[0] for k in mode.counts}
    assert kinds == {"item", "__float__", "__bool__", "tolist", "__int__", "cpu", "numpy"}
    assert all(k.split()[1].startswith("test_hostreads.py:") for k in mode.counts)


def test_no_host_read_in_the_training_step_between_flushes(store):
    """Steps of a 2N-step run minus an N-step run: only the per-validation selection and the guard's
    every-50-steps check read a value; gradient statistics, the metric buffer and the recording
    callback never do (the default flush holds 256 steps, so no flush falls between)."""
    per_step, sources = reads_per_step(_cfg, store, steps=50)
    files = {k.split()[1].split(":")[0] for k in sources}
    assert not files & {"gradients.py", "recording.py", "steplog.py"}, sources
    assert files <= {"module.py", "guard.py"}, sources
    # one selection read per validation (every 10 steps here), one guard check per 50 steps
    assert per_step <= 1 / 10 + 1 / 50 + 1e-9, sources


def test_the_accelerator_paths_are_restored():
    from losslab.train.callbacks import gradients, guard

    plain = guard.DivergenceGuard
    with accelerator_paths():
        assert gradients.GradientStats.host_reads is False
        assert guard.DivergenceGuard(None).on_device is True
    assert gradients.GradientStats.host_reads is None and guard.DivergenceGuard is plain


def test_a_run_on_the_accelerator_paths_records_what_the_cpu_path_records(store, client):
    """Same seed, same data: every gradient statistic is the same with and without host reads."""
    plain = task_run(store, accelerator=False)
    device = task_run(store, accelerator=True)
    keys = sorted(k for k in client.get_run(plain).data.metrics if k.startswith("grad/"))
    assert "grad/nonfinite" in keys and "grad/update_ratio/fc0" in keys
    for key in keys:
        a = [(m.step, m.value) for m in client.get_metric_history(plain, key)]
        b = [(m.step, m.value) for m in client.get_metric_history(device, key)]
        assert sorted(a) == sorted(b), key


def task_run(uri: str, accelerator: bool) -> str:
    from losslab.train import job as task

    cfg = _cfg(30)
    if not accelerator:
        return task.train(cfg).run_id
    with accelerator_paths():
        return task.train(cfg).run_id
