"""``cmmd-dist data prepare``: a paper dataset from its original files to Parquet shards + manifest.

    cmmd-dist data prepare --dataset mnist2v --source ../shared/data/mnist.pkl.gz --out s3://data/mnist2v

The output URI is a local folder or ``s3://bucket/prefix`` (S3 settings from the AWS environment
variables). The manifest is written last: an interrupted prepare leaves no manifest, and running it
again completes the dataset. The same source and seed give byte-identical shards.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cmmd_dist.datasets.converters import CONVERTERS, hash_inputs
from cmmd_dist.datasets.shards import DEFAULT_ROWS_PER_FILE, write_bundle
from cmmd_dist.storage import S3Settings, StorageError

__all__ = ["prepare", "add_data_subcommand", "run_data_command"]


def prepare(
    dataset: str,
    source: str | Path | None,
    out_uri: str,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    seed: int = 0,
    limit: int | None = None,
    settings: S3Settings | None = None,
) -> dict:
    """Convert ``dataset`` from ``source`` and write it under ``out_uri``; returns the manifest.

    ``limit`` keeps the first rows of each split (quick runs and tests)."""
    if dataset not in CONVERTERS:
        raise KeyError(f"unknown dataset {dataset!r}; data prepare knows {sorted(CONVERTERS)}")
    converted = CONVERTERS[dataset](source, seed, limit)
    source_hash = hash_inputs(converted.inputs, converted.source_note)
    extra = {"seed": seed, "limit": limit, "source_files": sorted(p.name for p in converted.inputs)}
    return write_bundle(converted.bundle, out_uri, rows_per_file=rows_per_file, source_sha256=source_hash,
                        extra=extra, settings=settings)


def run_data_command(args: argparse.Namespace) -> int:
    """Run a parsed ``data`` subcommand; errors in the data print one clear line and exit 2."""
    try:
        manifest = prepare(args.dataset, args.source, args.out, rows_per_file=args.rows_per_file,
                           seed=args.seed, limit=args.limit)
    except (StorageError, FileNotFoundError, KeyError) as err:
        print(f"data prepare failed: {err}")
        return 2
    print(json.dumps({"out": args.out, "rows": manifest["rows"], "files": len(manifest["files"])}))
    return 0


def add_data_subcommand(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``data prepare`` on ``subparsers``; the parsed namespace's ``func`` runs it."""
    data = subparsers.add_parser("data", help="prepare datasets as Parquet shards")
    actions = data.add_subparsers(dest="data_command", required=True)
    p = actions.add_parser("prepare", help="convert a dataset's original files to Parquet shards + manifest")
    p.add_argument("--dataset", required=True, choices=sorted(CONVERTERS), help="dataset to convert")
    p.add_argument("--source", default=None, help="source file or folder (see each converter's docstring)")
    p.add_argument("--out", required=True, help="output folder or s3://bucket/prefix")
    p.add_argument("--rows-per-file", type=int, default=DEFAULT_ROWS_PER_FILE, help="rows per Parquet file")
    p.add_argument("--seed", type=int, default=0, help="seed of pairing, rotations, noise and splits")
    p.add_argument("--limit", type=int, default=None, help="keep only the first rows of each split")
    p.set_defaults(func=run_data_command)
    return data


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m cmmd_dist.datasets.prepare")
    add_data_subcommand(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args()
    raise SystemExit(ns.func(ns))
