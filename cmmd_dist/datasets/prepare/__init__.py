"""``cmmd-dist data prepare``: a paper dataset from its original files to Parquet shards + manifest.

    cmmd-dist data prepare --dataset mnist2v --source ../shared/data/mnist.pkl.gz --out s3://data/mnist2v
    cmmd-dist data prepare --dataset mnist2v --name fashion-mnist --source ~/fashion --out /data/fashion
    python -m cmmd_dist.datasets.prepare data prepare ...          (the same command)

Here: the preparing functions; the command line is :mod:`cmmd_dist.cli.prepare`, and ``python -m`` runs
this package's ``__main__``, the ``cmmd-dist`` entry itself.

The output URI is a local folder or ``s3://bucket/prefix`` (S3 settings from the AWS environment
variables). The manifest is written last: an interrupted prepare leaves no manifest, and running it
again completes the dataset. The same source and seed give byte-identical shards. A given
``--source`` must exist (no source: the dataset's default). An ``--out`` holding a different dataset
(spec name, source hash, seed or limit) is refused unless ``--overwrite``, which removes its shards.
``--name`` names the dataset written (another dataset in the same format, through the same converter).
A converter whose source can be bigger than memory (flickr) reads it in row blocks, and the shards are
written as the blocks come: peak memory does not grow with the row count.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from cmmd_dist.datasets.converters import CONVERTER_SPECS, CONVERTERS, hash_inputs
from cmmd_dist.datasets.shard_replace import check_out_folders, check_replaceable
from cmmd_dist.datasets.shards import DEFAULT_ROWS_PER_FILE, write_bundle, write_stream
from cmmd_dist.datasets.spec import DATASET_NAME, DatasetSpec
from cmmd_dist.errors import UserError
from cmmd_dist.storage import S3Settings, check_bucket

__all__ = ["prepare", "check_dataset_name"]


def check_dataset_name(name: str, option: str = "--name") -> str:
    if not DATASET_NAME.match(name):
        raise UserError(f"{option} {name!r}: a dataset name is letters, digits, '.', '_' or '-' (at most 64), "
                        "starting with a letter or digit")
    return name


def prepare(
    dataset: str,
    source: str | Path | None,
    out_uri: str,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    seed: int = 0,
    limit: int | None = None,
    settings: S3Settings | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Convert ``dataset`` from ``source`` and write it under ``out_uri`` as dataset ``name`` (default:
    ``dataset``); returns the manifest. ``limit`` keeps the first rows of each split (quick runs and tests)."""
    if dataset not in CONVERTERS:
        raise UserError(f"--dataset {dataset!r}: unknown; data prepare knows {sorted(CONVERTERS)}")
    if rows_per_file < 1:
        raise UserError(f"--rows-per-file must be >= 1, got {rows_per_file}")
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}")
    name = check_dataset_name(name) if name is not None else CONVERTER_SPECS[dataset].name
    # refuse a different dataset before the conversion (minutes for a big one); the source hash is known after it
    check_bucket(out_uri, settings)
    check_replaceable(out_uri, {"name": name, "seed": seed, "limit": limit}, overwrite, settings)
    check_out_folders(out_uri, ("train", "val", "test"))  # a split folder linked outside --out: before the conversion
    converted = CONVERTERS[dataset](source, seed, limit)
    source_hash = hash_inputs(converted.inputs, converted.source_note)
    extra = {"seed": seed, "limit": limit, "source_files": sorted(p.name for p in converted.inputs)}
    kwargs = dict(rows_per_file=rows_per_file, source_sha256=source_hash, extra=extra, settings=settings,
                  overwrite=overwrite)
    if converted.streamed:  # a big source: read block by block while the shards are written, each block checked
        stream = converted.stream
        return write_stream(dataclasses.replace(stream, spec=_renamed(stream.spec, name)), out_uri, **kwargs)
    # in memory: every value is checked before anything under out_uri is touched
    bundle = converted.bundle
    return write_bundle(dataclasses.replace(bundle, spec=_renamed(bundle.spec, name)), out_uri, **kwargs)


def _renamed(spec: DatasetSpec, name: str) -> DatasetSpec:
    return spec if spec.name == name else dataclasses.replace(spec, name=name)
