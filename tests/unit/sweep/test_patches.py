"""The third-party code LossLab patches is still what it was tested against (sweep/patches.py)."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import pytest

from losslab.sweep import patches


@pytest.mark.parametrize("dist", sorted(patches.TESTED))
def test_installed_versions_are_the_tested_ones(dist):
    series = ".".join(version(dist).split(".")[:2])
    assert series == patches.TESTED[dist], (
        f"{dist} {version(dist)} is installed but sweep/patches.py was tested with {patches.TESTED[dist]}: "
        "re-run tests/e2e/test_sweep_interrupts.py and test_faults.py, then update TESTED"
    )


def test_the_patched_names_exist_with_the_signatures_the_wrappers_call():
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
    from joblib.externals.loky import process_executor

    assert list(inspect.signature(process_joblib_cfg).parameters) == ["joblib_cfg"]
    launch = getattr(JoblibLauncher.launch, "__wrapped__", JoblibLauncher.launch)
    assert list(inspect.signature(launch).parameters)[:3] == ["self", "job_overrides", "initial_job_idx"]
    kill = process_executor.kill_process_tree
    assert callable(kill) and "process" in inspect.signature(kill).parameters


def test_guard_wraps_each_function_once_and_keeps_the_original_callable():
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
    from joblib.externals.loky import process_executor

    patches.guard_worker_death(lambda *a: None)
    kill, launch = process_executor.kill_process_tree, JoblibLauncher.launch
    patches.guard_worker_death(lambda *a: None)  # a second sweep in the same process
    assert process_executor.kill_process_tree is kill and JoblibLauncher.launch is launch
    assert getattr(kill, "_losslab_gentle", False) and getattr(launch, "_losslab_guard", False)


def test_process_joblib_cfg_converts_as_the_launcher_does():
    settings = {
        "n_jobs": 2,
        "backend": "loky",
        "prefer": "processes",
        "require": None,
        "verbose": 0,
        "timeout": None,
        "pre_dispatch": "2*n_jobs",
        "batch_size": "auto",
        "temp_folder": None,
        "max_nbytes": None,
        "mmap_mode": "r",
    }
    patches.process_joblib_cfg(settings)
    assert settings["n_jobs"] == 2 and settings["backend"] == "loky"
