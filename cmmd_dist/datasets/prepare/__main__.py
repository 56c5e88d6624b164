"""``python -m cmmd_dist.datasets.prepare data prepare ...``: the ``cmmd-dist`` entry itself (same parser and
error handling: a user error is one line and exit 2). An entry point, so of the ``cli`` layer."""

import sys

from cmmd_dist.cli.app import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
