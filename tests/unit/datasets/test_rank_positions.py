"""One rule shares in-memory rows between data-parallel ranks (``datasets.row_ids.rank_positions``): disjoint,
equal shares, the tail dropped; ``SplitTensors.shard`` and ``RowView.shard`` follow it."""

from __future__ import annotations

import numpy as np
import torch

from cmmd_dist.datasets.row_ids import rank_positions
from cmmd_dist.datasets.tensors import RowView, SplitTensors


def test_shares_are_disjoint_equal_and_drop_the_tail():
    shares = [rank_positions(11, r, 3) for r in range(3)]
    assert [s.tolist() for s in shares] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert rank_positions(5, 0, 1).tolist() == list(range(5))


def test_tensors_and_views_shard_by_that_rule():
    y = torch.arange(10)
    data = SplitTensors(obs={"a": torch.arange(10.0)[:, None]}, mis={}, y=y)
    for rank in range(3):
        want = rank_positions(10, rank, 3)
        assert data.shard(rank, 3).y.tolist() == want.tolist()
        view = RowView(data, torch.arange(9, -1, -1))
        assert view.shard(rank, 3).index.tolist() == np.arange(9, -1, -1)[want].tolist()
