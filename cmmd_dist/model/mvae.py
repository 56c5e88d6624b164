"""MVAE (Wu & Goodman 2018): one Gaussian expert q(z | x_m) per modality, joint posterior = product of the
experts and the prior expert N(0, I).

Objective (minimised, means over rows): the sum of sub-ELBOs, each over a subset S of modalities with its
own product-of-experts posterior q_S and the reconstruction of S's modalities only:
    sum_S [ -E_{q_S}[ sum_{m in S} log p(x_m | z) ] + beta * KL(q_S || N(0, I)) ]
for S = every modality (joint), each single modality, and ``mvae_subsets`` random subsets of 2..M-1
modalities drawn per step (the paper's sub-sampling; with two modalities there is none to draw).
"""

from __future__ import annotations

import torch
from torch import nn

from cmmd_dist.model.baselines import BaselineConfig, MultimodalVAE, product_of_experts
from cmmd_dist.model.cmmd import CMMDConfig
from cmmd_dist.model.loss import gaussian_kl

__all__ = ["MVAE"]


class MVAE(MultimodalVAE):
    """Product-of-experts multimodal VAE; test-time inference is the product of the observed experts."""

    def __init__(self, cfg: CMMDConfig, params: BaselineConfig | None = None):
        super().__init__(cfg, params or BaselineConfig("mvae"))
        self.experts = nn.ModuleDict({m.name: self.expert(m) for m in self.modalities})

    def posterior(self, x: dict[str, torch.Tensor], names) -> tuple[torch.Tensor, torch.Tensor]:
        """q_S: the product of the experts of ``names`` and the prior expert."""
        params = [self.experts[n](x) for n in names]
        return product_of_experts([p[0] for p in params], [p[1] for p in params])

    def infer_observed(self, obs):
        return self.posterior(obs, [m.name for m in self.cfg.observed])

    def joint_posterior(self, x):
        return self.posterior(x, list(self.experts))

    def subsets(self) -> list[list[str]]:
        """This step's subsets: the joint, every single modality, then the random ones."""
        names = list(self.experts)
        out = [names] + ([[n] for n in names] if len(names) > 1 else [])
        if len(names) > 2:
            for _ in range(self.params.mvae_subsets):
                size = int(torch.randint(2, len(names), ()))
                out.append([names[i] for i in sorted(torch.randperm(len(names))[:size].tolist())])
        return out

    def elbo_terms(self, batch: dict, n_samples: int):
        x = self.inputs(batch)
        rec = kl = None
        for names in self.subsets():
            mu, logvar = self.posterior(x, names)
            r = -self.log_likelihood(self.sample(mu, logvar, n_samples), x, names).mean()
            k = gaussian_kl(mu, logvar, torch.zeros_like(mu), torch.zeros_like(logvar)).sum(-1).mean()
            rec, kl = (r, k) if rec is None else (rec + r, kl + k)
        return rec + self.params.beta * kl, {"rec": rec, "kl": kl}
