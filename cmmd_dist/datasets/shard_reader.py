"""Reading a prepared dataset: the manifest's spec and row counts checked, shards read and validated.

Every path a manifest names is checked when the manifest is read (``storage.check_manifest_files``) and
each shard is confined to the root (links resolved) before it is opened (``storage.confined``); its size,
sha256 (``verify``) and row count are checked against the manifest entry, then its values
(``shard_layout.check_split``), and a split's ``row`` ids must be unique (folds are a function of them).
Every refusal is a ``StorageError`` naming the file.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cmmd_dist.datasets.shard_layout import check_split, spec_from_dict, table_to_split
from cmmd_dist.datasets.spec import DatasetBundle, DatasetSpec, Split
from cmmd_dist.storage.files import read_bytes, sha256_hex
from cmmd_dist.storage.manifest import check_manifest_files, read_manifest
from cmmd_dist.storage.paths import StorageError, confined, join_uri
from cmmd_dist.storage.s3 import S3Settings

__all__ = ["manifest_spec", "check_manifest_rows", "read_file_table", "read_split", "load_prepared"]


def manifest_spec(manifest: dict) -> DatasetSpec:
    """The spec of a manifest whose row counts are consistent (:func:`check_manifest_rows`)."""
    if "spec" not in manifest:
        raise StorageError(f"{manifest.get('_uri', 'manifest')}: column 'spec' is missing")
    spec = spec_from_dict(manifest["spec"], manifest.get("_uri", "manifest"))
    check_manifest_rows(manifest)
    return spec


def check_manifest_rows(manifest: dict) -> None:
    """From the manifest alone (no shard read): no file listed twice, train / val / test each with rows, and
    each split's ``rows`` equal to the rows of its files; a StorageError naming the manifest otherwise."""
    where = manifest.get("_uri", "manifest")
    seen: set[str] = set()
    per_split: dict[str, int] = {}
    for entry in check_manifest_files(manifest):
        if entry["path"] in seen:
            raise StorageError(f"{where}: file {entry['path']} is listed twice (its rows would count double)")
        seen.add(entry["path"])
        if isinstance(entry.get("rows"), int):
            per_split[entry["split"]] = per_split.get(entry["split"], 0) + entry["rows"]
    rows = manifest.get("rows")
    if isinstance(rows, dict):
        for split, n in rows.items():
            if split in per_split and n != per_split[split]:
                raise StorageError(f"{where}: 'rows' says split {split!r} has {n} rows, its files have {per_split[split]}")
    for split in ("train", "val", "test"):
        if per_split.get(split, 1) == 0 or (isinstance(rows, dict) and rows.get(split, 1) == 0):
            raise StorageError(f"{where}: split {split!r} has no rows")


def _files_of(manifest: dict, split: str, root: str) -> list[dict]:
    # a manifest handed in (not read here) gets the same check: every entry, before any file is opened
    return [f for f in check_manifest_files(manifest, root=root) if f["split"] == split]


def read_file_table(root: str, entry: dict, verify: bool = True, settings: S3Settings | None = None) -> pa.Table:
    """One shard as a table; size and (``verify``) sha256 are checked against the manifest entry, once the
    shard is known to lie inside ``root`` (links resolved): nothing outside is read, its size never printed."""
    uri = confined(root, entry["path"])
    data = read_bytes(uri, settings)
    if "bytes" in entry and len(data) != entry["bytes"]:
        raise StorageError(f"{uri}: truncated or altered shard: {len(data)} bytes, manifest says {entry['bytes']}")
    if verify and entry.get("sha256") and sha256_hex(data) != entry["sha256"]:
        raise StorageError(f"{uri}: checksum mismatch: sha256 {sha256_hex(data)[:16]}..., manifest says {entry['sha256'][:16]}...")
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as err:
        raise StorageError(f"{uri}: not a readable Parquet file (truncated?): {err}") from err
    if "rows" in entry and len(table) != entry["rows"]:
        raise StorageError(f"{uri}: has {len(table)} rows, manifest says {entry['rows']}")
    return table


def read_split(root: str, split: str, manifest: dict | None = None, verify: bool = True,
               settings: S3Settings | None = None) -> Split:
    """All rows of ``split`` under ``root``, every file and value validated."""
    manifest = manifest or read_manifest(root, settings)
    spec = manifest_spec(manifest)
    parts = []
    ids = []
    for entry in _files_of(manifest, split, root):
        uri = join_uri(root, entry["path"])
        table = read_file_table(root, entry, verify, settings)
        part = table_to_split(spec, table, uri)
        check_split(spec, part, uri, unlabeled=split not in ("train", "val", "test"))
        parts.append(part)
        ids.append(table.column("row").to_numpy())
    if not parts:
        raise StorageError(f"{manifest.get('_uri', root)}: no files for split {split!r}")
    unique, counts = np.unique(np.concatenate(ids), return_counts=True)
    if (counts > 1).any():  # folds are a function of the row id: each id must name one row
        raise StorageError(f"{manifest.get('_uri', root)}: split {split!r}: row id {int(unique[counts > 1][0])} "
                           f"is used by {int(counts[counts > 1][0])} rows (column 'row' must be unique)")
    return Split(
        arrays={k: np.concatenate([p.arrays[k] for p in parts]) for k in parts[0].arrays},
        labels=np.concatenate([p.labels for p in parts]),
        groups=None if parts[0].groups is None else np.concatenate([p.groups for p in parts]),
    )


def load_prepared(root: str, verify: bool = True, settings: S3Settings | None = None) -> DatasetBundle:
    """The DatasetBundle stored under ``root`` (train/val/test, other splits in ``extra``)."""
    manifest = read_manifest(root, settings)
    spec = manifest_spec(manifest)
    names = sorted({f["split"] for f in check_manifest_files(manifest, root=root)})
    for required in ("train", "val", "test"):
        if required not in names:
            raise StorageError(f"{manifest['_uri']}: no files for split {required!r}")
    splits = {n: read_split(root, n, manifest, verify, settings) for n in names}
    return DatasetBundle(spec=spec, train=splits.pop("train"), val=splits.pop("val"), test=splits.pop("test"), extra=splits)
