"""Check a `losslab-train` command line before Hydra runs it: one `Error:` paragraph per mistake.

Hydra reports config mistakes in three different ways (its raw message with exit 1, a wrong
"use +optimzer=sgd" advice for a mistyped group, a bare "not in struct" for a mistyped key). Here
the command line is composed once with Hydra's own compose API, and every mistake is named with
what is accepted and the closest accepted spelling; `losslab-train` exits 2 with it.

Hand-written because no library turns Hydra's composition errors into suggestions; the work
itself (parsing overrides, composing, finding group options) is Hydra's.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

from hydra import compose
from hydra._internal.config_repository import ConfigRepository
from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
from hydra._internal.utils import get_args_parser
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from losslab import CONF_DIR
from losslab.config.hydra_errors import CommandLineError, composing, parse_overrides, train_message
from losslab.outcomes.rules import OutcomeRules


@dataclasses.dataclass
class Parsed:
    """Hydra's flags and overrides, as Hydra's own argument parser reads them."""

    overrides: list[str]
    multirun: bool
    config_dir: str | None
    config_name: str
    skip: bool  # --help, --hydra-help, --info, ...: nothing to check


def parse_flags(argv: list[str], config_name: str = "train") -> Parsed | None:
    """Split argv like Hydra does; None when argparse refuses it (Hydra then says why)."""
    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:
        return None
    skip = bool(
        args.help
        or args.hydra_help
        or args.shell_completion
        or args.info
        or args.experimental_rerun
        or args.config_path
    )
    return Parsed(
        list(args.overrides), bool(args.multirun), args.config_dir, args.config_name or config_name, skip
    )


def _closest(word: str, accepted: list[str]) -> str | None:
    found = difflib.get_close_matches(word, accepted, n=1, cutoff=0.6)
    return found[0] if found else None


def _maybe(suggestion: str | None, template: str) -> str:
    return f" Did you mean {template.format(suggestion)}?" if suggestion else ""


def outcome_names() -> list[str]:
    """Every `outcome.NAME` a user may set: the classifier's thresholds and the guard switch."""
    return sorted([f.name for f in dataclasses.fields(OutcomeRules)] + ["stop_on_divergence"])


class _Groups:
    """Config groups and their options over the full search path (hydra.searchpath and -cd included)."""

    def __init__(self, hydra_cfg: DictConfig) -> None:
        path = ConfigSearchPathImpl()
        for source in hydra_cfg.runtime.config_sources:
            path.append(str(source.provider), f"{source.schema}://{source.path}")
        self.repo = ConfigRepository(path)

    def exists(self, group: str) -> bool:
        return self.repo.group_exists(group)

    def options(self, group: str) -> list[str]:
        return sorted(self.repo.get_group_options(group, ObjectType.CONFIG))

    def top(self) -> list[str]:
        return sorted(
            g for g in self.repo.get_group_options("", ObjectType.GROUP) if g != "hydra" and self.exists(g)
        )


def _values(ov: Any) -> list[Any] | None:
    """The values an override takes (each of a sweep), or None for a sweep that cannot be listed."""
    if not ov.is_sweep_override():
        return [ov.value()]
    try:
        return list(ov.sweep_string_iterator())
    except Exception:  # interval(...), glob(...): the sweeper expands them
        return None


def _first(ov: Any) -> str | None:
    """`key=<first value>`: what composing one job of the sweep needs."""
    values = _values(ov)
    if not values:
        return None
    value = values[0]
    text = str(value) if ov.is_sweep_override() else ov.get_value_element_as_str()
    return f"{ov.get_key_element()}={text}"


def check(argv: list[str], config_dir: Path = CONF_DIR, config_name: str = "train") -> list[str]:
    """The argv to hand Hydra (`outcome.NAME` becomes `++outcome.NAME`), or CommandLineError."""
    parsed = parse_flags(argv, config_name)
    if parsed is None or parsed.skip:
        return argv
    overrides = parse_overrides(parsed.overrides)
    searchpath = [o.input_line for o in overrides if o.get_key_element() == "hydra.searchpath"]
    if parsed.config_dir:
        base = OmegaConf.load(config_dir / f"{parsed.config_name}.yaml")
        listed = list(OmegaConf.select(base, "hydra.searchpath", default=[]) or [])
        extra = f"file://{Path(parsed.config_dir).expanduser().resolve()}"
        searchpath = [f"hydra.searchpath=[{','.join([extra, *listed])}]"]
    with composing(config_dir, "train", train_message):
        base_cfg = compose(parsed.config_name, overrides=searchpath, return_hydra_config=True)
        groups = _Groups(base_cfg.hydra)
        rewritten = _check_keys_and_groups(overrides, base_cfg, groups, parsed.multirun)
        choices = [line for ov in overrides if _is_choice(ov, groups) and (line := _first(ov)) is not None]
        job_cfg = compose(parsed.config_name, overrides=searchpath + choices)
        _check_dotted(overrides, job_cfg)
        full = [line for ov in _rewrite(overrides, rewritten) if (line := _first(ov)) is not None]
        compose(parsed.config_name, overrides=searchpath + full)
    return [rewritten.get(a, a) for a in argv]


def _is_choice(ov: Any, groups: _Groups) -> bool:
    key = ov.get_key_element().lstrip("+")
    return "." not in key and not key.startswith(("hydra", "~")) and groups.exists(key)


def _rewrite(overrides: list[Any], rewritten: dict[str, str]) -> list[Any]:
    lines = [rewritten.get(o.input_line, o.input_line) for o in overrides]
    return OverridesParser.create().parse_overrides(lines)


def _check_keys_and_groups(
    overrides: list[Any], base: DictConfig, groups: _Groups, multirun: bool
) -> dict[str, str]:
    """Group options, bare `experiment=`, unknown top-level names and `outcome.NAME`; returns rewrites."""
    choices = {k for k in base.hydra.runtime.choices if not str(k).startswith("hydra/")}
    rewritten: dict[str, str] = {}
    for ov in overrides:
        raw = ov.get_key_element()
        key = raw.lstrip("+")
        if key.startswith(("hydra", "~")) or raw.startswith("~"):
            continue
        if ov.is_sweep_override() and not multirun:
            raise CommandLineError(
                f"{ov.input_line} sweeps over several values, which needs -m (multirun): "
                f"losslab-train {ov.input_line} -m."
            )
        if "." in key:
            head, _, leaf = key.partition(".")
            if head == "outcome" and not raw.startswith("+") and "." not in leaf:
                rewritten.update(_outcome(ov, leaf, base))
            continue
        if groups.exists(key):
            _check_choice(ov, key, raw, choices, groups)
        elif key not in base and not raw.startswith("+"):
            accepted = sorted(set(groups.top()) | {str(k) for k in base if k != "hydra"})
            close = _closest(key, accepted)
            maybe = _maybe(close, f"{{}}={ov.get_value_element_as_str()}")
            raise CommandLineError(
                f"{ov.input_line}: {key!r} is neither a config group nor a top-level key.{maybe} "
                f"Groups: {', '.join(groups.top())}; top-level keys: "
                f"{', '.join(sorted(str(k) for k in base if k != 'hydra' and k not in groups.top()))}."
            )
    return rewritten


def _check_choice(ov: Any, key: str, raw: str, choices: set[str], groups: _Groups) -> None:
    options = groups.options(key)
    if key not in choices and not raw.startswith("+"):
        value = ov.get_value_element_as_str()
        raise CommandLineError(
            f"{ov.input_line}: did you mean +{key}={value}? {key} is not in the default config, so it "
            f"is added with a plus (e.g. losslab-train +{key}={value} -m). Options: {', '.join(options)}."
        )
    for value in _values(ov) or []:
        if value is None or str(value) in options:
            continue
        close = _closest(str(value), options)
        raise CommandLineError(
            f"{ov.input_line}: there is no {key} config named {value!r}.{_maybe(close, f'{raw}={{}}')} "
            f"Accepted {key} options: {', '.join(options)} (a config of your own: put {key}/NAME.yaml "
            "in a dir and pass --config-dir DIR)."
        )


def _outcome(ov: Any, leaf: str, base: DictConfig) -> dict[str, str]:
    """`outcome.NAME=V` sets a threshold whether or not the YAML lists it (`++` = add or override)."""
    names = outcome_names()
    if leaf not in names:
        close = _closest(leaf, names)
        raise CommandLineError(
            f"{ov.input_line}: outcome has no setting {leaf!r}.{_maybe(close, 'outcome.{}')} "
            f"Accepted: {', '.join(f'outcome.{n}' for n in names)}."
        )
    if leaf in (base.get("outcome") or {}):
        return {}
    return {ov.input_line: f"++{ov.input_line}"}


def _check_dotted(overrides: list[Any], cfg: DictConfig) -> None:
    """`a.b.c=V` where some part of the path does not exist: name the part and its siblings."""
    for ov in overrides:
        raw = ov.get_key_element()
        if raw.startswith(("+", "~", "hydra")) or "." not in raw or raw.startswith("outcome."):
            continue
        parts = raw.split(".")
        node: Any = cfg
        for i, part in enumerate(parts):
            if not isinstance(node, DictConfig):
                break
            if part in node:
                node = node[part]
                continue
            where = ".".join(parts[:i])
            accepted = sorted(str(k) for k in node)
            close = _closest(part, accepted)
            prefix = f"{where}." if where else ""
            owner = f"{where} accepts" if where else "top-level keys are"
            raise CommandLineError(
                f"{ov.input_line}: {prefix}{part} is not a key of this config."
                f"{_maybe(close, prefix + '{}')} {owner}: {', '.join(accepted)}. "
                f"To add a new key (e.g. an argument of your own class), write +{raw}=..."
            )
