"""In-memory batching: a Split as torch tensors, views of its rows, and seeded shuffled mini-batches.

A batch is ``{"obs": {name: tensor}, "mis": {name: tensor}, "y": labels}``, plus ``"ids"`` (stable row
ids, ``cmmd_dist.train.folds.row_ids``) when the rows carry them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from cmmd_dist.datasets.row_ids import rank_positions
from cmmd_dist.datasets.spec import Split

__all__ = ["SplitTensors", "RowView", "iterate_batches"]


@dataclass
class SplitTensors:
    """The rows of one split as tensors, divided into observed and missing modalities; optional row ids."""

    obs: dict[str, torch.Tensor]
    mis: dict[str, torch.Tensor]
    y: torch.Tensor
    ids: torch.Tensor | None = None

    @classmethod
    def from_split(cls, split: Split, observed: list[str], missing: list[str], device: str | torch.device = "cpu",
                   ids: np.ndarray | None = None) -> "SplitTensors":
        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)

        y = torch.from_numpy(np.ascontiguousarray(split.labels)).to(device)
        rid = None if ids is None else torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(device)
        return cls(obs={n: t(split.arrays[n]) for n in observed}, mis={n: t(split.arrays[n]) for n in missing}, y=y, ids=rid)

    @classmethod
    def concat(cls, parts: list["SplitTensors"]) -> "SplitTensors":
        """The rows of ``parts`` one after the other (ids kept only when every part has them)."""
        ids = [p.ids for p in parts]
        return cls(obs={k: torch.cat([p.obs[k] for p in parts]) for k in parts[0].obs},
                   mis={k: torch.cat([p.mis[k] for p in parts]) for k in parts[0].mis},
                   y=torch.cat([p.y for p in parts]), ids=None if any(i is None for i in ids) else torch.cat(ids))

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def rows(self, index: torch.Tensor | slice) -> dict:
        out = {
            "obs": {k: v[index] for k, v in self.obs.items()},
            "mis": {k: v[index] for k, v in self.mis.items()},
            "y": self.y[index],
        }
        if self.ids is not None:
            out["ids"] = self.ids[index]
        return out

    def shard(self, rank: int, world_size: int) -> "SplitTensors":
        """Every ``world_size``-th row from ``rank``: disjoint shards of equal size (the tail is dropped)."""
        b = self.rows(torch.from_numpy(rank_positions(len(self), rank, world_size)))
        return SplitTensors(obs=b["obs"], mis=b["mis"], y=b["y"], ids=b.get("ids"))


@dataclass
class RowView:
    """Rows ``index`` (positions, int64 on the CPU) of ``base``, not copied: k fold models share one copy.

    ``hide_labels``: every batch carries all-zero labels (pretraining: no label reaches the model)."""

    base: SplitTensors
    index: torch.Tensor
    hide_labels: bool = False

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def rows(self, index: torch.Tensor | slice) -> dict:
        b = self.base.rows(self.index[index].to(self.base.y.device))
        if self.hide_labels:
            b["y"] = torch.zeros_like(b["y"])
        return b

    def shard(self, rank: int, world_size: int) -> "RowView":
        """As ``SplitTensors.shard``: every ``world_size``-th row from ``rank``, equal sizes, tail dropped."""
        return RowView(self.base, self.index[torch.from_numpy(rank_positions(len(self), rank, world_size))],
                       self.hide_labels)

    def tensors(self) -> SplitTensors:
        """The rows as a SplitTensors of their own (a copy: for evaluation, which reads whole columns)."""
        b = self.rows(slice(None))
        return SplitTensors(obs=b["obs"], mis=b["mis"], y=b["y"], ids=b.get("ids"))


def iterate_batches(
    data: SplitTensors | RowView,
    batch_size: int,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
    start_batch: int = 0,
) -> Iterator[dict]:
    """Mini-batches of ``data``; shuffled with ``generator`` when asked. ``start_batch`` skips ahead (resume)."""
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - (n % batch_size) if drop_last else n
    for start in range(start_batch * batch_size, stop, batch_size):
        yield data.rows(order[start : start + batch_size])
