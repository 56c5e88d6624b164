"""A dataset as Parquet shards plus a manifest: the table layout, the writer and the whole-split reader.

Layout under a root URI::

    manifest.json                 written LAST: format_version, spec, schema, rows, files (sha256), source hash
    train/part-00000.parquet      one row per example, at most ``rows_per_file`` rows per file
    val/... test/... unlabeled/...

Columns: one ``fixed_size_list<float32>[prod(shape)]`` per modality, ``label`` (int64, or
``fixed_size_list<float32>[C]`` multi-hot), ``split`` (string), the spec's group column (int64) if any,
and ``row`` (int64, index within the split). Every file is one row group, so a reader turns a column
into a numpy array without copying. The bytes depend only on the data and the pyarrow version.

Every path a manifest names is checked when the manifest is read (``storage.check_manifest_files``):
a relative path inside the root, never ``..``, an absolute path or another URI, and, links resolved, still
inside the root (``storage.confined``, again before each file is opened). A writer replaces only the same
dataset (spec name, source hash, seed, limit) unless told to overwrite. Before it deletes or writes
anything it checks that its split folders resolve inside ``out_uri`` and that every file it would delete
is its own (``storage.own_file``: inside, a regular file): the files the old manifest lists, and the
stale files of its naming (``<split>/part-NNNNN.parquet``, ``*.tmp-<hex>``) that a killed prepare left
and no manifest lists. Then it removes them all, so no stale shard is left behind.

One writer, :func:`write_stream`, takes a :class:`DatasetStream` (each split a sequence of row blocks) and
writes each file as soon as it has ``rows_per_file`` rows, so it holds one block and one file's rows at a
time, whatever the row count; :func:`write_bundle` hands it an in-memory bundle. File boundaries depend
on ``rows_per_file`` only, never on the block sizes: the same rows give the same bytes.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from cmmd_dist.datasets.spec import (
    DATASET_NAME,
    DatasetBundle,
    DatasetSpec,
    DatasetStream,
    ModalitySpec,
    Split,
    concat_splits,
    empty_split,
)
from cmmd_dist.errors import UserError, one_line
from cmmd_dist.storage import (
    FORMAT_VERSION,
    MANIFEST_NAMES,
    S3Settings,
    StorageError,
    check_bucket,
    check_manifest_files,
    confined,
    delete_file,
    find_manifest,
    is_s3_uri,
    join_uri,
    own_file,
    read_bytes,
    read_manifest,
    remove_manifest,
    resolve,
    sha256_hex,
    write_bytes,
    write_manifest,
)

__all__ = [
    "DEFAULT_ROWS_PER_FILE",
    "spec_to_dict",
    "spec_from_dict",
    "arrow_schema",
    "check_split",
    "split_to_table",
    "table_to_split",
    "write_bundle",
    "write_stream",
    "dataset_identity",
    "check_replaceable",
    "check_out_folders",
    "read_split",
    "load_prepared",
    "read_file_table",
    "manifest_spec",
]

DEFAULT_ROWS_PER_FILE = 10_000
# the files a writer names (and a killed one leaves): part-00000.parquet, its temporary part-00000.parquet.tmp-<hex>
_OWN_SHARD = re.compile(r"part-\d{5,}\.parquet(\.tmp-[0-9a-f]{32})?")
_OWN_TOP = re.compile(r"manifest\.json\.tmp-[0-9a-f]{32}")


def spec_to_dict(spec: DatasetSpec) -> dict:
    return {
        "name": spec.name,
        "modalities": [{"name": m.name, "shape": list(m.shape), "likelihood": m.likelihood} for m in spec.modalities],
        "label_kind": spec.label_kind,
        "num_classes": spec.num_classes,
        "scenarios": {k: list(v) for k, v in spec.scenarios.items()},
        "default_scenario": spec.default_scenario,
        "group_column": spec.group_column,
    }


def spec_from_dict(d: dict, where: str = "manifest") -> DatasetSpec:
    name = d.get("name") if isinstance(d, dict) else None
    if not isinstance(name, str) or not DATASET_NAME.match(name):  # it names run folders and registered models
        raise StorageError(f"{where}: column 'spec.name' {name!r} is not a dataset name "
                           "(letters, digits, '.', '_' or '-', at most 64, starting with a letter or digit)")
    try:
        return DatasetSpec(
            name=str(d["name"]),
            modalities=tuple(ModalitySpec(m["name"], tuple(int(s) for s in m["shape"]), m["likelihood"]) for m in d["modalities"]),
            label_kind=d["label_kind"],
            num_classes=int(d["num_classes"]),
            scenarios={k: tuple(v) for k, v in d["scenarios"].items()},
            default_scenario=d["default_scenario"],
            group_column=d.get("group_column"),
        )
    except (KeyError, TypeError) as err:
        raise StorageError(f"{where}: column 'spec' is incomplete: missing or malformed {err}") from err
    except ValueError as err:  # the spec's own checks: an unknown likelihood or label kind
        raise StorageError(f"{where}: column 'spec': {one_line(err)}") from err


def arrow_schema(spec: DatasetSpec) -> pa.Schema:
    fields = [pa.field(m.name, pa.list_(pa.float32(), m.size), nullable=False) for m in spec.modalities]
    label = pa.int64() if spec.label_kind == "classes" else pa.list_(pa.float32(), spec.num_classes)
    fields += [pa.field("label", label, nullable=False), pa.field("split", pa.string(), nullable=False)]
    if spec.group_column:
        fields.append(pa.field(spec.group_column, pa.int64(), nullable=False))
    fields.append(pa.field("row", pa.int64(), nullable=False))
    return pa.schema(fields)


def check_split(spec: DatasetSpec, split: Split, where: str, unlabeled: bool = False, first_row: int = 0) -> None:
    """Raise a StorageError naming ``where`` and the column for a wrong shape, NaN/inf or a bad label.

    ``first_row``: the index within its split of the first row of ``split`` (a block), for the row named."""
    n = len(split)
    for m in spec.modalities:
        if m.name not in split.arrays:
            raise StorageError(f"{where}: column {m.name!r} is missing")
        arr = split.arrays[m.name]
        if tuple(arr.shape[1:]) != m.shape or arr.shape[0] != n:
            raise StorageError(f"{where}: column {m.name!r} has shape {tuple(arr.shape)}, expected ({n}, {', '.join(map(str, m.shape))})")
        if not np.isfinite(arr).all():
            bad = int(np.flatnonzero(~np.isfinite(arr.reshape(n, -1)).all(axis=1))[0])
            raise StorageError(f"{where}: column {m.name!r} has NaN/inf values (first at row {first_row + bad})")
    y = split.labels
    if spec.label_kind == "classes":
        if y.shape != (n,):
            raise StorageError(f"{where}: column 'label' has shape {y.shape}, expected ({n},)")
        if n and (y.min() < 0 or y.max() >= spec.num_classes):
            raise StorageError(f"{where}: column 'label' has values outside [0, {spec.num_classes}) (min {y.min()}, max {y.max()})")
    else:
        if y.shape != (n, spec.num_classes):
            raise StorageError(f"{where}: column 'label' has shape {y.shape}, expected ({n}, {spec.num_classes})")
        if n and not np.isin(y, (0.0, 1.0)).all():
            raise StorageError(f"{where}: column 'label' must be multi-hot 0/1 over {spec.num_classes} classes")
    if spec.group_column and split.groups is None and not unlabeled:
        raise StorageError(f"{where}: column {spec.group_column!r} (group) is missing")


def _fixed_list(arr: np.ndarray, size: int) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(arr, dtype=np.float32).reshape(-1)), size)


def split_to_table(spec: DatasetSpec, split: Split, name: str, start: int = 0, stop: int | None = None,
                   first_row: int = 0) -> pa.Table:
    """Rows ``start:stop`` of ``split`` in the shard layout; ``row`` counts from ``first_row + start``."""
    stop = len(split) if stop is None else stop
    cols = [_fixed_list(split.arrays[m.name][start:stop], m.size) for m in spec.modalities]
    y = split.labels[start:stop]
    cols.append(pa.array(y.astype(np.int64)) if spec.label_kind == "classes" else _fixed_list(y, spec.num_classes))
    cols.append(pa.array([name] * (stop - start), pa.string()))
    if spec.group_column:
        g = split.groups[start:stop] if split.groups is not None else np.full(stop - start, -1)
        cols.append(pa.array(np.asarray(g, dtype=np.int64)))
    cols.append(pa.array(np.arange(first_row + start, first_row + stop, dtype=np.int64)))
    return pa.Table.from_arrays(cols, schema=arrow_schema(spec))


def _column_array(table: pa.Table, name: str, width: int) -> np.ndarray:
    col = table.column(name)
    arr = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()
    return arr.flatten().to_numpy(zero_copy_only=False).reshape(len(table), width)


def table_to_split(spec: DatasetSpec, table: pa.Table, where: str) -> Split:
    """A Split from a table of the shard layout; wrong or missing columns raise naming ``where``."""
    expected = arrow_schema(spec)
    for field in expected:
        if field.name not in table.column_names:
            raise StorageError(f"{where}: column {field.name!r} is missing")
        got = table.schema.field(field.name).type
        if got != field.type:
            raise StorageError(f"{where}: column {field.name!r} has type {got}, expected {field.type} (wrong modality shape?)")
    n = len(table)
    arrays = {m.name: _column_array(table, m.name, m.size).reshape((n, *m.shape)) for m in spec.modalities}
    if spec.label_kind == "classes":
        labels = table.column("label").to_numpy().astype(np.int64, copy=False)
    else:
        labels = _column_array(table, "label", spec.num_classes)
    groups = table.column(spec.group_column).to_numpy() if spec.group_column else None
    return Split(arrays=arrays, labels=labels, groups=groups)


def dataset_identity(manifest: dict) -> dict:
    """What makes two prepared datasets the same one: spec name, source hash, seed and limit."""
    spec = manifest.get("spec")
    return {"name": spec.get("name") if isinstance(spec, dict) else None, "source_sha256": manifest.get("source_sha256"),
            "seed": manifest.get("seed"), "limit": manifest.get("limit")}


def check_replaceable(out_uri: str, identity: dict, overwrite: bool = False,
                      settings: S3Settings | None = None) -> dict | None:
    """The manifest of the dataset under ``out_uri`` (None if none) once it may be replaced by a dataset
    of ``identity`` (keys of :func:`dataset_identity`; absent keys are not compared).

    The same dataset may always be written again (that completes an interrupted prepare); a different
    one, or a manifest that cannot be read, only with ``overwrite``."""
    if find_manifest(out_uri, settings) is None:
        return None
    try:
        old = read_manifest(out_uri, settings)
    except StorageError as err:
        if not overwrite:
            raise StorageError(f"{out_uri}: holds a manifest that cannot be read ({one_line(err)}); "
                               "pass --overwrite to replace it, or choose another --out") from err
        return None  # its files are unknown (or unsafe to touch): only the manifest goes
    there = dataset_identity(old)
    diff = [f"{k} {there[k]!r} there, {v!r} now" for k, v in identity.items() if there.get(k) != v]
    if diff and not overwrite:
        raise StorageError(f"{out_uri}: holds a different dataset ({'; '.join(diff)}); "
                           "pass --overwrite to replace it, or choose another --out")
    return old


def _listed(out_uri: str, folder: str, settings: S3Settings | None) -> list[str]:
    """Names of the entries directly in ``folder`` under ``out_uri`` (none when it is absent, or is a local
    folder that resolves outside ``out_uri``: nothing there is this writer's)."""
    uri = join_uri(out_uri, folder) if folder else out_uri
    if not is_s3_uri(uri):
        if not os.path.isdir(uri):
            return []
        if folder:
            try:
                confined(out_uri, folder, inside="--out")
            except StorageError:  # a folder linked outside: nothing there is this writer's
                return []
        return sorted(os.listdir(uri))
    fs, path = resolve(uri, settings)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as err:
        raise StorageError(f"{uri}: cannot list: {one_line(err)}") from err
    return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.File)


def check_out_folders(out_uri: str, splits: Iterable[str]) -> None:
    """Refuse an ``out_uri`` whose split folders (or manifest) resolve outside it, before anything is written."""
    for name in (*splits, MANIFEST_NAMES[0]):
        confined(out_uri, name, f"{join_uri(out_uri, name)} (where data prepare writes)", inside="--out")


def _doomed_files(out_uri: str, old: dict | None, splits: Iterable[str], settings: S3Settings | None) -> list[str]:
    """Every file a writer into ``out_uri`` is to delete, each proven its own (``storage.own_file``) before
    any is deleted: the files ``old`` (the manifest replaced) lists, then the stale ones of its naming that
    no manifest lists, in the split folders written now or listed by ``old``. The split folders to be
    written must resolve inside ``out_uri`` (a link that leaves is refused before anything is touched)."""
    check_out_folders(out_uri, splits)
    listed = check_manifest_files(old, root=out_uri) if old and "files" in old else []
    rels = [e["path"] for e in listed]
    folders = dict.fromkeys([*splits, *(posixpath.dirname(p) for p in rels if "/" in p)])
    stale = [n for n in _listed(out_uri, "", settings) if _OWN_TOP.fullmatch(n)]
    for folder in folders:
        stale += [f"{folder}/{n}" for n in _listed(out_uri, folder, settings) if _OWN_SHARD.fullmatch(n)]
    doomed = []
    for rel in dict.fromkeys([*rels, *stale]):
        uri = own_file(out_uri, rel)
        if uri is not None:
            doomed.append(uri)
    return doomed


def _remove_dataset(out_uri: str, doomed: list[str], settings: S3Settings | None) -> None:
    """Unfinish the dataset under ``out_uri`` (manifest first), then delete ``doomed`` (see :func:`_doomed_files`)."""
    remove_manifest(out_uri, settings)
    for name in MANIFEST_NAMES[1:]:  # a hand-written YAML manifest would otherwise outlive its dataset
        delete_file(confined(out_uri, name), settings)
    for uri in doomed:
        delete_file(uri, settings)


def _remove_empty_folders(out_uri: str, rel_paths: list[str]) -> None:
    """Local folders of replaced shards left empty (S3 has no folders); a folder with anything in it stays."""
    if is_s3_uri(out_uri):
        return
    for folder in sorted({posixpath.dirname(p) for p in rel_paths if "/" in p}, key=len, reverse=True):
        try:
            os.rmdir(join_uri(out_uri, folder))
        except OSError:
            pass


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
    _remove_dataset(out_uri, _doomed_files(out_uri, old, stream.splits, settings), settings)
    files, rows = [], {}
    try:
        for name in stream.splits:
            rows[name] = _write_split(spec, name, stream.blocks(name), out_uri, rows_per_file, settings, files, validate)
    except UserError:
        for entry in files:  # nothing half-written survives a user error (an interrupt leaves them: no manifest)
            delete_file(confined(out_uri, entry["path"], inside="--out"), settings)
        _remove_empty_folders(out_uri, [e["path"] for e in files])
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
        _remove_empty_folders(out_uri, [e["path"] for e in old.get("files", [])])
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
