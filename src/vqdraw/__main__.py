"""``python -m vqdraw``: the `vqdraw` command (same as ``python -m vqdraw.cli``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
