"""LossLab: train, instrument and compare custom loss functions."""

from pathlib import Path

__version__ = "0.1.0"

#: The Hydra configs ship inside the package, so an installed LossLab finds them from any directory.
CONF_DIR = Path(__file__).resolve().parent / "conf"
#: The studies (`experiment/NAME.yaml`, selected with `+experiment=NAME`): a config dir of their own,
#: put on `hydra.searchpath` by conf/train.yaml exactly as a user's own config dir would be.
STUDIES_DIR = Path(__file__).resolve().parent / "studies"
