"""LossLab's sweeper validates one job per config shape: fewer compositions before the first job,
the same composition errors caught before any job runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import CONF, all_runs, run_train
from hydra_plugins.losslab_sweeper.sweeper import distinct_shapes


@pytest.fixture(scope="module")
def shapes():
    """batch -> indices of the jobs validated, with Hydra's real config repository for LossLab's configs."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        parser = OverridesParser.create(config_loader=loader)
        repository = loader.repository  # type: ignore[attr-defined]

        def run(batch: list[list[str]]) -> list[int]:
            return distinct_shapes(batch, parser, repository.group_exists)

        yield run


def test_numbers_given_to_plain_keys_share_one_validation(shapes):
    assert shapes([[f"seed={i}"] for i in range(16)]) == [0]
    lrs = [["optimizer.lr=0.001", "seed=0"], ["optimizer.lr=0.01", "seed=1"], ["optimizer.lr=1e-3", "seed=2"]]
    assert shapes(lrs) == [0]


def test_group_choices_strings_types_additions_and_hydra_keys_each_keep_their_own(shapes):
    groups = [[f"loss={loss}", f"seed={s}"] for loss in ("hinge", "mse") for s in (0, 1)]
    assert shapes(groups) == [0, 2]  # one per loss, the seeds share
    assert shapes([["trainer.precision=32"], ["trainer.precision=16-mixed"]]) == [0, 1]  # a string
    assert shapes([["loss.margin=1"], ["loss.margin=1.5"]]) == [0, 1]  # int and float: typed configs differ
    assert shapes([["+loss.scale=0.5"], ["+loss.scale=2"]]) == [0, 1]  # adds a key
    assert shapes([["hydra.job.chdir=true"], ["hydra.job.chdir=false"]]) == [0, 1]  # Hydra's typed config


def test_a_sweep_runs_losslab_sweeper_and_still_stops_on_a_shape_that_cannot_compose(
    store, client, tmp_path: Path
):
    ok = run_train(["-m", "seed=0,1,2", "trainer.max_steps=3", f"hydra.sweep.dir={tmp_path / 'a'}"], tmp_path)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    multirun = (tmp_path / "a" / "multirun.yaml").read_text()
    assert "_target_: hydra_plugins.losslab_sweeper.sweeper.LossLabSweeper" in multirun
    assert len([r for r in all_runs(client) if r.data.tags.get("losslab.sweep") != "parent"]) == 3

    # hinge has a margin, mse has none: the mse shape fails validation, before any job of either loss
    bad = run_train(
        [
            "-m",
            "loss=hinge,mse",
            "loss.margin=1",
            "seed=0,1",
            "trainer.max_steps=3",
            f"hydra.sweep.dir={tmp_path / 'b'}",
        ],
        tmp_path,
    )
    assert bad.returncode != 0  # Hydra's own error: the master config (default loss mse) has no margin
    assert "Could not override 'loss.margin'" in bad.stdout + bad.stderr
    assert len(all_runs(client)) == 4  # the first sweep's 3 jobs and its parent

    # huber has a delta already, so `+loss.delta` composes for hinge only: refused before a parent run
    # exists (before: the parent was made first and left KILLED, and Hydra printed its raw message)
    bad = run_train(
        [
            "-m",
            "loss=hinge,huber",
            "+loss.delta=2",
            "seed=0,1",
            "trainer.max_steps=3",
            f"hydra.sweep.dir={tmp_path / 'c'}",
        ],
        tmp_path,
    )
    said = bad.stdout + bad.stderr
    assert bad.returncode == 2, said
    assert "Error: job 2 of this 4-job sweep (loss=huber +loss.delta=2 seed=0" in said, said
    assert "An item is already at 'loss.delta'" in said and "Traceback" not in said
    assert len(said.strip().splitlines()) == 1, said
    assert len(all_runs(client)) == 4


def test_the_sweep_driver_imports_no_torch():
    """The driver composes, creates the parent run and launches: torch (1.4 s) is for the jobs only,
    and a joblib sweep's driver shares the two vCPUs with workers importing it."""
    import subprocess
    import sys

    code = (
        "import sys, losslab.sweep.callback, losslab.sweep.parent, losslab.tracking.recorder, "
        "losslab.sweep.workers, losslab.sweep.interrupts; "
        "print(sorted(m for m in ('torch', 'pytorch_lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
