"""`losslab-train`, `python -m losslab` and `python train.py`: one run, or a sweep with -m.

`losslab-train` checks the command line first (`configcheck`: one `Error:` paragraph, exit 2, for
a mistyped group, option or key), then hands it to Hydra with the configs shipped in the package,
so it works the same from a checkout, from any directory and from a wheel.
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from omegaconf import DictConfig

from losslab import CONF_DIR

log = logging.getLogger("losslab.cli")


def error_handler() -> logging.Handler:
    """`Error:` lines before Hydra has set up logging: plain text on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _hydra_train(cfg: DictConfig) -> float:
    from losslab.train.job import main as run

    return run(cfg)


def _refuse(exc: Exception) -> None:
    """LossLab's one-paragraph `Error:` for a command-line mistake, exit 2."""
    if not log.handlers:
        log.addHandler(error_handler())
        log.propagate = False
    log.error("Error: %s", exc)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    """`losslab-train [group=option ...] [key=value ...] [-m]`: one run, or a sweep with -m."""
    from losslab.config.commandline import CommandLineError, check

    # like `python -m` and `python train.py`: modules in the current directory import
    # (a user's `loss._target_=my_loss.MyLoss`)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        args = check(args)
    except CommandLineError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":  # the user asked for Hydra's own traceback
            log.debug("configcheck: %s; HYDRA_FULL_ERROR=1 hands the command line to Hydra", exc)
        else:
            _refuse(exc)
    sys.argv = [sys.argv[0], *args]
    try:
        _hydra_train()
    except KeyboardInterrupt as stop:  # a sweep stopped by a signal: its jobs already ended KILLED
        print(f"interrupted ({stop}); runs in progress were closed as KILLED", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
