"""``python -m cmmd_dist.train [--dataset NAME ...]``: the same as ``cmmd-dist train`` (one-line user errors, exit 2)."""

import sys

from cmmd_dist.cli.app import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
