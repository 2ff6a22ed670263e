"""`python train.py ARGS` is `losslab-train ARGS` from a checkout: see `losslab.cli.train`."""

from losslab.cli import train

if __name__ == "__main__":
    train()
