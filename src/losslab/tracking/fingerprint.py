"""Fingerprints of the code behind a run: an edited loss, model or data file makes its FINISHED runs not done.

A resumed sweep skips every job whose resolved config already has a FINISHED run. The config names the
loss class (`loss._target_=mypkg.losses.MyLoss`) but says nothing about its code, so a user who edits
`mypkg/losses.py` (or the data builder `data._target_=mypkg.mydata` names) and re-runs the same command would
get the old results back. Each run therefore records `loss_source_sha`, `model_source_sha` and
`data_source_sha`: the SHA-256 (first 16 hex digits) of the source text of the
module its `_target_` names, or, when that module is a package, of every `.py` file under the package
(LossLab's own losses: `losslab/losses/`, so an edit to `base.py` counts too; LossLab's data builders:
`losslab/data/`).

The module is found by path, never imported: `importlib.util.find_spec` for the top-level name (no code
runs for it) and `PathFinder` for each submodule below it (`find_spec` would import the parents). So the
sweep driver checks every job without importing torch or the user's code. A target that cannot be found
that way (a module made at run time, an extension module) falls back, in the job only, to the source of
the built object's class (`inspect.getsource`); the driver then cannot tell and lets the job decide.
Hand-written: no library hashes a module's source without importing it.

What the fingerprint does not see: code the loss imports from other modules (a helper in
`mypkg/utils.py`), and libraries. `rerun=true` re-runs regardless.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
from collections.abc import Mapping
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path
from typing import Any

#: the config groups whose code is fingerprinted, and the run tag each fingerprint goes in
TAGS = {"loss": "loss_source_sha", "model": "model_source_sha", "data": "data_source_sha"}
#: tag on a run made because an earlier FINISHED run of its config came from other code: the kinds
#: that changed (`loss`, `model`, `data`, or several joined by commas: `loss,model`) ...
CHANGED_TAG = "source_changed"
#: ... and that earlier run's id
SINCE_TAG = "source_changed_since"
#: a package with more files than this is hashed on its first files only (sorted by path)
MAX_FILES = 500
DIGITS = 16


def _module_spec(target: str) -> ModuleSpec | None:
    """The spec of the deepest module in the dotted `target` (the rest is attributes), found on
    sys.path without executing any module; None when even the top-level name is not found."""
    parts = target.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for i in range(1, len(parts)):
        locations = spec.submodule_search_locations
        if not locations:
            break
        name = ".".join(parts[: i + 1])
        try:
            sub = PathFinder.find_spec(name, list(locations))
        except (ImportError, ValueError):
            sub = None
        except KeyError:  # a namespace child looks its unimported parent up in sys.modules
            sub = _spec_on_disk(name, list(locations))
        if sub is None:
            break
        spec = sub
    return spec


def _spec_on_disk(name: str, locations: list[str]) -> ModuleSpec | None:
    """`name`'s spec read from the directories alone: a module file, a package, or a namespace."""
    last = name.rsplit(".", 1)[-1]
    for loc in map(Path, locations):
        if (loc / f"{last}.py").is_file():
            return importlib.util.spec_from_file_location(name, loc / f"{last}.py")
        if (loc / last / "__init__.py").is_file():
            return importlib.util.spec_from_file_location(name, loc / last / "__init__.py")
    dirs = [str(loc / last) for loc in map(Path, locations) if (loc / last).is_dir()]
    if not dirs:
        return None
    spec = ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = dirs
    return spec


def source_files(target: str) -> list[Path] | None:
    """The source files whose text makes the fingerprint of `target`; None when they cannot be found."""
    spec = _module_spec(target)
    if spec is None or not spec.has_location or not spec.origin:
        return None
    origin = Path(spec.origin)
    if origin.suffix != ".py" or not origin.is_file():
        return None
    if spec.submodule_search_locations and origin.name == "__init__.py":
        inner = sorted(p for p in origin.parent.rglob("*.py") if "__pycache__" not in p.parts and p != origin)
        return [origin, *inner][:MAX_FILES]
    return [origin]


def source_sha(target: str) -> str | None:
    """The fingerprint of the code `target` names (see the module docstring), or None."""
    files = source_files(target)
    if files is None:
        return None
    digest = hashlib.sha256()
    try:
        if len(files) == 1:  # a module: `sha256sum mypkg/losses.py | cut -c1-16` gives the same
            digest.update(files[0].read_bytes())
        else:  # a package: each file's path inside it counts too (a renamed file changes it)
            root = files[0].parent  # files[0] is the package's __init__.py
            for path in files:
                digest.update(path.relative_to(root).as_posix().encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    except OSError:
        return None
    return digest.hexdigest()[:DIGITS]


def _object_sha(obj: Any) -> str | None:
    """Fallback: the fingerprint of the source of `obj`'s class (or of `obj`, a function)."""
    target = obj if inspect.isclass(obj) or inspect.isfunction(obj) else type(obj)
    try:
        text = inspect.getsource(target)
    except (OSError, TypeError):
        return None
    return "obj-" + hashlib.sha256(text.encode()).hexdigest()[: DIGITS - 4]


def target_of(cfg: Any, kind: str) -> str | None:
    """`cfg.<kind>._target_` as a string, or None."""
    try:
        node = cfg.get(kind) if hasattr(cfg, "get") else None
        target = node.get("_target_") if node is not None and hasattr(node, "get") else None
    except Exception:  # an interpolation that does not resolve: the job reports it
        return None
    return str(target) if target else None


def current(
    cfg: Any, built: Mapping[str, Any] | None = None, cache: dict[str, str | None] | None = None
) -> dict[str, str]:
    """Tag name -> fingerprint for the loss, model and data builder of `cfg`. `built` (kind -> the object
    the job built) allows the fallback (not for data: the job holds the builder's result, a TensorData,
    not its code); without it (the driver) a kind that cannot be found by path is left
    out. `cache` (target -> fingerprint) spares hashing a file again for every job of a sweep."""
    out: dict[str, str] = {}
    for kind, tag in TAGS.items():
        target = target_of(cfg, kind)
        if target is None:
            continue
        if cache is not None and target in cache:
            sha = cache[target]
        else:
            sha = source_sha(target)
            if cache is not None:
                cache[target] = sha
        if sha is None and built is not None and kind in built:
            sha = _object_sha(built[kind])
        if sha is not None:
            out[tag] = sha
    return out


def changed(recorded: Mapping[str, str], now: Mapping[str, str], strict: bool = False) -> list[str] | None:
    """The kinds (`loss`, `model`, `data`) whose fingerprint in a run's tags `recorded` differs from `now`:
    [] when the run was made from the same code or recorded none (runs from before fingerprints count
    as done). None, with `strict`, when the run has a fingerprint that `now` lacks (cannot tell)."""
    kinds = []
    for kind, tag in TAGS.items():
        old, new = recorded.get(tag), now.get(tag)
        if not old:
            continue
        if new is None:
            if strict:
                return None
            continue
        if old != new:
            kinds.append(kind)
    return kinds
