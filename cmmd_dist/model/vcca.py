"""VCCA (Wang et al. 2017, variational CCA): one encoder q(z | x_o) on the observed view, decoders for all views.

Objective (minimised, per row, means over the batch): REC + beta * KL with
REC = -E_q[ sum over every modality (observed and missing) of log p(x | z) ] (S reparameterised samples)
and KL = KL(q(z | x_o) || N(0, I)) in closed form. The private-variable variant (VCCA-private) is not built.
"""

from __future__ import annotations

import torch

from cmmd_dist.model.baselines import BaselineConfig, MultimodalVAE
from cmmd_dist.model.cmmd import CMMDConfig, ConditionalPrior
from cmmd_dist.model.loss import gaussian_kl

__all__ = ["VCCA"]


class VCCA(MultimodalVAE):
    """Shared-latent VCCA: the encoder reads the observed modalities only, so test-time inference is the
    training posterior itself."""

    def __init__(self, cfg: CMMDConfig, params: BaselineConfig | None = None):
        super().__init__(cfg, params or BaselineConfig("vcca"))
        self.encoder = ConditionalPrior(cfg.observed, dict(cfg.feature_nets), cfg.encoder_hidden, cfg.zdim,
                                        cfg.dropout)

    def infer_observed(self, obs):
        return self.encoder(obs)

    def joint_posterior(self, x):
        return self.encoder(x)

    def elbo_terms(self, batch: dict, n_samples: int):
        mu, logvar = self.encoder(batch["obs"])
        z = self.sample(mu, logvar, n_samples)
        rec = -self.log_likelihood(z, self.inputs(batch), [m.name for m in self.modalities]).mean()
        kl = gaussian_kl(mu, logvar, torch.zeros_like(mu), torch.zeros_like(logvar)).sum(-1).mean()
        return rec + self.params.beta * kl, {"rec": rec, "kl": kl}
