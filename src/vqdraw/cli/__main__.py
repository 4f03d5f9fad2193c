"""``python -m vqdraw.cli``: the `vqdraw` command, runnable under torchrun

    torchrun --standalone --nproc_per_node=4 -m vqdraw.cli train --preset cifar10 --run runs/c10
"""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
