"""Squared MMD (biased V-statistic) with the Gaussian kernel k(a,b) = exp(-||a-b||^2 / D^2).

``gather`` is an optional hook for data parallelism; without it the MMD is over the local batch. Either
- a function mapping a local (n, D) tensor to the global (N, D) one, differentiably: every rank then
  computes the whole global MMD (three N x N kernels); or
- a *row-share* gather (``gather.row_share`` true, ``gather.collect(x) -> (all rows, rank, world)``,
  no gradient through the collective): each rank computes only the kernel rows of its own samples
  against every sample (a 2n x 2N kernel instead of three N x N ones), see ``row_share_mmd``.

The kernel and the MMD are always computed in float32, outside any autocast: under bf16 (8 bits of
mantissa) exp(-d^2/D^2) of nearby samples rounds to the same value, so mean(K_qq) + mean(K_pp) -
2 mean(K_qp), a difference of near-equal numbers of order 1e-3, came out as exactly 0 (and so did its
gradient). The bf16 latents are cast up; the gradient flows back to them through the cast.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch

__all__ = ["gaussian_kernel", "mmd", "row_share_mmd", "Gather"]

Gather = Callable[[torch.Tensor], torch.Tensor]


@contextmanager
def _full_precision(device: torch.device):
    """Autocast off for the block (whatever the device); its inputs must be cast up by the caller (``_wide``)."""
    with torch.autocast(device_type=device.type, enabled=False):
        yield


def _wide(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 at least (float64 stays float64: the exactness tests run in double)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def gaussian_kernel(a: torch.Tensor, b: torch.Tensor, bandwidth: float | None = None) -> torch.Tensor:
    """(n, m) kernel matrix, float32 or wider; the bandwidth defaults to D^2 (the reference implementation's choice)."""
    d = a.shape[-1]
    bw = float(d * d) if bandwidth is None else bandwidth
    with _full_precision(a.device):
        a, b = _wide(a), _wide(b)
        # ||a||^2 + ||b||^2 - 2ab: O(nm) memory instead of the O(nmD) of broadcasting the differences
        sq = torch.addmm(a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1).unsqueeze(0), a, b.T, alpha=-2.0)
        return torch.exp(sq.clamp_min(0.0) * (-1.0 / bw))


def row_share_mmd(zq: torch.Tensor, zp: torch.Tensor, both: torch.Tensor, world: int) -> torch.Tensor:
    """This rank's share of the global-batch MMD; ``both`` = every rank's [zq; zp] rows in rank order, detached.

    With N samples per set over all ranks, the global MMD * N^2 = sum over ranks r of
    S_r = sum K(q_r, q_all) + sum K(p_r, p_all) - sum K(q_r, p_all) - sum K(p_r, q_all),
    the kernel rows of rank r's own samples. Its gradient with respect to rank r's own samples, the
    columns held constant, is N^2/2 times the global MMD's (the kernel is symmetric). Returned: the
    value world * S_r / N^2 (its mean over ranks IS the global MMD; our epoch metrics average over ranks)
    carrying the gradient of 2 * world * S_r / N^2, i.e. world x d(global MMD)/d(own samples), which
    DDP's average over ranks turns into the exact global-batch gradient; no collective in backward."""
    n, d = zq.shape
    both = both.view(world, 2, n, d)
    cols = torch.cat([both[:, 0].reshape(-1, d), both[:, 1].reshape(-1, d)])  # all q, then all p
    big_n = world * n
    k = gaussian_kernel(torch.cat([zq, zp]), cols)  # (2n, 2N): own q and p rows against every sample
    share = k[:n, :big_n].sum() + k[n:, big_n:].sum() - k[:n, big_n:].sum() - k[n:, :big_n].sum()
    s = share * (world / float(big_n * big_n))
    return 2.0 * s - s.detach()


def mmd(zq: torch.Tensor, zp: torch.Tensor, gather: Gather | None = None) -> torch.Tensor:
    """mean(K_qq) + mean(K_pp) - 2 mean(K_qp) over the (gathered) samples of both sets; float32, never autocast."""
    with _full_precision(zq.device):
        if gather is not None and getattr(gather, "row_share", False):
            # same shape as the early gather ``train_step`` posted (possibly bf16): collect, then cast up
            both, _, world = gather.collect(torch.cat([zq, zp], dim=0))
            return row_share_mmd(_wide(zq), _wide(zp), _wide(both), world)
        zq, zp = _wide(zq), _wide(zp)
        if gather is not None:
            # one collective for both sets: each rank contributes [zq; zp], split back per rank afterwards
            n, d = zq.shape
            both = gather(torch.cat([zq, zp], dim=0)).view(-1, 2 * n, d)
            zq, zp = both[:, :n].reshape(-1, d), both[:, n:].reshape(-1, d)
        return gaussian_kernel(zq, zq).mean() + gaussian_kernel(zp, zp).mean() - 2 * gaussian_kernel(zq, zp).mean()
