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


def run_name(cfg: DictConfig, choices: dict[str, str], swept: list[str] | None = None) -> str:
    """e.g. `hinge-m0.5-adam-lr0.001-s0`; in a sweep, what differs between its runs comes first:
    `m0.5-s1 (hinge-adam-lr0.001)`, so the runs table tells the runs apart even when it cuts names.

    `swept`: the keys the sweep varies; default from LOSSLAB_SWEEP_KEYS (set by the sweep driver).
    """
    if swept is None:
        swept = [k for k in os.environ.get(SWEEP_KEYS_ENV, "").split(",") if k]
    tokens = _tokens(cfg, choices)
    varying, fixed = [], []
    for keys, token in tokens:
        (varying if set(keys) & set(swept) else fixed).append(token)
    shown = {k for keys, _ in tokens for k in keys}
    varying += [_swept_token(cfg, choices, k) for k in swept if k not in shown and not k.startswith("hydra")]
    if not varying:
        return "-".join(fixed)
    return f"{'-'.join(varying)} ({'-'.join(fixed)})" if fixed else "-".join(varying)


# ----------------------------------------------------------------------------- running
