"""``python -m cmmd_dist.tune``: the sweep (the same options as ``cmmd-dist tune``; see ``cmmd_dist.cli.tune``)."""

import sys

from cmmd_dist.cli.tune import main

if __name__ == "__main__":
    sys.exit(main())
