"""`python -m losslab ARGS` is `losslab-train ARGS`."""

from losslab.cli import train

if __name__ == "__main__":
    train()
