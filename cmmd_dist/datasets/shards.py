"""A dataset as Parquet shards plus a manifest: the writer, and the reader's entry points re-exported.

Layout under a root URI::

    manifest.json                 written LAST: format_version, spec, schema, rows, files (sha256), source hash
    train/part-00000.parquet      one row per example, at most ``rows_per_file`` rows per file
    val/... test/... unlabeled/...

The columns are :mod:`cmmd_dist.datasets.shard_layout`'s; every file is one row group, so a reader turns a
column into a numpy array without copying. The bytes depend only on the data and the pyarrow version.
Reading (paths confined, sizes, checksums and values checked) is :mod:`cmmd_dist.datasets.shard_reader`,
whose :func:`manifest_spec`, :func:`read_split` and :func:`load_prepared` are re-exported here for their many
callers; what a writer may replace and delete under ``out_uri`` is :mod:`cmmd_dist.datasets.shard_replace`.

One writer, :func:`write_stream`, takes a :class:`DatasetStream` (each split a sequence of row blocks) and
writes each file as soon as it has ``rows_per_file`` rows, so it holds one block and one file's rows at a
time, whatever the row count; :func:`write_bundle` hands it an in-memory bundle. File boundaries depend
on ``rows_per_file`` only, never on the block sizes: the same rows give the same bytes. A writer replaces
only the same dataset unless told to overwrite; it removes the old manifest FIRST, then the old and stale
shards it proved its own, so an interrupted run leaves a dataset no reader accepts.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import pyarrow.parquet as pq

from cmmd_dist.datasets.shard_layout import arrow_schema, check_split, spec_to_dict, split_to_table
from cmmd_dist.datasets.shard_reader import load_prepared, manifest_spec, read_split
from cmmd_dist.datasets.shard_replace import check_replaceable, doomed_files, remove_dataset, remove_empty_folders
from cmmd_dist.datasets.spec import DatasetBundle, DatasetSpec, DatasetStream, Split, concat_splits, empty_split
from cmmd_dist.errors import UserError
from cmmd_dist.storage.files import delete_file, sha256_hex, write_bytes
from cmmd_dist.storage.manifest import FORMAT_VERSION, write_manifest
from cmmd_dist.storage.paths import confined
from cmmd_dist.storage.s3 import S3Settings, check_bucket

__all__ = [
    "DEFAULT_ROWS_PER_FILE",
    "write_bundle",
    "write_stream",
    # re-exported from shard_reader for the many callers that read through this module
    "manifest_spec",
    "read_split",
    "load_prepared",
]

DEFAULT_ROWS_PER_FILE = 10_000


def _rows_of(split: Split, start: int, stop: int) -> Split:
    return Split(arrays={k: v[start:stop] for k, v in split.arrays.items()}, labels=split.labels[start:stop],
                 groups=None if split.groups is None else split.groups[start:stop])


def _take_rows(parts: list[Split], n: int) -> tuple[Split, list[Split]]:
    """The first ``n`` rows of ``parts`` as one Split (views when they lie in one part) and the parts left."""
    head, rest, need = [], [], n
    for part in parts:
        if need >= len(part):
            head.append(part)
            need -= len(part)
        elif need > 0:
            head.append(_rows_of(part, 0, need))
            rest.append(_rows_of(part, need, len(part)))
            need = 0
        else:
            rest.append(part)
    return concat_splits(head), rest


def _write_file(spec: DatasetSpec, part: Split, name: str, index: int, first_row: int, out_uri: str,
                settings: S3Settings | None) -> dict:
    buf = io.BytesIO()
    pq.write_table(split_to_table(spec, part, name, first_row=first_row), buf, row_group_size=max(len(part), 1),
                   compression="snappy", use_dictionary=["split"], write_statistics=["label", "row"])
    rel = f"{name}/part-{index:05d}.parquet"
    with buf.getbuffer() as data:  # the file's bytes, not a copy of them (a file can be hundreds of MB)
        write_bytes(confined(out_uri, rel, inside="--out"), data, settings)
        return {"path": rel, "split": name, "rows": len(part), "bytes": data.nbytes, "sha256": sha256_hex(data)}


def _write_split(spec: DatasetSpec, name: str, blocks: Iterable[Split], out_uri: str, rows_per_file: int,
                 settings: S3Settings | None, files: list[dict], validate: bool) -> int:
    """Write the blocks of split ``name`` as files of ``rows_per_file`` rows (the last one shorter; one empty
    file for an empty split), appending their entries to ``files``; returns the split's row count."""
    unlabeled = name not in ("train", "val", "test")
    pending: list[Split] = []
    pending_rows = written = index = 0
    for block in blocks:
        if validate:
            check_split(spec, block, f"{spec.name} split {name!r}", unlabeled=unlabeled, first_row=written + pending_rows)
        pending.append(block)
        pending_rows += len(block)
        while pending_rows >= rows_per_file:
            part, pending = _take_rows(pending, rows_per_file)
            files.append(_write_file(spec, part, name, index, written, out_uri, settings))
            index, written, pending_rows = index + 1, written + len(part), pending_rows - len(part)
            del part  # the file's rows go before the next block comes
    if pending_rows or index == 0:
        part = concat_splits(pending) if pending else empty_split(spec)
        files.append(_write_file(spec, part, name, index, written, out_uri, settings))
        written += len(part)
    return written


def write_stream(
    stream: DatasetStream,
    out_uri: str,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    source_sha256: str | None = None,
    extra: dict | None = None,
    settings: S3Settings | None = None,
    overwrite: bool = False,
    validate: bool = True,
) -> dict:
    """Write every split of ``stream`` as shards under ``out_uri`` block by block, then the manifest; returns
    the manifest.

    Each block is checked (``check_split``) before its rows are written (``validate=False``: the caller
    checked them). A different dataset under ``out_uri`` is refused unless ``overwrite`` (see
    :func:`check_replaceable`). The existing manifest is removed FIRST, then the old shards, so an
    interrupted run leaves a dataset no reader accepts and a finished one leaves no stale shard. A user
    error met half-way (a bad block, an unreadable source) removes the shards already written."""
    if rows_per_file < 1:
        raise UserError(f"--rows-per-file must be >= 1, got {rows_per_file}")
    spec = stream.spec
    check_bucket(out_uri, settings)
    extra = extra or {}
    identity = {"name": spec.name, "source_sha256": source_sha256, "seed": extra.get("seed"), "limit": extra.get("limit")}
    old = check_replaceable(out_uri, identity, overwrite, settings)
    remove_dataset(out_uri, doomed_files(out_uri, old, stream.splits, settings), settings)
    files, rows = [], {}
    try:
        for name in stream.splits:
            rows[name] = _write_split(spec, name, stream.blocks(name), out_uri, rows_per_file, settings, files, validate)
    except UserError:
        for entry in files:  # nothing half-written survives a user error (an interrupt leaves them: no manifest)
            delete_file(confined(out_uri, entry["path"], inside="--out"), settings)
        remove_empty_folders(out_uri, [e["path"] for e in files])
        raise
    manifest = {
        "format_version": FORMAT_VERSION,
        "spec": spec_to_dict(spec),
        "schema": [{"name": f.name, "type": str(f.type)} for f in arrow_schema(spec)],
        "rows": rows,
        "files": files,
        "source_sha256": source_sha256,
        **extra,
    }
    if old is not None:
        remove_empty_folders(out_uri, [e["path"] for e in old.get("files", [])])
    write_manifest(out_uri, manifest, settings)
    return manifest


def write_bundle(
    bundle: DatasetBundle,
    out_uri: str,
    rows_per_file: int = DEFAULT_ROWS_PER_FILE,
    source_sha256: str | None = None,
    extra: dict | None = None,
    settings: S3Settings | None = None,
    overwrite: bool = False,
) -> dict:
    """Write an in-memory ``bundle`` through :func:`write_stream`; every split is checked first, so a bad
    value is refused before anything under ``out_uri`` is touched."""
    if rows_per_file < 1:
        raise UserError(f"--rows-per-file must be >= 1, got {rows_per_file}")
    for name, split in bundle.splits().items():
        check_split(bundle.spec, split, f"{bundle.spec.name} split {name!r}", unlabeled=name not in ("train", "val", "test"))
    return write_stream(DatasetStream.of_bundle(bundle), out_uri, rows_per_file, source_sha256, extra, settings,
                        overwrite, validate=False)
