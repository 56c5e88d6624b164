"""Stable row ids: a split's code times 10^12 plus the row's index within its split (the ``row`` column of
prepared shards), e.g. 2000000000017 = val row 17. Ids do not depend on the other splits' sizes, the fold
count or the number of workers; cross-validation (``train.folds``) assigns folds by them.

:func:`rank_positions` is the one rule by which in-memory rows are shared between data-parallel ranks:
every ``world``-th row from ``rank``, equal shares, the tail dropped (every rank takes as many steps). Streamed
shards share theirs by ``row`` blocks (``datasets.streaming``)."""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["SPLIT_CODES", "row_ids", "rank_positions"]

SPLIT_CODES = {"train": 1, "val": 2, "test": 3, "unlabeled": 4}
_ROWS_PER_SPLIT = 10**12


def row_ids(split_name: str, n: int) -> np.ndarray:
    """Stable ids of a split's ``n`` rows (int64); a split not in SPLIT_CODES gets a code from its name."""
    code = SPLIT_CODES.get(split_name)
    if code is None:  # another extra split: above the named ones, the same on every worker
        code = 16 + zlib.crc32(split_name.encode()) % 9_000_000
    return code * _ROWS_PER_SPLIT + np.arange(n, dtype=np.int64)


def rank_positions(n: int, rank: int, world: int) -> np.ndarray:
    """Positions (int64) of rank ``rank``'s share of ``n`` rows among ``world`` ranks: every ``world``-th
    row from ``rank``, equal shares, the tail dropped."""
    return np.arange(rank, (n // world) * world, world, dtype=np.int64)
