"""The differentiable all-gather behind the global-batch MMD under data parallelism.

``all_gather_rows(x)`` concatenates every rank's (n, D) rows in rank order. Its backward all-reduces
(sums) the incoming gradient over ranks and keeps this rank's rows: every rank computes the same
global MMD, so the sum is N times the true gradient of this rank's rows, and DDP's 1/N average of
the parameter gradients cancels it (tests/unit/train/test_gather.py proves it against one process).
An own autograd function rather than ``torch.distributed.nn.functional.all_gather``: that one is
deprecated in torch 2.13, needs ``reduce_scatter`` (which gloo lacks) and has reports of wrong
gradients (pytorch issue 120386). Every rank must pass the same number of rows (equal shards).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["all_gather_rows", "gather_for"]


class _AllGatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        ctx.n = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n], None


def all_gather_rows(x: torch.Tensor, group=None) -> torch.Tensor:
    """(world_size * n, D): the rows of every rank, in rank order; gradients flow back to each rank's rows."""
    return _AllGatherRows.apply(x, group)


def gather_for(scope: str):
    """The ``gather`` hook of ``cmmd_loss`` for an MMD scope: 'global' (all ranks) or 'local' (per shard: None)."""
    if scope == "local" or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return None
    if scope != "global":
        raise ValueError(f"mmd_scope must be 'global' or 'local', got {scope!r}")
    return all_gather_rows
