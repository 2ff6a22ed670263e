"""`python -m losslab.gradcheck`: check losses' autograd derivatives against finite differences.

    python -m losslab.gradcheck                       # every built-in loss (losslab/conf/loss/*.yaml)
    python -m losslab.gradcheck loss=hinge loss.margin=0.5
    python -m losslab.gradcheck loss._target_=mypkg.mod.MyLoss gradcheck.targets=pm1
    python -m losslab.gradcheck loss=focal gradcheck.points=200 gradcheck.seed=3

The check itself is `losses/fd_check.py`; this module composes the loss from its config, prints the
table and sets the exit status. Settings live under `gradcheck.` (see losslab/conf/gradcheck.yaml).
Exit status: 0 all checks pass, 1 some check fails, 2 bad input (unknown loss, `_target_` that does
not import, bad setting). Only torch, hydra and omegaconf are imported, so this stays quick to start.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from losslab import CONF_DIR
from losslab.config.hydra_errors import COMPOSE_ERRORS, CommandLineError, composing, gradcheck_message
from losslab.logs import one_line
from losslab.losses.domains import LabelDomainError, settle, split_config
from losslab.losses.fd_check import (
    LossFn,
    Report,
    UserInputError,
    check_loss,
    format_table,
)

# ---------------------------------------------------------------------------------------------
# command line


def config_dir() -> Path:
    """The configs shipped in the package (losslab/conf), or $LOSSLAB_CONFIG_DIR."""
    env = os.environ.get("LOSSLAB_CONFIG_DIR")
    return Path(env).expanduser().resolve() if env else CONF_DIR


def builtin_losses(conf: Path | None = None) -> list[str]:
    """The loss config names, <config dir>/loss/*.yaml."""
    return sorted(p.stem for p in ((conf or config_dir()) / "loss").glob("*.yaml"))


def main(argv: list[str] | None = None) -> int:
    """Run the checks the overrides select and print the table; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0
    try:
        reports = [_run_job(label, overrides) for label, overrides in _jobs(args)]
    except (UserInputError, CommandLineError) as exc:
        print(f"gradcheck: {exc}", file=sys.stderr)
        return 2
    print(format_table(reports))
    return 0 if all(r.passed for r in reports) else 1


def _jobs(args: list[str]) -> Iterator[tuple[str, list[str]]]:
    """One job per loss: the one the overrides name, or every built-in one when they name none."""
    choice = next((a.split("=", 1)[1] for a in args if a.startswith("loss=")), None)
    target = next((a.split("=", 1)[1] for a in args if a.startswith("loss._target_=")), None)
    if target is not None:
        yield target, args
    elif choice is not None or any(re.match(r"^[+~]*loss[.=]", a) for a in args):
        yield choice or "mse", args
    else:
        names = builtin_losses()
        if not names:
            raise UserInputError(f"no loss configs found in {config_dir() / 'loss'}.")
        for name in names:
            yield name, [f"loss={name}", *args]


def _run_job(label: str, overrides: list[str]) -> Report:
    cfg = _compose(overrides)
    loss = _instantiate(cfg)
    try:
        return check_loss(loss, name=label, **_settings(cfg))
    except ValueError as exc:  # a bad gradcheck.* value, or a loss declaring an unknown domain
        raise UserInputError(one_line(str(exc))) from None


def _compose(overrides: list[str]) -> Any:
    conf = config_dir()
    message = gradcheck_message(overrides, conf, lambda: builtin_losses(conf))
    with composing(conf, "gradcheck", message, errors=(*COMPOSE_ERRORS, ValueError)):
        return compose(config_name="gradcheck", overrides=overrides)


def _instantiate(cfg: Any) -> LossFn:
    if cfg.get("loss") is None:  # `~loss` on the command line deletes the loss node
        raise UserInputError(
            "the overrides left no loss to check (~loss deletes it). Pick one with loss=NAME "
            f"(built-in: {', '.join(builtin_losses())}) or loss._target_=package.module.Class."
        )
    target = cfg.loss.get("_target_", "?") if hasattr(cfg.loss, "get") else "?"
    try:
        node, declared = split_config(cfg.loss)  # `loss.domain` declares targets, like in training
        loss = instantiate(node)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, ImportError) or str(exc).startswith("Error locating target"):
            raise UserInputError(
                f"loss._target_={target!r} cannot be imported ({one_line(str(cause or exc))}). Check the "
                "dotted path and that its module is importable (installed, or its folder on PYTHONPATH)."
            ) from None
        reason = f"{type(cause).__name__}: {cause}" if cause else str(exc)
        raise UserInputError(f"cannot build the loss {target!r}: {one_line(reason)}") from None
    except LabelDomainError as exc:
        raise UserInputError(one_line(str(exc))) from None
    except (OmegaConfBaseException, ValueError, TypeError) as exc:
        raise UserInputError(f"cannot build the loss {target!r}: {one_line(str(exc))}") from None
    if not callable(loss):
        raise UserInputError(
            f"loss._target_={target!r} built a {type(loss).__name__}, which is not callable."
        )
    if isinstance(loss, nn.Module):  # a stock torch loss's documented domain, or loss.domain
        try:
            settle(loss, declared)
        except LabelDomainError as exc:
            raise UserInputError(one_line(str(exc))) from None
    return loss


def _settings(cfg: Any) -> dict[str, Any]:
    node = cfg.get("gradcheck")
    section = dict(OmegaConf.to_container(node, resolve=True)) if node is not None else {}
    params = inspect.signature(check_loss).parameters
    allowed = set(params) - {"loss", "inputs", "name"}
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise UserInputError(
            f"unknown gradcheck setting(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}."
        )
    for key, value in section.items():
        if isinstance(params[key].default, bool) and not isinstance(value, bool):
            raise UserInputError(f"gradcheck.{key} must be true or false, got {value!r}.")
    if "shapes" in section and isinstance(section["shapes"], list):
        section["shapes"] = [tuple(s) if isinstance(s, list) else s for s in section["shapes"]]
    return section


if __name__ == "__main__":
    sys.exit(main())
