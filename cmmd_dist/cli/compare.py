"""``cmmd-dist compare``'s command line: every ``cmmd-dist tune`` option (built from ``SweepConfig`` by
:mod:`cmmd_dist.cli.tune`) plus ``--kinds`` and ``--seeds``; the comparison itself is
:func:`cmmd_dist.tune.compare.run_compare`."""

from __future__ import annotations

import argparse

from cmmd_dist.cli.tune import build_parser as tune_parser
from cmmd_dist.cli.tune import settings_from_args
from cmmd_dist.tune.compare import KINDS, run_compare

__all__ = ["add_compare_subcommand", "cmd_compare"]


def cmd_compare(args: argparse.Namespace) -> int:
    run_compare(settings_from_args(args), [k.strip() for k in args.kinds.split(",") if k.strip()], args.seeds)
    return 0


def add_compare_subcommand(sub) -> None:
    """``compare`` under the ``cmmd-dist`` parser's subcommands ``sub``: every ``tune`` option plus --kinds, --seeds."""
    p = sub.add_parser("compare", help="CMMD vs the baselines: one sweep per model kind, a table over seeds")
    tune_parser(p)
    p.add_argument("--kinds", default="cmmd,mx_o,vcca,mvae,mmvae",
                   help=f"comma-separated models among {', '.join(KINDS)} (default: cmmd,mx_o,vcca,mvae,mmvae)")
    p.add_argument("--seeds", type=int, default=3, help="retrains of each champion (seeds --seed, --seed + 1, ...)")
    p.set_defaults(func=cmd_compare)
