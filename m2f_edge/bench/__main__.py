"""``python -m m2f_edge.bench`` = ``m2f-edge-bench``."""

import sys

from .cli import main

sys.exit(main())
