"""The shard layout: a DatasetSpec as a manifest dict and as an Arrow schema, a Split as a table and back.

Columns: one ``fixed_size_list<float32>[prod(shape)]`` per modality, ``label`` (int64, or
``fixed_size_list<float32>[C]`` multi-hot), ``split`` (string), the spec's group column (int64) if any,
and ``row`` (int64, index within the split). A column of a one-chunk table becomes a numpy array without
copying. :func:`check_split` refuses wrong shapes, NaN/inf and bad labels; every refusal is a
``StorageError`` naming the place and the column. No file is read or written here.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cmmd_dist.datasets.spec import DATASET_NAME, DatasetSpec, ModalitySpec, Split
from cmmd_dist.errors import one_line
from cmmd_dist.storage.paths import StorageError

__all__ = ["spec_to_dict", "spec_from_dict", "arrow_schema", "check_split", "split_to_table", "table_to_split"]


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
