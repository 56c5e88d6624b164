"""The all-gathers behind the global-batch MMD under data parallelism.

Every rank needs its gradient to be N times d(global MMD)/d(its own samples), because DDP divides the
summed parameter gradients by N. Three ways, all proven against one process on the concatenated
batch by tests/unit/train/test_gather.py:

- ``row_share`` (default): a plain all-gather of every rank's samples, no gradient through it; each
  rank computes only the kernel rows of its own samples against all of them
  (``cmmd_dist.model.mmd.row_share_mmd``): 2n x 2N kernel entries instead of 3 N^2, no collective in
  backward. The per-rank MMD value is this rank's share, scaled so that its mean over ranks is the
  global MMD (the epoch metrics average over ranks);
- ``replicated``: a differentiable all-gather (``all_gather_rows``), every rank computes the SAME
  whole global MMD; its own slice of the incoming gradient already is the full derivative, scaled by N
  in backward, no communication;
- ``all_reduce``: the general differentiable all-gather, as ``torch.distributed.nn.functional.all_gather``
  does it: all-reduce (sum) the incoming gradient over ranks and keep this rank's rows.

Own autograd code rather than ``torch.distributed.nn.functional.all_gather``: that one is deprecated
in torch 2.13 and has reports of wrong gradients (pytorch issue 120386). Every rank must pass the
same number of rows (equal shards: ``SplitTensors.shard``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["all_gather_rows", "gather_for", "RowShareGather", "MODES"]

MODES = ("row_share", "replicated", "all_reduce")


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


class RowShareGather:
    """The ``row_share`` hook: ``collect(x)`` -> (every rank's rows, detached, in rank order; rank; world).

    ``start(x)`` posts the all-gather without waiting (``train_step`` calls it as soon as the latent
    samples exist, through ``CMMD.forward(on_latents=...)``), so the collective overlaps the decoders;
    the next ``collect`` waits for it instead of gathering again. Ranks reach ``start`` at different
    moments: waiting there would stall the faster rank for the slower one, waiting later mostly does not."""

    row_share = True

    def __init__(self, group=None):
        self.group = group
        self._pending: tuple[torch.Tensor, list[torch.Tensor], object] | None = None

    def start(self, x: torch.Tensor) -> None:
        x = x.detach().contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(self.group))]
        self._pending = (x, parts, dist.all_gather(parts, x, group=self.group, async_op=True))

    def collect(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        if self._pending is None:
            self.start(x)
        posted, parts, work = self._pending
        self._pending = None
        work.wait()
        if posted.shape != x.shape:
            raise RuntimeError(f"row-share gather: posted {tuple(posted.shape)} rows, the MMD uses {tuple(x.shape)}")
        return torch.cat(parts, dim=0), dist.get_rank(self.group), len(parts)


def gather_for(scope: str, mode: str = "row_share"):
    """The ``gather`` hook of ``cmmd_loss`` for an MMD scope: 'global' (all ranks) or 'local' (per shard: None)."""
    if scope not in ("global", "local"):
        raise ValueError(f"mmd_scope must be 'global' or 'local', got {scope!r}")
    if mode not in MODES:
        raise ValueError(f"gather mode must be one of {MODES}, got {mode!r}")
    if scope == "local" or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return None
    if mode == "row_share":
        return RowShareGather()
    if mode == "replicated":
        return all_gather_rows
    return lambda x: all_gather_rows(x, replicated=False)
