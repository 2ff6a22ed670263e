"""Where Hydra's and OmegaConf's errors become LossLab's messages: one `Error:` paragraph, exit 2.

Every command that composes a config from the command line (`losslab-train`'s check in
commandline.py, `losslab-gradcheck`) composes inside `composing(...)`: an error Hydra or OmegaConf
raises there becomes `CommandLineError`, whose text is the paragraph the command prints before it
exits 2. What each command says is written here too (`train_message`, `gradcheck_message`), so the
wording of a composition error lives in one module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hydra import initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

from losslab.logs import one_line

#: what Hydra's compose API raises for a config it cannot compose from the overrides
COMPOSE_ERRORS: tuple[type[Exception], ...] = (HydraException, OmegaConfBaseException)


class CommandLineError(ValueError):
    """A mistake on the command line; the message is the one paragraph shown to the user."""


@contextmanager
def composing(
    config_dir: Path,
    job_name: str,
    message: Callable[[Exception], str],
    errors: tuple[type[Exception], ...] = COMPOSE_ERRORS,
) -> Iterator[None]:
    """Hydra's compose API over `config_dir`; `errors` raised inside become CommandLineError(message(exc)).

    A CommandLineError raised inside (a command's own check) passes through unchanged.
    """
    try:
        with initialize_config_dir(str(config_dir), version_base="1.3", job_name=job_name):
            yield
    except CommandLineError:
        raise
    except errors as exc:
        raise CommandLineError(message(exc)) from None


def parse_overrides(lines: list[str]) -> list[Override]:
    """Hydra's reading of `key=value` overrides; a line it cannot read is a CommandLineError."""
    try:
        return OverridesParser.create().parse_overrides(lines)
    except OverrideParseException as exc:
        first = str(exc).strip().splitlines()[0]
        raise CommandLineError(
            f"the command line cannot be read: {first} Write group=option, key=value, "
            "+key=value (a new key) or a sweep key=a,b,c with -m."
        ) from None


def train_message(exc: Exception) -> str:
    """`losslab-train`: Hydra's own text in one paragraph, pointing at --help."""
    return f"{one_line(str(exc))} (see `losslab-train --help` for groups and keys)"


def gradcheck_message(
    overrides: list[str], config_dir: Path, builtin_losses: Callable[[], list[str]]
) -> Callable[[Exception], str]:
    """`losslab-gradcheck`: an unknown loss with the built-in ones listed, else Hydra's text in one line."""

    def message(exc: Exception) -> str:
        if isinstance(exc, MissingConfigException):
            missing = re.search(r"Could not find '([^']+)'", str(exc))
            if missing and missing.group(1).startswith("loss/"):
                name = missing.group(1).split("/", 1)[1]
                return (
                    f"unknown loss {name!r}; built-in losses: {', '.join(builtin_losses())}. "
                    "For your own loss use loss._target_=package.module.ClassName (plus +loss.ARG=VALUE "
                    "for its arguments)."
                )
            return f"cannot compose the gradcheck config from {config_dir}: {one_line(str(exc))}"
        return f"bad override in {' '.join(overrides)}: {one_line(str(exc))}"

    return message
