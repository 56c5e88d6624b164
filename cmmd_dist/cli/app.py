"""The ``cmmd-dist`` console script: one entry, subcommands.

Every command runs through ``errors.run_cli``: a user error is one line ``cmmd-dist: error: ...`` and
exit 2; ``--debug`` (anywhere on the line) or ``CMMD_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from cmmd_dist.cli.parser import OneLineArgumentParser
from cmmd_dist.cli.train import add_train_arguments, cmd_train, default_config_path, train_overrides
from cmmd_dist.errors import run_cli, strip_debug

__all__ = ["main", "build_parser", "default_config_path", "train_overrides", "cmd_train"]


def cmd_tune(args: argparse.Namespace) -> int:
    from cmmd_dist.cli.tune import run_from_args

    return run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="cmmd-dist", description="Train CMMD and search its hyperparameters.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (also CMMD_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train CMMD on one dataset")
    add_train_arguments(t)
    t.set_defaults(func=cmd_train)
    from cmmd_dist.cli.compare import add_compare_subcommand
    from cmmd_dist.cli.models import add_models_subcommand
    from cmmd_dist.cli.prepare import add_data_subcommand

    add_data_subcommand(sub)
    add_models_subcommand(sub)
    s = sub.add_parser("tune", help="hyperparameter sweep (Ray Tune + Optuna + ASHA, k-fold CV)")
    from cmmd_dist.cli.tune import build_parser as tune_parser

    tune_parser(s)
    s.set_defaults(func=cmd_tune)
    add_compare_subcommand(sub)
    return parser


def main(argv: list[str] | None = None, prog: str = "cmmd-dist") -> int:
    """Parse ``argv`` and run its command; user errors are one line and exit 2 (see ``errors.run_cli``)."""
    argv = sys.argv[1:] if argv is None else list(argv)

    def run() -> int:
        args = build_parser().parse_args(strip_debug(argv))
        return args.func(args)

    return run_cli(run, prog=prog, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
