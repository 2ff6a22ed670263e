"""Train one Hydra-selected model with a Hydra-selected loss: `python train.py loss=hinge [-m]`.

Thin on purpose: the work is in `losslab.task`. Imports happen inside `main` so that
`--help` and `--cfg job` answer without loading torch, Lightning and MLflow.
"""

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from losslab.task import main as run

    return run(cfg)


if __name__ == "__main__":
    main()
