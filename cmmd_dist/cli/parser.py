"""The argparse parser every command line here is built on: an option error is one line and exit 2."""

from __future__ import annotations

import argparse
import sys

from cmmd_dist.errors import EXIT_USER_ERROR, one_line

__all__ = ["OneLineArgumentParser"]


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit 2, like every other user error.

    Subparsers made with ``add_subparsers().add_parser`` inherit the class, so one top-level
    parser of this class makes every subcommand's option errors one line too."""

    def error(self, message: str):  # argparse's contract: never returns
        print(f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
