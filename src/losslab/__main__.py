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
from omegaconf import DictConfig, OmegaConf

from losslab import CONF_DIR
from losslab.config.commandline import check
from losslab.config.hydra_errors import CommandLineError
from losslab.tracking.params import redact_uri
from losslab.tracking.store import resolve_tracking_uri

log = logging.getLogger("losslab.cli")


def error_handler() -> logging.Handler:
    """`Error:` lines before Hydra has set up logging: plain text on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _hydra_train(cfg: DictConfig) -> float:
    # Deferred: every command starts here (the sweep driver, --help, a mistyped config), and only a
    # job needs torch, Lightning and MLflow (seconds of imports; the driver must not import torch).
    from losslab.train.job import main as run

    return run(cfg)


#: Hydra's flags that take a value: what follows them is that value, never an override or -m
_VALUE_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--info", "-i")
_VALUE_FLAGS += ("--cfg", "-c", "--package", "-p", "--experimental-rerun")


def multirun_first(argv: list[str]) -> list[str]:
    """`-m`/`--multirun` anywhere: moved to the front, where Hydra's argparse accepts it. Its parser
    takes the overrides as one run of positionals, so `loss=hinge -m trainer.max_steps=100` (an
    override after -m, as people extend a command) was refused with argparse's usage."""
    kept: list[str] = []
    multirun = False
    after_flag = False
    for arg in argv:
        if arg in ("-m", "--multirun") and not after_flag:
            multirun = True
            continue
        after_flag = arg in _VALUE_FLAGS
        kept.append(arg)
    return ["-m", *kept] if multirun else kept


def _store_uri(configured: str | None = None) -> str:
    return redact_uri(resolve_tracking_uri(configured or None))


def register_store_resolver() -> None:
    """`${losslab_store:${tracking.uri}}`: the store runs really go to (MLFLOW_TRACKING_URI, else
    tracking.uri, else the checkout's or the current directory's mlflow.db), for `--help`."""
    if not OmegaConf.has_resolver("losslab_store"):
        OmegaConf.register_new_resolver("losslab_store", _store_uri)


def _refuse(exc: Exception) -> None:
    """LossLab's one-paragraph `Error:` for a command-line mistake, exit 2."""
    if not log.handlers:
        log.addHandler(error_handler())
        log.propagate = False
    log.error("Error: %s", exc)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    """`losslab-train [group=option ...] [key=value ...] [-m]`: one run, or a sweep with -m."""
    # like `python -m` and `python train.py`: modules in the current directory import
    # (a user's `loss._target_=my_loss.MyLoss`)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    args = multirun_first(list(sys.argv[1:] if argv is None else argv))
    if "--help" in args or "-h" in args:
        register_store_resolver()  # the help's footer names the store runs go to
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
