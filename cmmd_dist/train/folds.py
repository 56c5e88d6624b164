"""Cross-validation folds over a dataset's development rows (train + val); the test split is never used.

Rows are named by a stable id, ``row_ids``: the split's code times 10^12 plus the row's index within
its split (the ``row`` column of the prepared shards), e.g. 2000000000017 = val row 17. Ids do not
depend on the other splits' sizes, the fold count or the number of workers.

A row's fold is a function of its id and of the development rows' labels (or groups) alone:
``assign_folds`` over the development rows in id order. A streamed dataset gets the same folds
without loading a modality (:func:`prepared_fold_ids` reads the ``label``, group and ``row`` columns
only, 8 bytes a row for classes), and a CV worker filters its fit and held-out rows by id while it
streams (:func:`fold_keep`).
"""

from __future__ import annotations

import numpy as np

from cmmd_dist.datasets.row_ids import row_ids
from cmmd_dist.datasets.spec import DatasetBundle, Split

__all__ = ["development_split", "development_ids", "assign_folds", "fold_positions", "fold_parts",
           "DEV_SPLITS", "prepared_fold_ids", "fold_keep"]

DEV_SPLITS = ("train", "val")

def development_split(bundle: DatasetBundle) -> Split:
    """train + val rows concatenated (group ids kept when both have them)."""
    tr, va = bundle.train, bundle.val
    groups = None
    if tr.groups is not None and va.groups is not None:
        groups = np.concatenate([tr.groups, va.groups])
    return Split(
        arrays={k: np.concatenate([tr.arrays[k], va.arrays[k]]) for k in tr.arrays},
        labels=np.concatenate([tr.labels, va.labels]),
        groups=groups,
    )


def development_ids(bundle: DatasetBundle) -> np.ndarray:
    """Stable ids of ``development_split(bundle)``'s rows, in its order (train rows, then val rows)."""
    return np.concatenate([row_ids("train", len(bundle.train)), row_ids("val", len(bundle.val))])


def assign_folds(split: Split, k: int, strategy: str, seed: int = 0) -> np.ndarray:
    """Fold id (0..k-1) per row: stratified by class, plain shuffled k-fold, or grouped by ``split.groups``."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold

    n = len(split)
    if n < k:
        raise ValueError(f"cannot make {k} folds from {n} rows")
    idx = np.zeros(n)
    if strategy == "grouped":
        if split.groups is None:
            raise ValueError("folds.strategy 'grouped' needs a dataset with a group column (e.g. xrmb's speaker)")
        n_groups = len(np.unique(split.groups))
        if n_groups < k:
            raise ValueError(f"folds.k={k} but the group column has only {n_groups} distinct groups")
        splitter = GroupKFold(n_splits=k).split(idx, groups=split.groups)
    elif strategy == "stratified" and split.labels.ndim == 1:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(idx, split.labels)
    else:  # plain k-fold; also multi-label data, which StratifiedKFold cannot stratify
        splitter = KFold(n_splits=k, shuffle=True, random_state=seed).split(idx)
    fold = np.empty(n, dtype=np.int64)
    for f, (_, val_idx) in enumerate(splitter):
        fold[val_idx] = f
    return fold


def fold_positions(fold_ids: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit positions, validation positions) of one fold: disjoint, together every development row."""
    return np.flatnonzero(fold_ids != fold), np.flatnonzero(fold_ids == fold)


def fold_parts(split: Split, fold_ids: np.ndarray, fold: int) -> tuple[Split, Split]:
    """(fit rows, validation rows) of one fold."""
    fit, val = fold_positions(fold_ids, fold)
    return split.take(fit), split.take(val)


def prepared_fold_ids(root: str, k: int, strategy: str, seed: int = 0, settings=None, manifest: dict | None = None,
                      limit: int | None = None) -> dict[str, np.ndarray]:
    """Fold id per row of a prepared dataset's train and val splits, ``{split: (rows,) int64}`` indexed by row
    number: the folds ``assign_folds(development_split(bundle), ...)`` gives, read from the label, group and
    row columns only (``limit``: the first rows of each split, as ``data.limit``)."""
    from cmmd_dist.datasets.shards import manifest_spec
    from cmmd_dist.datasets.streaming import ShardStream
    from cmmd_dist.storage import StorageError, read_manifest

    manifest = manifest or read_manifest(root, settings)
    group = manifest_spec(manifest).group_column
    labels, groups, sizes = [], [], {}
    for split in DEV_SPLITS:
        s = ShardStream(root, split, 1 << 20, shuffle=False, settings=settings, manifest=manifest,
                        columns=["label", "row"] + ([group] if group else []))
        parts = list(s)
        rows = np.concatenate([p["row"] for p in parts])
        order = np.argsort(rows, kind="stable")
        if not np.array_equal(rows[order], np.arange(len(rows))):
            raise StorageError(f"{manifest['_uri']}: split {split!r} rows are not numbered 0..{len(rows) - 1}")
        order = order[: len(rows) if limit is None else min(limit, len(rows))]
        labels.append(np.concatenate([p["label"] for p in parts])[order])
        if group:
            groups.append(np.concatenate([p[group] for p in parts])[order])
        sizes[split] = len(order)
    dev = Split(arrays={}, labels=np.concatenate(labels), groups=np.concatenate(groups) if groups else None)
    fold = assign_folds(dev, k, strategy, seed)
    n_train = sizes[DEV_SPLITS[0]]
    return {DEV_SPLITS[0]: fold[:n_train], DEV_SPLITS[1]: fold[n_train:]}


def fold_keep(fold_ids: dict[str, np.ndarray], fold: int, held_out: bool):
    """The stream filter (``ShardStream(keep=...)``) of one fold: its held-out rows, or its fit rows (every
    development row of another fold, and every row of a split without folds, e.g. ``unlabeled``)."""

    def keep(split: str, rows: np.ndarray) -> np.ndarray:
        ids = fold_ids.get(split)
        if ids is None:
            return np.full(len(rows), not held_out)
        inside = rows < len(ids)
        f = np.where(inside, ids[np.minimum(rows, len(ids) - 1)], -1)
        return inside & ((f == fold) if held_out else (f != fold))

    return keep
