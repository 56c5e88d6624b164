"""Per-rank state of a data-parallel worker loop, shared by the Ray Train paths (``distributed``, ``cv``).

Pure torch (torch.distributed, no Ray): the same initial weights on every rank, then a random state of
its own per rank (reparameterisation noise and dropout masks must not repeat across ranks); the epoch's
loss terms averaged over the group; the bf16 autocast of the forward pass (the MMD opts out of it
itself, ``cmmd_dist.model.mmd``); a value of every rank known to all (``every_rank``), and a user error on
any rank known to all (``agreed``: one rank that stopped alone would leave the others in a collective).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist

from cmmd_dist.errors import UserError, one_line
from cmmd_dist.train.single import seed_everything

__all__ = ["TERMS", "RANK_SEED_STRIDE", "reseed_rank", "group_mean", "autocast_for", "every_rank", "first_failure",
           "agreed"]

TERMS = ("rec", "kl", "mmd", "ce", "loss")
RANK_SEED_STRIDE = 7919  # a prime: rank r's seed is seed + 7919 r, clear of the small offsets seeds get elsewhere


def reseed_rank(seed: int, rank: int) -> torch.Generator:
    """Seed this process's torch (CPU and CUDA) and numpy state for ``rank``; returns a generator seeded alike.

    Call it after the models are built from the shared seed: weights stay identical, noise differs."""
    return seed_everything(seed + RANK_SEED_STRIDE * rank)


def group_mean(m: dict, device: torch.device, world: int) -> dict:
    """Epoch loss terms averaged over ranks (equal shards), and the group's samples/s.

    ``m`` holds this rank's ``TERMS``, ``rows`` and ``seconds``. Under the row-share MMD a rank's ``mmd`` is
    its share, scaled so that the mean over ranks IS the global-batch MMD: the mean reported here. Rows
    add up over ranks; the seconds are the slowest rank's. ``data_wait_fraction``: the ranks' mean time
    waiting for their next batch (``data_s``), over the epoch's seconds."""
    names = [*TERMS, "data_s"]  # averaged over ranks
    vals = torch.tensor([m.get(k, 0.0) for k in names] + [m["rows"], m["seconds"]], dtype=torch.float64, device=device)
    if world > 1:
        total = vals[:-1].clone()
        dist.all_reduce(total)
        longest = vals[-1:].clone()
        dist.all_reduce(longest, op=dist.ReduceOp.MAX)
        vals = torch.cat([total[:-1] / world, total[-1:], longest])
    out = {f"train_{k}": float(v) for k, v in zip(TERMS, vals[: len(TERMS)])}
    data_s, rows, seconds = float(vals[-3]), float(vals[-2]), float(vals[-1])
    out.update(train_rows=rows, train_seconds=seconds, samples_per_s=rows / seconds if seconds > 0 else 0.0,
               data_wait_fraction=data_s / seconds if seconds > 0 else 0.0)
    return out


def autocast_for(device: torch.device, bf16: bool) -> Callable[[], object] | None:
    """The ``autocast`` argument of ``train_epoch``: bf16 autocast on ``device``'s type, or None."""
    if not bf16:
        return None
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16)


def every_rank(value, world: int) -> list:
    """``value`` of every rank, in rank order, known to every rank."""
    if world <= 1 or not dist.is_initialized():
        return [value]
    every: list = [None] * world
    dist.all_gather_object(every, value)
    return every


def first_failure(failure: str | None, world: int) -> str | None:
    """The first rank's user error, known to every rank (one that stopped alone would leave the others
    waiting in a collective); None when no rank failed."""
    return next((f for f in every_rank(failure, world) if f is not None), None)


def agreed(step, world: int) -> tuple[object, str | None]:
    """``(step(), None)``, or ``(None, message)`` on EVERY rank when a user error stopped ``step`` on any rank."""
    try:
        value, failure = step(), None
    except UserError as err:
        value, failure = None, one_line(err)
    failure = first_failure(failure, world)
    return (None, failure) if failure is not None else (value, None)
