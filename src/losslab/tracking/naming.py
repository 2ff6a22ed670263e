"""What a run is called and how it is recognised again (resumable sweeps)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: jobs in the current sweep, set by the sweep callback for the `[k/N]` prefix (kept here, not in task.py,
#: so the sweep driver does not import torch just to name it)
SIZE_ENV = "LOSSLAB_SWEEP_SIZE"
#: comma-separated keys the running sweep varies (set by the sweep driver, read by `run_name`)
SWEEP_KEYS_ENV = "LOSSLAB_SWEEP_KEYS"


def config_hash(cfg: DictConfig) -> str:
    """Hash of what determines the result: everything but tracking, resume and display settings."""
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    for key in ("tracking", "rerun", "hydra"):
        container.pop(key, None)
    container.get("trainer", {}).pop("enable_progress_bar", None)
    text = json.dumps(container, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _builtin_loss(cfg: DictConfig) -> bool:
    return str(cfg.loss.get("_target_", "")).startswith("losslab.losses.")


def choice_label(cfg: DictConfig, choices: dict[str, str], group: str) -> str:
    """The option picked for a config group; outside Hydra, the `_target_`'s last name."""
    if choices.get(group):
        return choices[group]
    return str(OmegaConf.select(cfg, f"{group}._target_", default=group)).rsplit(".", 1)[-1].lower()


def loss_label(cfg: DictConfig, choices: dict[str, str]) -> str:
    """The loss's config name for built-ins, the class name for a user's `loss._target_`."""
    if _builtin_loss(cfg) and choices.get("loss"):
        return choices["loss"]
    return str(cfg.loss.get("_target_", "loss")).rsplit(".", 1)[-1].lower()


def _tokens(cfg: DictConfig, choices: dict[str, str]) -> list[tuple[tuple[str, ...], str]]:
    """(config keys a token shows, token): loss, its knobs, data weights, optimizer, lr, seed."""
    out: list[tuple[tuple[str, ...], str]] = [(("loss", "loss._target_"), loss_label(cfg, choices))]
    short = {"margin": "m", "delta": "d", "gamma": "g", "alpha": "a", "pos_weight": "pw", "normalize": "norm"}
    if not _builtin_loss(cfg):  # a user's loss: name it by its scalar parameters
        short = {k: k for k, v in cfg.loss.items() if k != "_target_" and isinstance(v, (int, float, bool))}
    for key, tag in short.items():
        value = cfg.loss.get(key)
        if isinstance(value, bool):
            if value:
                out.append(((f"loss.{key}",), tag))
        elif value is not None:
            out.append(((f"loss.{key}",), f"{tag}{_short(value)}"))
    if cfg.data.get("weights") not in (None, "none"):
        out.append((("data.weights",), f"w-{cfg.data.weights}"))
    out.append((("optimizer",), choice_label(cfg, choices, "optimizer")))
    out.append((("optimizer.lr",), f"lr{_short(cfg.optimizer.lr)}"))
    out.append((("seed",), f"s{cfg.seed}"))
    return out


def _swept_token(cfg: DictConfig, choices: dict[str, str], key: str) -> str:
    """A swept key no standard token shows (data=..., model.hidden=...): `leaf=value`, short."""
    if key in choices:
        return f"{key}={choices[key]}"
    value = OmegaConf.select(cfg, key, default=None)
    text = _short(value) if not isinstance(value, (DictConfig, list)) else str(OmegaConf.to_container(value))
    return f"{key.rsplit('.', 1)[-1]}={text.replace(' ', '')}"[:24]


#: swept keys whose token is their value alone (a study's design, a loss): the design's own name
_BARE = ("design", "loss")
#: tokens that never make a design (they follow it in a sweep's run names)
_NOT_DESIGN = ("optimizer", "optimizer.lr", "seed")


def run_name(cfg: DictConfig, choices: dict[str, str], swept: list[str] | None = None) -> str:
    """e.g. `hinge-m0.5-adam-lr0.001-s0`; in a sweep, only what differs between its runs, the design
    first and the seed last: `hinge_m0-lr0.1-s4` (a study's `+design`), `m0.5-s1` (a margin grid),
    `hinge-lr0.1-s2` (a sweep over lr and seeds: the loss leads), so the MLflow runs table, which
    cuts names after about 18 characters, still tells the designs apart. What the sweep holds fixed
    is in the parent run's name and in each run's params.

    `swept`: the keys the sweep varies; default from LOSSLAB_SWEEP_KEYS (set by the sweep driver).
    """
    if swept is None:
        swept = [k for k in os.environ.get(SWEEP_KEYS_ENV, "").split(",") if k]
    tokens = _tokens(cfg, choices)
    if not swept:
        return "-".join(token for _, token in tokens)
    keys = [k for k in swept if not k.startswith("hydra")]
    design: list[str] = []
    rest: list[str] = []
    if "design" in keys and choices.get("design"):  # `+design=hinge_m0`: the study's name for it
        design.append(choices["design"])
    elif {"loss", "loss._target_"} & set(keys):  # `loss=hinge,focal`: the loss's name
        design.append(loss_label(cfg, choices))
    bare_shown = bool(design)
    for group, token in tokens:
        varies = bool(set(group) & set(keys))
        if group[0] in ("loss", "loss._target_") or group == ("seed",):
            continue  # the loss leads (below), the seed ends
        if group[0] in _NOT_DESIGN:
            if varies:
                rest.append(token)
        elif varies and not (bare_shown and group[0].startswith("loss.")):
            design.append(token)
    shown = {k for group, _ in tokens for k in group} | set(_BARE)
    extra = [_swept_token(cfg, choices, k) for k in keys if k not in shown and k not in _NOT_DESIGN]
    design += extra
    if not design:  # nothing but lr or seeds varies: the loss is the one design
        design = [loss_label(cfg, choices)]
    return "-".join([*design, *rest, f"s{cfg.seed}"])


# ----------------------------------------------------------------------------- running
