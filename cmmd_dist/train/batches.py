"""In-memory batching: a Split as torch tensors, and seeded shuffled mini-batches over it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from cmmd_dist.datasets.spec import Split

__all__ = ["SplitTensors", "iterate_batches"]


@dataclass
class SplitTensors:
    """The rows of one split as tensors, divided into observed and missing modalities."""

    obs: dict[str, torch.Tensor]
    mis: dict[str, torch.Tensor]
    y: torch.Tensor

    @classmethod
    def from_split(cls, split: Split, observed: list[str], missing: list[str], device: str = "cpu") -> "SplitTensors":
        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)

        y = torch.from_numpy(np.ascontiguousarray(split.labels)).to(device)
        return cls(obs={n: t(split.arrays[n]) for n in observed}, mis={n: t(split.arrays[n]) for n in missing}, y=y)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def rows(self, index: torch.Tensor | slice) -> dict:
        return {
            "obs": {k: v[index] for k, v in self.obs.items()},
            "mis": {k: v[index] for k, v in self.mis.items()},
            "y": self.y[index],
        }

    def shard(self, rank: int, world_size: int) -> "SplitTensors":
        """Every ``world_size``-th row from ``rank``: disjoint shards of equal size (the tail is dropped)."""
        n = (len(self) // world_size) * world_size
        idx = torch.arange(rank, n, world_size)
        b = self.rows(idx)
        return SplitTensors(obs=b["obs"], mis=b["mis"], y=b["y"])


def iterate_batches(
    data: SplitTensors,
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
