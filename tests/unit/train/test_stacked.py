"""Seeds trained stacked (losslab.train.stacked) against the same seeds trained alone.

Each case trains every seed twice into one real sqlite store: alone through `job.train` (Lightning)
and together through `stacked.train_group`. A spy on LossLab's recording callback, the code both
paths feed, keeps every step's training loss and every validation loss in float64, before the
store's float32 buffer rounds them.
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from collections.abc import Mapping

import pytest

from conftest import compose
from losslab.config.build import ConfigError
from losslab.train import job as task
from losslab.train import stacked

#: recorded per run but not the same in a stacked run by nature: its wall clock is the group's
CLOCK = {"final/wall_seconds", "final/steps_per_second"}
SMALL = ["model.hidden=[16,16]", "data.n_samples=400", "rerun=true"]


@pytest.fixture
def spy(monkeypatch):
    """run id -> [(kind, global step, float64 value)] for every training step and validation."""
    from losslab.train.callbacks.recording import TrackingCallback

    seen: dict[str, list[tuple[str, int, float]]] = defaultdict(list)
    batch_end, val_end = TrackingCallback.on_train_batch_end, TrackingCallback.on_validation_end

    def on_batch(self, trainer, module, outputs, batch, idx):
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        seen[self.recorder.run_id].append(("train", trainer.global_step, loss.detach().double().item()))
        return batch_end(self, trainer, module, outputs, batch, idx)

    def on_val(self, trainer, module):
        seen[self.recorder.run_id].append(("val", trainer.global_step, module.val_loss.double().item()))
        return val_end(self, trainer, module)

    monkeypatch.setattr(TrackingCallback, "on_train_batch_end", on_batch)
    monkeypatch.setattr(TrackingCallback, "on_validation_end", on_val)
    return seen


def _both(overrides: list[str], seeds=(0, 1)):
    alone = [task.train(compose([f"seed={s}", *overrides])) for s in seeds]
    together = stacked.train_group(
        [compose([f"seed={s}", *overrides]) for s in seeds], lambda i: contextlib.nullcontext()
    )
    return alone, together


def _rel(a: float, b: float) -> float:
    if math.isnan(a) and math.isnan(b):
        return 0.0
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def _same_run(client, a, b, spy=None, tol64: float = 1e-9) -> None:
    """Run b (stacked) recorded what run a (alone) recorded: every metric at every step, the labels,
    the params; with `spy`, every float64 loss within `tol64` relative."""
    assert (a.status, a.outcome) == (b.status, b.outcome), (a, b)
    ra, rb = client.get_run(a.run_id), client.get_run(b.run_id)
    assert ra.data.params == rb.data.params
    for tag in (
        "outcome",
        "outcome_reason",
        "overfitting",
        "best_val_step",
        "stopped_early",
        "first_bad_step",
    ):
        assert ra.data.tags.get(tag) == rb.data.tags.get(tag), tag
    assert rb.data.tags[stacked.STACKED_TAG] == "2"
    assert set(ra.data.metrics) == set(rb.data.metrics)
    for key in sorted(set(ra.data.metrics) - CLOCK):
        ha = {m.step: m.value for m in client.get_metric_history(a.run_id, key)}
        hb = {m.step: m.value for m in client.get_metric_history(b.run_id, key)}
        assert ha.keys() == hb.keys(), key
        worst = max(_rel(ha[s], hb[s]) for s in ha)
        assert worst <= 1e-6, (key, worst)  # stored as float32: at most a rounding apart
    if spy is not None:
        sa, sb = spy[a.run_id], spy[b.run_id]
        assert [(k, s) for k, s, _ in sa] == [(k, s) for k, s, _ in sb]
        assert len([1 for k, _, _ in sa if k == "train"]) == ra.data.metrics["final/steps"]
        worst = max(_rel(x, y) for (_, _, x), (_, _, y) in zip(sa, sb, strict=True))
        assert worst <= tol64, worst


F64 = ["trainer.precision=64-true", "trainer.max_steps=200", *SMALL]


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(["optimizer=adam"], id="adam"),
        pytest.param(  # the default suite keeps adam; CI's slow suite proves the rest of issue 24's list
            ["optimizer=sgd", "optimizer.momentum=0.9", "trainer.gradient_clip_val=0.5"],
            id="sgd-momentum-clip-norm",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            ["optimizer=adam", "trainer.gradient_clip_val=0.05", "+trainer.gradient_clip_algorithm=value"],
            id="adam-clip-value",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            ["loss=weighted_mse", "data.weights=noise_inverse", "data.n_samples=400", "optimizer=sgd"],
            id="weighted_mse-sgd",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_float64_stacked_replicas_match_their_solo_runs_over_200_steps(store, client, spy, case):
    alone, together = _both([*F64, *case])
    clipped = any("gradient_clip_val" in o for o in case)
    for a, b in zip(alone, together, strict=True):
        _same_run(client, a, b, spy)
        assert ("grad/global_norm_clipped" in client.get_run(b.run_id).data.metrics) == clipped


def test_a_replica_that_diverges_is_stopped_and_closed_while_the_other_goes_on(store, client, spy):
    """Full-batch gradient descent on a linear model just above seed 1's stability limit and below
    seed 0's: seed 1 diverges (stopped by its guard, validated once more, closed FINISHED as
    `diverged`), seed 0 trains its 200 steps; each exactly as alone."""
    case = ["model=linear", "data.batch_size=null", "optimizer=sgd", "optimizer.lr=0.86"]
    case += ["trainer.precision=64-true", "trainer.max_steps=200", "rerun=true"]
    alone, together = _both(case)
    assert [r.outcome for r in together] == ["converged", "diverged"]
    runs = [client.get_run(r.run_id) for r in together]
    assert runs[1].data.tags["stopped_early"] == "diverged"
    assert runs[1].data.metrics["final/steps"] < 200 == runs[0].data.metrics["final/steps"]
    assert all(r.info.status == "FINISHED" for r in runs)
    # the diverged run closed before the other: its end time is earlier
    assert runs[1].info.end_time <= runs[0].info.end_time
    for a, b in zip(alone, together, strict=True):
        _same_run(client, a, b, spy)


@pytest.mark.slow
def test_float32_replicas_get_the_solo_label_and_task_metrics(store, client):
    case = ["trainer.max_steps=200", "optimizer=sgd", "optimizer.momentum=0.9", *SMALL]
    alone, together = _both(case)
    for a, b in zip(alone, together, strict=True):
        assert (a.status, a.outcome) == (b.status, b.outcome) == ("FINISHED", a.outcome)
        ma, mb = client.get_run(a.run_id).data.metrics, client.get_run(b.run_id).data.metrics
        task_keys = [k for k in ma if k.startswith(("best/val_", "test/", "test_last/"))]
        assert task_keys
        for k in task_keys:
            assert abs(ma[k] - mb[k]) <= 1e-4, (k, ma[k], mb[k])


def test_a_loss_vmap_cannot_trace_is_refused_before_any_run(store, client):
    configs = [
        compose([f"seed={s}", "loss._target_=helpers.stacked_losses.ValueBranchMSE", "trainer.max_steps=5"])
        for s in (0, 1)
    ]
    with pytest.raises(ConfigError) as caught:
        stacked.train_group(configs, lambda i: contextlib.nullcontext())
    said = str(caught.value)
    assert "loss ValueBranchMSE cannot be trained stacked" in said
    assert "hydra/launcher=basic" in said and "\n" not in said
    exp = client.get_experiment_by_name("losslab")
    assert exp is None or not client.search_runs([exp.experiment_id])


@pytest.mark.parametrize(
    ("override", "said"),
    [
        ("model.dropout=0.2", "dropout"),
        ("trainer.precision=16-mixed", "trainer.precision"),
        ("+trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches"),
        ("trainer=early_stopping", "Lightning callbacks"),
    ],
)
def test_what_a_stack_cannot_reproduce_is_refused_before_any_run(store, client, override, said):
    configs = [compose([f"seed={s}", override, "trainer.max_steps=5"]) for s in (0, 1)]
    with pytest.raises(ConfigError, match=said):
        stacked.train_group(configs, lambda i: contextlib.nullcontext())
    exp = client.get_experiment_by_name("losslab")
    assert exp is None or not client.search_runs([exp.experiment_id])
