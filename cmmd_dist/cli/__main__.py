"""``python -m cmmd_dist.cli``: the ``cmmd-dist`` console script."""

import sys

from cmmd_dist.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
