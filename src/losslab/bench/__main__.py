"""`python -m losslab.bench`: see losslab.bench.cli."""

import sys

from .cli import main

sys.exit(main())
