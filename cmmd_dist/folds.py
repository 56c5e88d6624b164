"""Cross-validation folds over a dataset's development rows (train + val); the test split is never used."""

from __future__ import annotations

import numpy as np

from cmmd_dist.datasets.spec import DatasetBundle, Split

__all__ = ["development_split", "assign_folds", "fold_parts"]


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


def fold_parts(split: Split, fold_ids: np.ndarray, fold: int) -> tuple[Split, Split]:
    """(fit rows, validation rows) of one fold."""
    return split.take(np.flatnonzero(fold_ids != fold)), split.take(np.flatnonzero(fold_ids == fold))
