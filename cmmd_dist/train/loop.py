"""The epoch/step loop, pure torch: no Ray, no MLflow. Gathering and reporting are passed in.

The single-process trainer and the Ray Train worker both call ``train_epoch`` unchanged, for CMMD and for
every baseline of ``model.baselines``: ``core.objective`` (the interface they share) scores a batch.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext

import torch

from cmmd_dist.model import LossWeights
from cmmd_dist.model.mmd import Gather

__all__ = ["train_step", "train_epoch", "evaluate_loss", "placement"]


def _early_gather(gather: Gather | None, w: LossWeights):
    """The ``on_latents`` hook that posts the MMD's all-gather before decoding (row-share gathers only)."""
    if gather is None or not hasattr(gather, "start") or not w.mmd_scale:
        return None
    return lambda zq, zp: gather.start(torch.cat([zq.reshape(-1, zq.shape[-1]), zp.reshape(-1, zp.shape[-1])]))


def train_step(
    model: torch.nn.Module,
    core: torch.nn.Module,
    batch: dict,
    optimizer: torch.optim.Optimizer,
    w: LossWeights,
    gather: Gather | None = None,
    world_size: int = 1,
    pretrain: bool = False,
    autocast: Callable[[], object] | None = None,
) -> dict[str, torch.Tensor]:
    """One optimiser step. ``model`` may be a DDP wrapper of ``core`` (CMMD or a baseline); returns the
    detached loss terms.

    ``pretrain`` withholds the label from the encoder and drops the classifier term (Flickr recipe)."""
    optimizer.zero_grad(set_to_none=True)
    with (autocast() if autocast else nullcontext()):
        loss, terms = core.objective(model, batch, w, gather=gather, world_size=world_size,
                                     with_classifier=not pretrain, on_latents=_early_gather(gather, w))
    loss.backward()
    optimizer.step()
    return terms


def train_epoch(
    model: torch.nn.Module,
    core: torch.nn.Module,
    batches: Iterable[dict],
    optimizer: torch.optim.Optimizer,
    w: LossWeights,
    gather: Gather | None = None,
    world_size: int = 1,
    pretrain: bool = False,
    autocast: Callable[[], object] | None = None,
    on_step: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
) -> dict[str, float]:
    """One pass over ``batches``; returns row-weighted means of the loss terms, rows and seconds."""
    model.train()
    sums: dict[str, float] = {}
    rows = 0
    data_s = 0.0  # time spent waiting for the next batch (a streamed epoch's reader falling behind shows here)
    t0 = time.perf_counter()
    it = iter(batches)
    for i in itertools.count():
        t_wait = time.perf_counter()
        batch = next(it, None)
        data_s += time.perf_counter() - t_wait
        if batch is None:
            break
        terms = train_step(model, core, batch, optimizer, w, gather, world_size, pretrain, autocast)
        n = int(batch["y"].shape[0])
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v) * n
        rows += n
        if on_step is not None:
            on_step(i, terms)
    seconds = time.perf_counter() - t0
    out = {k: v / max(rows, 1) for k, v in sums.items()}
    out.update(rows=float(rows), seconds=seconds, data_s=data_s,
               samples_per_s=rows / seconds if seconds > 0 else 0.0)
    return out


@torch.no_grad()
def evaluate_loss(core: torch.nn.Module, batches: Iterable[dict], w: LossWeights) -> dict[str, float]:
    """Mean loss terms over ``batches`` in eval mode (no dropout)."""
    core.eval()
    sums: dict[str, float] = {}
    rows = 0
    for batch in batches:
        _, terms = core.objective(core, batch, w)
        n = int(batch["y"].shape[0])
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v) * n
        rows += n
    return {k: v / max(rows, 1) for k, v in sums.items()}


def placement(model: torch.nn.Module, optimizer: torch.optim.Optimizer, rows) -> dict[str, list[str]]:
    """Where a trainer's state lives: the devices of the parameters, of the optimiser's state tensors (Adam's
    moments; empty before the first step) and of the rows its batches are cut from (``SplitTensors`` or a
    ``RowView`` of them). One device each, the one the run was given, is the rule every path keeps."""
    base = getattr(rows, "base", rows)
    state = [t for st in optimizer.state.values() for k, t in st.items() if torch.is_tensor(t) and k != "step"]
    streamed = getattr(rows, "stream", None) is not None  # StreamedRows: batches are made on its device
    batches = [rows.device] if streamed else [base.y, *base.obs.values(), *base.mis.values()]
    return {"params": sorted({str(p.device) for p in model.parameters()}),
            "optimizer": sorted({str(t.device) for t in state}),
            "batches": sorted({str(getattr(t, "device", t)) for t in batches})}
