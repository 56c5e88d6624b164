"""The differentiable all-gather behind the global-batch MMD under data parallelism.

``all_gather_rows(x)`` concatenates every rank's (n, D) rows in rank order. In backward, rank r must
return N times d(loss)/d(its rows), because DDP divides the summed parameter gradients by N:

- general form (``replicated=False``): all-reduce (sum) the incoming gradient over ranks and keep
  this rank's rows, as ``torch.distributed.nn.functional.all_gather`` does. When each rank's loss
  is the same replicated function of the gathered rows, the N incoming gradients are equal, so
  the sum is N times the true gradient;
- replicated form (default, what the MMD uses): every rank computes the SAME global MMD from the
  same gathered rows, so its own slice of the incoming gradient already is the full derivative;
  scaling it by N gives the same result with no communication in backward (two fewer syncs per step).

tests/unit/train/test_gather.py proves both against one process on the concatenated batch. An own
autograd function rather than ``torch.distributed.nn.functional.all_gather``: that one is deprecated
in torch 2.13 and has reports of wrong gradients (pytorch issue 120386). Every rank must pass the
same number of rows (equal shards: ``SplitTensors.shard``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["all_gather_rows", "gather_for"]


class _AllGatherRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, group, replicated: bool) -> torch.Tensor:
        ctx.group, ctx.replicated = group, replicated
        ctx.rank, ctx.world, ctx.n = dist.get_rank(group), dist.get_world_size(group), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(ctx.world)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        own = slice(ctx.rank * ctx.n, (ctx.rank + 1) * ctx.n)
        if ctx.replicated:
            return grad[own] * ctx.world, None, None
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[own], None, None


def all_gather_rows(x: torch.Tensor, group=None, replicated: bool = True) -> torch.Tensor:
    """(world_size * n, D): every rank's rows in rank order; gradients flow back to each rank's rows.

    ``replicated``: the loss downstream is computed identically on every rank (the global MMD)."""
    return _AllGatherRows.apply(x, group, replicated)


def gather_for(scope: str, replicated: bool = True):
    """The ``gather`` hook of ``cmmd_loss`` for an MMD scope: 'global' (all ranks) or 'local' (per shard: None)."""
    if scope not in ("global", "local"):
        raise ValueError(f"mmd_scope must be 'global' or 'local', got {scope!r}")
    if scope == "local" or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return None
    if replicated:
        return all_gather_rows
    return lambda x: all_gather_rows(x, replicated=False)
