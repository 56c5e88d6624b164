"""One constructor for every model kind: CMMD or a baseline (VCCA, MVAE, MMVAE, M-x_o) over the same networks."""

from __future__ import annotations

from torch import nn

from cmmd_dist.model.baselines import BaselineConfig, MxO
from cmmd_dist.model.cmmd import CMMD, CMMDConfig
from cmmd_dist.model.mmvae import MMVAE
from cmmd_dist.model.mvae import MVAE
from cmmd_dist.model.vcca import VCCA

__all__ = ["make_model"]


def make_model(cfg: CMMDConfig, params: BaselineConfig | None = None) -> nn.Module:
    """CMMD (``params`` None or kind 'cmmd') or the baseline of ``params.kind`` over the networks of ``cfg``."""
    kind = "cmmd" if params is None else params.kind
    classes = {"cmmd": None, "vcca": VCCA, "mvae": MVAE, "mmvae": MMVAE, "mx_o": MxO}
    if kind not in classes:
        raise ValueError(f"unknown model kind {kind!r}: use one of {sorted(classes)}")
    return CMMD(cfg) if kind == "cmmd" else classes[kind](cfg, params)
