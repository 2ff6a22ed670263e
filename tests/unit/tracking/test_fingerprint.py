"""Where a fingerprint's source files are found: modules, packages and namespace packages."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from losslab.tracking.fingerprint import source_files, source_sha


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_module_in_unimported_namespace_packages(on_path: Path) -> None:
    """`tests.helpers.custom_losses.FailAt` on a resumed sweep: `tests` and `helpers` have no
    __init__.py and were never imported in the driver (importlib's finder raised KeyError there)."""
    module = on_path / "nsroot" / "inner" / "mylosses.py"
    module.parent.mkdir(parents=True)
    module.write_text("class MyLoss: ...\n")
    assert "nsroot" not in sys.modules
    assert source_files("nsroot.inner.mylosses.MyLoss") == [module]
    assert source_sha("nsroot.inner.mylosses.MyLoss") is not None
    assert "nsroot" not in sys.modules  # found on disk, nothing imported


def test_a_regular_package_in_a_namespace(on_path: Path) -> None:
    pkg = on_path / "nsroot2" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "losses.py").write_text("def f(): ...\n")
    assert source_files("nsroot2.pkg.losses.f") == [pkg / "losses.py"]
    assert source_files("nsroot2.pkg") == [pkg / "__init__.py", pkg / "losses.py"]


def test_a_name_that_is_nowhere() -> None:
    assert source_files("no_such_top_level_module_xyz.Loss") is None
