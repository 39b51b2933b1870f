"""`python -m m2f_edge <command>`: the same as the m2f-edge command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
