"""Squared MMD (biased V-statistic) with the Gaussian kernel k(a,b) = exp(-||a-b||^2 / D^2).

``gather`` is an optional hook mapping a local (n, D) tensor to the global (N_total, D) tensor
(differentiably, under data parallelism); without it the MMD is over the local batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["gaussian_kernel", "mmd", "Gather"]

Gather = Callable[[torch.Tensor], torch.Tensor]


def gaussian_kernel(a: torch.Tensor, b: torch.Tensor, bandwidth: float | None = None) -> torch.Tensor:
    """(n, m) kernel matrix; the bandwidth defaults to D^2 (the reference implementation's choice)."""
    d = a.shape[-1]
    bw = float(d * d) if bandwidth is None else bandwidth
    # ||a||^2 + ||b||^2 - 2ab: O(nm) memory instead of the O(nmD) of broadcasting the differences
    sq = (a.pow(2).sum(-1, keepdim=True) + b.pow(2).sum(-1).unsqueeze(0) - 2.0 * a @ b.T).clamp_min(0.0)
    return torch.exp(-sq / bw)


def mmd(zq: torch.Tensor, zp: torch.Tensor, gather: Gather | None = None) -> torch.Tensor:
    """mean(K_qq) + mean(K_pp) - 2 mean(K_qp) over the (gathered) samples of both sets."""
    if gather is not None:
        # one collective for both sets: each rank contributes [zq; zp], split back per rank afterwards
        n, d = zq.shape
        both = gather(torch.cat([zq, zp], dim=0)).view(-1, 2 * n, d)
        zq, zp = both[:, :n].reshape(-1, d), both[:, n:].reshape(-1, d)
    return gaussian_kernel(zq, zq).mean() + gaussian_kernel(zp, zp).mean() - 2 * gaussian_kernel(zq, zp).mean()
