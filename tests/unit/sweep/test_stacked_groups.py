"""Which jobs `hydra/launcher=stacked` trains together (losslab.sweep.stacked)."""

from __future__ import annotations

import pytest

from losslab.sweep.stacked import design_key, groups, max_replicas_error


def test_jobs_that_differ_only_in_seed_share_a_group_in_chunks_of_max_replicas():
    jobs = [[f"optimizer.lr={lr}", f"seed={s}"] for lr in (0.1, 0.01) for s in range(5)]
    assert groups(jobs, 8) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert groups(jobs, 2) == [[0, 1], [2, 3], [4], [5, 6], [7, 8], [9]]
    assert groups(jobs, 1) == [[i] for i in range(10)]


def test_the_seed_is_the_only_key_left_out_of_a_design():
    assert design_key(["seed=3", "loss=hinge", "loss.margin=0.5"]) == ("loss=hinge", "loss.margin=0.5")
    assert design_key(["data.split_seed=3", "seed=1"]) == ("data.split_seed=3",)
    # jobs without a seed to tell apart: each its own group (run as the basic launcher runs it)
    assert groups([["loss=mse"], ["loss=hinge"]], 8) == [[0], [1]]


@pytest.mark.parametrize("value", [0, -1, 2.5, "4", True, None])
def test_max_replicas_must_be_a_positive_integer(value):
    said = max_replicas_error(value)
    assert said is not None and "hydra.launcher.max_replicas" in said and "integer >= 1" in said


def test_max_replicas_accepts_positive_integers():
    assert max_replicas_error(1) is None and max_replicas_error(32) is None
