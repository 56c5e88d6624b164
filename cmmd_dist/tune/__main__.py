"""``python -m cmmd_dist.tune``: the sweep (the same options as ``cmmd-dist tune``; see ``cmmd_dist.tune.options``)."""

import sys

from cmmd_dist.tune.options import main

if __name__ == "__main__":
    sys.exit(main())
