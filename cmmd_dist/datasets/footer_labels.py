"""What a prepared dataset's training labels are, known from its Parquet footers alone (no row read).

The shard writer keeps min/max statistics of the ``label`` column per row group; a footer is a few KiB at
the end of each file (a ranged GET on S3). :func:`check_train_classes` refuses, before Ray starts, a
class-labelled prepared dataset whose training rows (the first ``limit`` of each split, with ``data.limit``;
a sweep's trials train on train + val) hold a single class, with the message of
``DatasetBundle.check_trainable`` after a full load. It stops at the first row groups that show two
classes (a real dataset: one footer), and says nothing where a footer has no statistics or cannot be
read: the load's own checks then report it.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from cmmd_dist.config import DataConfig
from cmmd_dist.datasets.spec import DatasetSpec, check_classes
from cmmd_dist.errors import UserError
from cmmd_dist.storage import S3Settings, check_manifest_files, confined, read_manifest, resolve

__all__ = ["label_range", "check_train_classes"]


def _label_stats(root: str, rel: str, settings: S3Settings | None) -> list[tuple[int, int, int]] | None:
    """(rows, min, max) of ``label`` per row group of the shard ``rel``, None without statistics."""
    fs, path = resolve(confined(root, rel), settings)
    with fs.open_input_file(path) as f:
        meta = pq.ParquetFile(f).metadata
    column = next((i for i in range(meta.num_columns) if meta.schema.column(i).path == "label"), None)
    if column is None:
        return None
    groups = []
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        stats = group.column(column).statistics
        if stats is None or not stats.has_min_max:
            return None
        groups.append((group.num_rows, int(stats.min), int(stats.max)))
    return groups


def label_range(root: str, manifest: dict, splits: tuple[str, ...] = ("train",), limit: int | None = None,
                settings: S3Settings | None = None) -> tuple[int, int] | None:
    """(lowest, highest) label of the first ``limit`` rows (all when None) of each of ``splits``, over the row
    groups that hold them; stops once the two differ. None when a footer lacks the statistics or no row is listed."""
    low = high = None
    left = {split: limit for split in splits}
    for entry in check_manifest_files(manifest, root=root):
        split = entry["split"]
        if split not in left or (left[split] is not None and left[split] <= 0):
            continue
        groups = _label_stats(root, entry["path"], settings)
        if groups is None:
            return None
        for rows, lo, hi in groups:
            if left[split] is not None and left[split] <= 0:
                break
            low, high = lo if low is None else min(low, lo), hi if high is None else max(high, hi)
            if low != high:
                return low, high
            if left[split] is not None:
                left[split] -= rows
    return None if low is None else (low, high)


def check_train_classes(cfg: DataConfig, spec: DatasetSpec, splits: tuple[str, ...] = ("train",),
                        settings: S3Settings | None = None) -> None:
    """A UserError when the rows of ``splits`` that the class-labelled prepared dataset of ``cfg`` trains on hold a
    single class (from its footers: the range over whole row groups can only be wider than the rows', so
    nothing good is refused)."""
    from cmmd_dist.datasets.registry import prepared_uri

    uri = prepared_uri(cfg)
    if uri is None or spec.label_kind != "classes":
        return
    try:
        span = label_range(uri, read_manifest(uri, settings), splits, cfg.limit, settings)
    except (OSError, pa.ArrowInvalid):  # unreadable shard: the load names it precisely
        return
    if span is not None and span[0] == span[1]:
        rows = "the training rows" if splits == ("train",) else f"the training rows ({' + '.join(splits)})"
        try:
            check_classes(uri, [span[0]], rows)
        except ValueError as err:
            raise UserError(str(err)) from None
