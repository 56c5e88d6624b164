"""MMVAE (Shi et al. 2019): one Gaussian expert q_m(z | x_m) per modality, joint posterior = their uniform
mixture q_MoE(z | X) = (1/M) sum_m q_m(z | x_m); prior N(0, I); decoders for every modality from z.

Objectives (maximised, stratified over the experts; we minimise their negative mean over rows), with
K reparameterised samples z_m^k ~ q_m(z | x_m) and log w(z) = sum_d log p(x_d | z) + log p(z) - log q_MoE(z | X):
- ``elbo``: (1/M) sum_m (1/K) sum_k log w(z_m^k)                   (the paper's eq. 3, Monte Carlo)
- ``iwae``: (1/M) sum_m log (1/K) sum_k w(z_m^k)                    (eq. 4, plain IWAE gradients, no DReG)
At K = 1 both are the same number. Reported terms: ``rec`` = -(1/M) sum_m mean_k sum_d log p(x_d | z_m^k)
and ``kl`` = the same average of log q_MoE(z) - log p(z) (the ELBO's Monte Carlo KL).
The collapse curve reads the mixture's moment-matched Gaussian (its per-dimension mean and variance).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cmmd_dist.model.baselines import BaselineConfig, MultimodalVAE, gaussian_log_prob, standard_normal_log_prob
from cmmd_dist.model.cmmd import CMMDConfig

__all__ = ["MMVAE", "mixture_moments"]


def mixture_moments(mus: list[torch.Tensor], logvars: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, log-variance) per dimension of the uniform mixture of diagonal Gaussians (one: itself)."""
    if len(mus) == 1:
        return mus[0], logvars[0]
    mu = torch.stack(mus).mean(0)
    second = torch.stack([torch.exp(lv) + m**2 for m, lv in zip(mus, logvars)]).mean(0)
    return mu, torch.log((second - mu**2).clamp_min(1e-12))


class MMVAE(MultimodalVAE):
    """Mixture-of-experts multimodal VAE; test-time latent: the mean of the observed experts' mixture."""

    def __init__(self, cfg: CMMDConfig, params: BaselineConfig | None = None):
        super().__init__(cfg, params or BaselineConfig("mmvae"))
        self.experts = nn.ModuleDict({m.name: self.expert(m) for m in self.modalities})

    def mixture(self, x: dict[str, torch.Tensor], names) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        params = [self.experts[n](x) for n in names]
        return [p[0] for p in params], [p[1] for p in params]

    def infer_observed(self, obs):
        return mixture_moments(*self.mixture(obs, [m.name for m in self.cfg.observed]))

    def joint_posterior(self, x):
        return mixture_moments(*self.mixture(x, list(self.experts)))

    def log_weights(self, batch: dict, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log w, log-likelihood, log q_MoE - log p), each (M, K, B): K samples from each expert."""
        x = self.inputs(batch)
        names = list(self.experts)
        mus, logvars = self.mixture(x, names)
        lw, lpx, kl = [], [], []
        for mu, logvar in zip(mus, logvars):
            z = self.sample(mu, logvar, k)  # (K, B, D)
            log_q = torch.stack([gaussian_log_prob(z, m2, lv2) for m2, lv2 in zip(mus, logvars)])
            log_q_moe = torch.logsumexp(log_q, 0) - math.log(len(names))
            ll = self.log_likelihood(z, x, names)
            log_ratio = log_q_moe - standard_normal_log_prob(z)
            lw.append(ll - log_ratio)
            lpx.append(ll)
            kl.append(log_ratio)
        return torch.stack(lw), torch.stack(lpx), torch.stack(kl)

    def elbo_terms(self, batch: dict, n_samples: int):
        k = self.params.mmvae_k
        lw, lpx, log_ratio = self.log_weights(batch, k)
        if self.params.mmvae_objective == "iwae":
            bound = (torch.logsumexp(lw, 1) - math.log(k)).mean(0)  # (B,)
        else:
            bound = lw.mean((0, 1))
        return -bound.mean(), {"rec": -lpx.mean((0, 1)).mean(), "kl": log_ratio.mean((0, 1)).mean()}
