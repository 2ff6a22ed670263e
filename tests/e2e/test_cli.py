"""The packaged command line: configs inside the package, studies and user configs on the search path,
the console scripts from a real wheel installed into a throwaway venv and run outside the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import ROOT, run_train
from losslab import CONF_DIR, STUDIES_DIR


def test_the_configs_and_studies_live_inside_the_package():
    assert (CONF_DIR / "train.yaml").is_file()
    assert (STUDIES_DIR / "experiment" / "hinge_margin.yaml").is_file()
    assert not (ROOT / "conf").exists()  # one place only: no stale copy, no symlink


def test_help_lists_the_studies_and_says_how_to_pick_one(tmp_path: Path):
    proc = run_train(["--help"], cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "experiment: " in proc.stdout and "hinge_margin" in proc.stdout
    assert "+experiment=NAME" in proc.stdout


def test_any_outcome_threshold_is_set_without_a_plus(tmp_path: Path):
    proc = run_train(["outcome.min_window=7", "outcome.stop_on_divergence=false", "--cfg", "job"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "min_window: 7" in proc.stdout and "stop_on_divergence: false" in proc.stdout


def test_a_users_config_dir_adds_studies_and_losses(tmp_path: Path):
    mine = tmp_path / "mine"
    (mine / "experiment").mkdir(parents=True)
    (mine / "loss").mkdir()
    (mine / "experiment" / "my_study.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /loss: my_huber\ntrainer:\n  max_steps: 17\n"
    )
    (mine / "loss" / "my_huber.yaml").write_text("_target_: losslab.losses.Huber\ndelta: 0.25\n")
    proc = run_train(["-cd", str(mine), "+experiment=my_study", "--cfg", "job"], tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "delta: 0.25" in proc.stdout and "max_steps: 17" in proc.stdout
    # the built-in studies stay reachable next to the user's
    proc = run_train(["-cd", str(mine), "+experiment=hinge_margin", "--cfg", "job"], tmp_path, timeout=60)
    assert proc.returncode == 0 and "experiment: hinge_margin" in proc.stdout, proc.stderr
    bad = run_train(["-cd", str(mine), "loss=my_hubr"], tmp_path, timeout=60)
    assert bad.returncode == 2 and "Did you mean loss=my_huber?" in bad.stderr, bad.stderr


@pytest.mark.slow
def test_a_pip_installed_losslab_trains_from_any_directory(tmp_path: Path, store: str):
    """`pip install` of a real wheel; its `losslab-train` runs in a directory that is not the checkout.

    Dependencies come from the test's own environment (a .pth file), so nothing is downloaded; the
    LossLab code, configs and entry points are the wheel's only.
    """
    wheels, source = tmp_path / "wheels", tmp_path / "source"
    source.mkdir()  # a copy: setuptools writes build/ into the tree it builds
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    pip = [sys.executable, "-m", "pip"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    vpy = venv / "bin" / "python"
    site = subprocess.run(
        [str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "losslab_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run(
        [str(vpy), "-m", "pip", "install", "-q", "--no-deps", *map(str, wheels.glob("*.whl"))],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [str(vpy), "-c", "import losslab; print(losslab.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(site), where  # the wheel's copy, not the checkout's
    run = subprocess.run(
        [str(venv / "bin" / "losslab-train"), "loss=hinge", "trainer.max_steps=20"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "done: hinge" in run.stdout
    assert list(elsewhere.glob("outputs/*/*/train.log"))  # Hydra's job log, in the user's directory
    for script, args in (("losslab-gradcheck", ["loss=hinge"]), ("losslab-compare", ["--all"])):
        proc = subprocess.run(
            [str(venv / "bin" / script), *args],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, (script, proc.stdout[-1500:], proc.stderr[-1500:])


def test_links_follow_losslab_ui_host_and_port_only(monkeypatch: pytest.MonkeyPatch):
    from losslab import links

    monkeypatch.setenv("HOST", "0.0.0.0")  # plain HOST/PORT (often set by shells) change nothing
    monkeypatch.setenv("PORT", "80")
    monkeypatch.delenv("LOSSLAB_UI_HOST", raising=False)
    monkeypatch.delenv("LOSSLAB_UI_PORT", raising=False)
    assert links.runs_url("7") == "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    monkeypatch.setenv("LOSSLAB_UI_HOST", "10.1.2.3")
    monkeypatch.setenv("LOSSLAB_UI_PORT", "5077")
    assert links.run_url("7", "abc") == (
        "http://10.1.2.3:5077/#/experiments/7/runs/abc?workflowType=machine_learning"
    )
    # runs on a tracking server: its UI is the server itself, unless LOSSLAB_UI_* name another
    assert links.runs_url("7", "http://127.0.0.1:5001").startswith("http://10.1.2.3:5077/")
    monkeypatch.delenv("LOSSLAB_UI_HOST")
    monkeypatch.delenv("LOSSLAB_UI_PORT")
    assert links.runs_url("7", "http://u:secret@127.0.0.1:5001").startswith("http://127.0.0.1:5001/#/")
    assert "secret" not in links.runs_url("7", "http://u:secret@127.0.0.1:5001")
