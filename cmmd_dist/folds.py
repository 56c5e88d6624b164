"""Cross-validation folds over a dataset's development rows (train + val); the test split is never used.

Rows are named by a stable id, ``row_ids``: the split's code times 10^12 plus the row's index within
its split (the ``row`` column of the prepared shards), e.g. 2000000000017 = val row 17. Ids do not
depend on the other splits' sizes, the fold count or the number of workers.
"""

from __future__ import annotations

import zlib

import numpy as np

from cmmd_dist.datasets.spec import DatasetBundle, Split

__all__ = ["development_split", "development_ids", "row_ids", "assign_folds", "fold_positions", "fold_parts",
           "SPLIT_CODES"]

SPLIT_CODES = {"train": 1, "val": 2, "test": 3, "unlabeled": 4}
_ROWS_PER_SPLIT = 10**12


def row_ids(split_name: str, n: int) -> np.ndarray:
    """Stable ids of a split's ``n`` rows (int64); a split not in SPLIT_CODES gets a code from its name."""
    code = SPLIT_CODES.get(split_name)
    if code is None:  # another extra split: above the named ones, the same on every worker
        code = 16 + zlib.crc32(split_name.encode()) % 9_000_000
    return code * _ROWS_PER_SPLIT + np.arange(n, dtype=np.int64)


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
