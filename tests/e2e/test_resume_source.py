"""Resuming a sweep after the user edited their loss file: real Hydra multiruns in subprocesses, a real
sqlite store, a user package written to a temp folder. An unchanged loss is skipped; an edited one runs
again and the sweep says so; runs recorded before fingerprints existed still count as done."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, all_runs, run_train

LOSS_V1 = '''
import torch
from torch import nn


class Scaled(nn.Module):
    """scale * mean squared error."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, y_pred, y_true):
        return self.scale * torch.mean((y_pred - y_true) ** 2)
'''
# the edit a user makes: same class, same config, other code
LOSS_V2 = LOSS_V1.replace("torch.mean((y_pred - y_true) ** 2)", "torch.mean(torch.abs(y_pred - y_true))")

SWEEP = [
    "loss._target_=mypkg.losses.Scaled",
    "+loss.scale=0.5,2",
    "data=regression",
    "trainer.max_steps=8",
    "-m",
]
ENV = {"PYTHONDONTWRITEBYTECODE": "1"}  # the edited file is read as written, whatever its mtime


def _user_package(root: Path, body: str) -> Path:
    """`mypkg/losses.py` under `root` (the sweep's working directory, which imports like `python -m`).
    Its __init__ raises: the driver must find the loss file without importing the package."""
    pkg = root / "mypkg"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text(
        "import os\n\nif os.environ.get('MYPKG_FORBID'):\n    raise RuntimeError\n"
    )
    path = pkg / "losses.py"
    path.write_text(body)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _package_sha(package: Path) -> str:
    """A package's fingerprint: `__init__.py` first, then its other files by path, each path and text."""
    init = package / "__init__.py"
    files = [init, *sorted(p for p in package.rglob("*.py") if p != init and "__pycache__" not in p.parts)]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _children(client) -> list:
    return [r for r in all_runs(client) if "mlflow.parentRunId" in r.data.tags]


def _sweep(tmp_path: Path):
    proc = run_train(SWEEP, cwd=tmp_path, env=ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_an_edited_loss_file_runs_its_jobs_again_and_an_unchanged_one_is_skipped(store, client, tmp_path):
    loss_file = _user_package(tmp_path, LOSS_V1)
    _sweep(tmp_path)
    first = _children(client)
    assert len(first) == 2 and all(r.info.status == "FINISHED" for r in first)
    # the fingerprint is the file's SHA-256 (as `sha256sum` prints it); the model's is recorded too
    assert {r.data.tags["loss_source_sha"] for r in first} == {_sha(loss_file)}
    assert {r.data.tags["model_source_sha"] for r in first} == {_package_sha(ROOT / "src/losslab/models")}

    unchanged = _sweep(tmp_path)
    assert "all 2 configs of this sweep are done" in unchanged.stdout
    assert len(all_runs(client)) == 3  # one parent, two children: nothing new

    loss_file.write_text(LOSS_V2)
    edited = _sweep(tmp_path)
    out = edited.stdout
    assert "all 2 configs" not in out and "skip:" not in out
    assert "2 of 2 jobs re-ran because the loss source changed: mypkg.losses.Scaled (2 jobs)" in out, out[
        -3000:
    ]
    assert out.count("re-run: ") == 2 and "the loss source changed since (mypkg.losses.Scaled)" in out
    children = _children(client)
    new = [r for r in children if r.info.run_id not in {f.info.run_id for f in first}]
    assert len(new) == 2 and all(r.info.status == "FINISHED" for r in new)
    assert {r.data.tags["loss_source_sha"] for r in new} == {_sha(loss_file)}
    assert _sha(loss_file) not in {r.data.tags["loss_source_sha"] for r in first}
    assert {r.data.tags["source_changed"] for r in new} == {"loss"}
    assert {r.data.tags["source_changed_since"] for r in new} == {r.info.run_id for r in first}
    # the new code ran: the same configs, other losses
    by_scale = {r.data.params["loss.scale"]: r for r in first}
    for run in new:
        old = by_scale[run.data.params["loss.scale"]]
        assert run.data.metrics["final/train_loss"] != old.data.metrics["final/train_loss"]

    again = _sweep(tmp_path)  # the re-run runs are from the current code: done
    assert "all 2 configs of this sweep are done" in again.stdout
    assert len(_children(client)) == 4

    loss_file.write_text(LOSS_V1)  # reverted: the first runs are from this code again
    reverted = _sweep(tmp_path)
    assert "all 2 configs of this sweep are done" in reverted.stdout
    assert len(_children(client)) == 4


DATA_V1 = """
from losslab.data import teacher_regression


def build(**kwargs):
    return teacher_regression(**kwargs)
"""
# the user's edit to their data code: same builder, same config, other data
DATA_V2 = DATA_V1.replace(
    "return teacher_regression(**kwargs)", "return teacher_regression(**{**kwargs, 'noise': 2.0})"
)


def test_an_edited_data_builder_runs_its_job_again(store, client, tmp_path):
    """Issue 26, item 10: before, the data code was not fingerprinted and the resume reused the stale run."""
    _user_package(tmp_path, LOSS_V1)
    data_file = tmp_path / "mypkg" / "mydata.py"
    data_file.write_text(DATA_V1)
    args = ["data._target_=mypkg.mydata.build", "trainer.max_steps=4", "tracking.log_curve_png=false", "-m"]
    first = run_train(args, cwd=tmp_path, env=ENV)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    (before,) = _children(client)
    assert before.data.tags["data_source_sha"] == _sha(data_file)

    data_file.write_text(DATA_V2)
    edited = run_train(args, cwd=tmp_path, env=ENV)
    out = edited.stdout
    assert edited.returncode == 0, out[-3000:] + edited.stderr[-3000:]
    assert "1 of 1 jobs re-ran because the data source changed: mypkg.mydata.build (1 job)" in out, out[
        -3000:
    ]
    assert "the data source changed since (mypkg.mydata.build)" in out, out[-3000:]
    (after,) = [r for r in _children(client) if r.info.run_id != before.info.run_id]
    assert after.info.status == "FINISHED" and after.data.tags["data_source_sha"] == _sha(data_file)
    assert after.data.tags["source_changed"] == "data"
    assert after.data.tags["source_changed_since"] == before.info.run_id


@pytest.mark.slow  # 14 s; the edited-loss resume test stays in the default suite
def test_runs_recorded_before_fingerprints_still_count_as_done(store, client, tmp_path):
    loss_file = _user_package(tmp_path, LOSS_V1)
    args = [a for a in SWEEP if not a.startswith("+loss.scale")]
    assert run_train(args, cwd=tmp_path, env=ENV).returncode == 0
    (run,) = _children(client)
    for tag in ("loss_source_sha", "model_source_sha"):  # what a run from an older LossLab records
        client.delete_tag(run.info.run_id, tag)
    loss_file.write_text(LOSS_V2)
    again = run_train(args, cwd=tmp_path, env=ENV)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "all 1 configs of this sweep are done" in again.stdout
    assert len(_children(client)) == 1


def test_the_driver_finds_a_loss_file_without_importing_it_or_torch(tmp_path, monkeypatch):
    """What the sweep driver does per job: resolve `_target_` to its file by path only."""
    loss_file = _user_package(tmp_path, LOSS_V1)
    code = (
        "import sys\n"
        "from losslab.tracking.fingerprint import source_files, source_sha\n"
        "print(source_files('mypkg.losses.Scaled'), source_sha('mypkg.losses.Scaled'))\n"
        "print(len(source_files('losslab.losses.Hinge')), 'torch' in sys.modules, 'mypkg' in sys.modules)\n"
    )
    env = {
        **os.environ,
        "MYPKG_FORBID": "1",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "src")]),
    }
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    files, sha = proc.stdout.splitlines()[0].rsplit(" ", 1)
    assert str(loss_file) in files and sha == _sha(loss_file)
    # LossLab's own losses are a package: every file of losslab/losses counts
    n_files = len(list((ROOT / "src/losslab/losses").glob("*.py")))
    assert proc.stdout.splitlines()[1] == f"{n_files} False False"


def test_what_a_target_that_names_no_module_file_is_fingerprinted_by(tmp_path, monkeypatch):
    from losslab.tracking.fingerprint import current, source_files

    loss_file = _user_package(tmp_path, LOSS_V1)
    monkeypatch.syspath_prepend(str(tmp_path))
    # a missing submodule: the deepest module found is the package, all of whose files count
    assert source_files("mypkg.nothere.Scaled") == [tmp_path / "mypkg/__init__.py", loss_file]
    # nothing found by path: no fingerprint in the driver, the built object's class source in the job
    cfg = {"loss": {"_target_": "nosuchpkg.Scaled"}}
    assert current(cfg) == {}
    built = current(cfg, {"loss": torch_module_of_this_test()})
    assert built["loss_source_sha"].startswith("obj-")


def torch_module_of_this_test():
    from torch import nn

    class Local(nn.Module):
        def forward(self, y_pred, y_true):
            return (y_pred - y_true).abs().mean()

    return Local()
