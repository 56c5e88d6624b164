"""The optimiser every trainer builds: Adam at ``train.lr``, on the fastest implementation the device runs.

Adam's update touches every parameter four times (two moment updates, a square root, a division); the
default single-tensor loop on CPU runs them as separate passes over memory, one tensor at a time, and took
about 28% of a paper-size training step (issue 14). Preference order, same math in each:

1. ``fused``: one kernel per tensor doing the whole update in one pass (CPU since torch 2.4, CUDA, ...);
2. ``foreach``: multi-tensor kernels, where the device has no fused kernel;
3. ``single``: the per-tensor loop, where neither runs.

Which one a device runs is found by a one-step probe on a two-element parameter (cached per device type
and dtype), not by reading torch's private device lists. Pure torch: no Ray, no MLflow.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Literal

import torch

from cmmd_dist.config import TrainConfig

__all__ = ["make_optimizer", "adam_implementation", "load_optimizer_state", "Implementation"]

Implementation = Literal["fused", "foreach", "single"]
_FLAGS: dict[str, dict[str, bool]] = {
    "fused": {"fused": True}, "foreach": {"foreach": True}, "single": {"foreach": False},
}


@functools.lru_cache(maxsize=None)
def _probe(device_type: str, dtype: torch.dtype) -> Implementation:
    for impl in ("fused", "foreach"):
        p = torch.nn.Parameter(torch.zeros(2, device=device_type, dtype=dtype))
        p.grad = torch.ones_like(p)
        try:
            # the device/dtype checks run lazily, at the first step: only a real step tells
            torch.optim.Adam([p], lr=1e-3, **_FLAGS[impl]).step()
        except (RuntimeError, NotImplementedError):
            continue
        return impl  # type: ignore[return-value]
    return "single"


def adam_implementation(device: torch.device | str, dtypes: Iterable[torch.dtype] = (torch.float32,)) -> Implementation:
    """The Adam implementation ``make_optimizer`` uses for parameters of these dtypes on ``device``."""
    order = ("fused", "foreach", "single")
    found = [_probe(torch.device(device).type, dt) for dt in set(dtypes)] or ["fused"]
    return max(found, key=order.index)  # every tensor must be supported: the least capable dtype decides


def make_optimizer(params: Iterable[torch.nn.Parameter], train: TrainConfig,
                   device: torch.device | str | None = None) -> torch.optim.Adam:
    """Adam over ``params`` at ``train.lr``; ``device`` defaults to the first parameter's (they must share one)."""
    params = list(params)
    if device is None:
        device = params[0].device if params else train.device
    impl = adam_implementation(device, (p.dtype for p in params))
    return torch.optim.Adam(params, lr=train.lr, **_FLAGS[impl])


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)`` that keeps the implementation ``optimizer`` was built with.

    torch's own load takes every group setting from the saved state, ``fused`` and ``foreach`` included,
    so a checkpoint written before this factory (or on another device) would silently resume on the
    slow single-tensor loop; the math of the three is the same, so only the flags are put back."""
    flags = [(g.get("fused"), g.get("foreach")) for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, (fused, foreach) in zip(optimizer.param_groups, flags):
        group["fused"], group["foreach"] = fused, foreach
        if not fused:
            continue
        for p in group["params"]:
            st = optimizer.state.get(p, {})
            if "step" in st:  # the fused kernel wants its step count as float32 on the parameter's device
                st["step"] = st["step"].to(device=p.device, dtype=torch.float32)
