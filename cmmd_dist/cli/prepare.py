"""``cmmd-dist data``'s command line: ``data prepare`` (:func:`cmmd_dist.datasets.prepare.prepare`, one JSON
line of what was written) and ``data synth`` (:mod:`cmmd_dist.cli.synth`)."""

from __future__ import annotations

import argparse
import json

from cmmd_dist.cli.synth import add_synth_subcommand
from cmmd_dist.datasets.converters import CONVERTERS
from cmmd_dist.datasets.prepare import prepare
from cmmd_dist.datasets.shards import DEFAULT_ROWS_PER_FILE

__all__ = ["add_data_subcommand", "run_data_command"]


def run_data_command(args: argparse.Namespace) -> int:
    """Run a parsed ``data prepare``. Errors are raised: the entry point (``errors.run_cli``) prints a
    user error as one line and exits 2."""
    manifest = prepare(args.dataset, args.source, args.out, rows_per_file=args.rows_per_file, seed=args.seed,
                       limit=args.limit, name=args.name, overwrite=args.overwrite)
    print(json.dumps({"out": args.out, "dataset": manifest["spec"]["name"], "rows": manifest["rows"],
                      "files": len(manifest["files"])}))
    return 0


def add_data_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``data prepare`` and ``data synth`` on ``subparsers``; the parsed namespace's ``func`` runs it."""
    data = subparsers.add_parser("data", help="prepare datasets as Parquet shards; synthesise test-shaped sources")
    actions = data.add_subparsers(dest="data_command", required=True)
    p = actions.add_parser("prepare", help="convert a dataset's original files to Parquet shards + manifest")
    p.add_argument("--dataset", required=True, choices=sorted(CONVERTERS), help="converter (format of the source files)")
    p.add_argument("--source", default=None,
                   help="source file or folder (see each converter's docstring); must exist; none: the dataset's default")
    p.add_argument("--out", required=True, help="output folder or s3://bucket/prefix")
    p.add_argument("--name", default=None, help="name of the dataset written (default: --dataset), e.g. fashion-mnist")
    p.add_argument("--overwrite", action="store_true", help="replace a different dataset already under --out")
    p.add_argument("--rows-per-file", type=int, default=DEFAULT_ROWS_PER_FILE, help="rows per Parquet file")
    p.add_argument("--seed", type=int, default=0, help="seed of pairing, rotations, noise and splits")
    p.add_argument("--limit", type=int, default=None, help="keep only the first rows of each split")
    p.set_defaults(func=run_data_command)
    add_synth_subcommand(actions)
    return data
