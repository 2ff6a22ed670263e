"""`python train.py ARGS` is `losslab-train ARGS` from a checkout: see `losslab.__main__`."""

from losslab.__main__ import main

if __name__ == "__main__":
    main()
