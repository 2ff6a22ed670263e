"""What a run is called and how it is recognised again (resumable sweeps)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

#: jobs in the current sweep, set by the sweep callback for the `[k/N]` prefix (kept here, not in task.py,
#: so the sweep driver does not import torch just to name it)
SIZE_ENV = "LOSSLAB_SWEEP_SIZE"


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


def run_name(cfg: DictConfig, choices: dict[str, str]) -> str:
    """e.g. `hinge-m0.5-adam-lr0.001-s0`: loss, its swept knobs, optimizer, lr, seed."""
    parts = [loss_label(cfg, choices)]
    short = {"margin": "m", "delta": "d", "gamma": "g", "alpha": "a", "pos_weight": "pw", "normalize": "norm"}
    if not _builtin_loss(cfg):  # a user's loss: name it by its scalar parameters
        short = {k: k for k, v in cfg.loss.items() if k != "_target_" and isinstance(v, (int, float, bool))}
    for key, tag in short.items():
        value = cfg.loss.get(key)
        if isinstance(value, bool):
            parts += [tag] if value else []
        elif value is not None:
            parts.append(f"{tag}{_short(value)}")
    if cfg.data.get("weights") not in (None, "none"):
        parts.append(f"w-{cfg.data.weights}")
    parts += [choice_label(cfg, choices, "optimizer"), f"lr{_short(cfg.optimizer.lr)}", f"s{cfg.seed}"]
    return "-".join(parts)


# ----------------------------------------------------------------------------- running
