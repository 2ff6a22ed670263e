"""Friendlier words for command-line mistakes that Hydra reports before LossLab runs.

Hydra says a mistyped key (`loss.margni=1`) "is not in struct" but not which keys exist.
After Hydra has refused the command line, `unknown_key_hint` composes the config with
just the group choices and names the keys the mistyped one could have been.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf"


def _choices_only(overrides: list) -> list[str]:
    """Group selections (`loss=hinge`, `+experiment=x`), first value of a sweep, nothing else."""
    kept = []
    for ov in overrides:
        key = ov.get_key_element()
        if "." in key.lstrip("+~") or key.startswith(("hydra", "~")):
            continue
        value = next(iter(ov.sweep_string_iterator()), None) if ov.is_sweep_override() else ov.value()
        if isinstance(value, str):
            kept.append(f"{key}={value}")
    return kept


def unknown_key_hint(argv: list[str], config_dir: Path = CONF, config_name: str = "train") -> str | None:
    """One paragraph naming each unknown `a.b=value` key and the keys `a` accepts, or None."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = [a for a in argv if "=" in a and not a.startswith("-")]
    try:
        overrides = OverridesParser.create().parse_overrides(args)
        with initialize_config_dir(str(config_dir), version_base="1.3"):
            cfg = compose(config_name, overrides=_choices_only(overrides))
    except Exception:
        return None  # the command line is broken in some other way; Hydra's message stands
    hints = []
    for ov in overrides:
        key = ov.get_key_element()
        if key.startswith(("+", "~", "hydra")) or "." not in key:
            continue
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent, default=None)
        if not isinstance(node, DictConfig) or leaf in node:
            continue
        accepted = sorted(str(k) for k in node)
        close = difflib.get_close_matches(leaf, accepted, n=1)
        maybe = f" Did you mean {parent}.{close[0]}?" if close else ""
        hints.append(
            f"Error: {key} is not a key of this config; {parent} accepts: {', '.join(accepted)}.{maybe} "
            f"To add a new key (e.g. an argument of your own class), write +{key}=..."
        )
    return "\n".join(hints) or None
