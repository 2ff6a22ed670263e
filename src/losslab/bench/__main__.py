"""`python -m losslab.bench`: see losslab.bench.main."""

import sys

from losslab.bench.main import main

sys.exit(main())
