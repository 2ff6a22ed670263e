"""Train one Hydra-selected model with a Hydra-selected loss: `python train.py loss=hinge [-m]`.

Thin on purpose: the work is in `losslab.task`. Imports happen inside `main` so that
`--help`, `--cfg job` and a bad config answer without loading Lightning and MLflow.
"""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from losslab.task import main as run

    return run(cfg)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt as stop:  # a sweep stopped by a signal: its jobs already ended KILLED
        print(f"interrupted ({stop}); runs in progress were closed as KILLED", file=sys.stderr)
        sys.exit(130)
    except SystemExit as stop:
        if stop.code == 1:  # Hydra refused the command line: say which keys exist
            from losslab.cli import unknown_key_hint

            hint = unknown_key_hint(sys.argv[1:])
            if hint:
                print(hint, file=sys.stderr)
        raise
