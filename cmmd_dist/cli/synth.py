"""``cmmd-dist data synth``'s command line: synthetic data in a dataset's source layout (tests and benchmarks
only), written by :mod:`cmmd_dist.datasets.synth`; one JSON line of what was written."""

from __future__ import annotations

import argparse
import json

from cmmd_dist.datasets.synth import SYNTHS

__all__ = ["add_synth_subcommand", "run_synth_command"]


def run_synth_command(args: argparse.Namespace) -> int:
    """Run a parsed ``data synth``; a user error is raised for the entry point to print as one line."""
    summary = SYNTHS[args.like](args.out, args.rows, args.unlabelled, seed=args.seed, overwrite=args.overwrite)
    print(json.dumps(summary))
    return 0


def add_synth_subcommand(actions: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``synth`` on the ``data`` subcommand's subparsers; the namespace's ``func`` runs it."""
    p = actions.add_parser("synth", help="write synthetic data in a dataset's source layout (tests, benchmarks)")
    p.add_argument("--like", required=True, choices=sorted(SYNTHS), help="whose source layout and sizes to copy")
    p.add_argument("--rows", required=True, type=int, help="labelled rows (Flickr: 25000)")
    p.add_argument("--unlabelled", type=int, default=0, help="unlabelled rows (Flickr: about 1,000,000)")
    p.add_argument("--out", required=True, help="local output folder (created; must be empty unless --overwrite)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model and every row (same seed, same bytes)")
    p.add_argument("--overwrite", action="store_true", help="replace the generator's files in a non-empty --out")
    p.set_defaults(func=run_synth_command)
    return p
