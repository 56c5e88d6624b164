"""The paper's baselines as models of the platform: shared parts, M-x_o, and the factory by kind.

Every model the loop trains (CMMD aside, whose loss is ``cmmd_loss``) answers the same calls:

- ``model(batch, w, world_size=1, with_classifier=True) -> (loss, terms)``: the objective, minimised, with
  the detached terms ``rec``, ``kl``, ``mmd`` (always 0 here), ``ce``, ``loss``. Calling the module itself
  keeps DDP's gradient hooks in the path.
- ``predict(obs)``: from the observed modalities only, the latent ``z`` (and ``logvar``), class
  probabilities of the classifier on that latent, and the mean of each generated missing modality.
- ``collapse_params(batch)``: (mu_q, logvar_q, mu_p, logvar_p) of the joint posterior and the prior, for the
  collapse curve of Fig. 2; None where the model has no posterior (M-x_o).

The multimodal VAEs (VCCA, MVAE, MMVAE) are unsupervised; the paper classifies from their latents in a
second step. Here that classifier is trained in the same loop on the DETACHED latent mean of the observed
modalities (``cls_weight * CE``, as CMMD's): it reads the representation without shaping it, which is the
two-step protocol run concurrently. Their priors are N(0, I) and their decoders read z alone.
"""

from __future__ import annotations

import abc
import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from cmmd_dist.model.cmmd import CMMDConfig, ConditionalPrior, ModalityDef
from cmmd_dist.model.likelihoods import make_likelihood
from cmmd_dist.model.loss import LossWeights, classification_loss
from cmmd_dist.model.networks import MLP, conv_decoder

__all__ = ["BASELINE_KINDS", "BaselineConfig", "MultimodalVAE", "MxO", "product_of_experts",
           "standard_normal_log_prob", "gaussian_log_prob"]

BASELINE_KINDS = ("vcca", "mvae", "mmvae", "mx_o")
_LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class BaselineConfig:
    """A baseline's own hyperparameters (the networks come from ``CMMDConfig``)."""

    kind: Literal["vcca", "mvae", "mmvae", "mx_o"]
    beta: float = 1.0  # weight of the KL in VCCA's and MVAE's ELBOs
    mvae_subsets: int = 0  # MVAE: random sub-ELBOs of 2..M-1 modalities per step, beside joint and unimodal
    mmvae_objective: Literal["elbo", "iwae"] = "elbo"
    mmvae_k: int = 1  # MMVAE: samples per expert (the IWAE's K)

    def to_dict(self) -> dict:
        return asdict(self)


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag exp(logvar)) summed over the last axis."""
    return -0.5 * (_LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar)).sum(-1)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last axis."""
    return -0.5 * (_LOG_2PI + z**2).sum(-1)


def product_of_experts(mus: list[torch.Tensor], logvars: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian experts multiplied with the prior expert N(0, I) (Wu & Goodman 2018): precisions add."""
    precision = torch.ones_like(mus[0])  # the prior expert's
    weighted = torch.zeros_like(mus[0])
    for mu, logvar in zip(mus, logvars):
        t = torch.exp(-logvar)
        precision = precision + t
        weighted = weighted + mu * t
    return weighted / precision, -torch.log(precision)


def _ce_term(classifier: nn.Module, latent: torch.Tensor, batch: dict, cfg: CMMDConfig, w: LossWeights,
             world_size: int, with_classifier: bool) -> torch.Tensor:
    """The classifier's cross-entropy on a detached latent (as CMMD's: sum reduction scaled by world size);
    without labels (pretraining) a zero that keeps the classifier in the graph for DDP."""
    if not with_classifier:
        return torch.stack([p.sum() for p in classifier.parameters()]).sum() * 0.0
    ce = classification_loss(classifier(latent.detach()), batch["y"], cfg.multilabel, w.ce_reduction)
    return ce * world_size if w.ce_reduction == "sum" else ce


class OwnObjective:
    """The objective interface (``CMMD.objective``) of a model whose forward pass is its own objective: no MMD,
    nothing to gather, no early-gather hook."""

    def objective(self, forward, batch: dict, w: LossWeights, gather=None, world_size: int = 1,
                  with_classifier: bool = True, on_latents=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return forward(batch, w, world_size=world_size, with_classifier=with_classifier)


class MultimodalVAE(OwnObjective, nn.Module, abc.ABC):
    """Shared parts: every modality (observed, then missing) has a likelihood and a decoder from z; a
    classifier reads the latent. Subclasses define the encoders and ``elbo_terms`` / the inference (the three
    abstract methods: a subclass that leaves one out cannot be built)."""

    def __init__(self, cfg: CMMDConfig, params: BaselineConfig):
        super().__init__()
        if not cfg.observed:
            raise ValueError(f"{params.kind} needs at least one observed modality")
        self.cfg, self.params = cfg, params
        self.modalities: tuple[ModalityDef, ...] = cfg.observed + cfg.missing
        self.likelihoods = nn.ModuleDict({m.name: make_likelihood(m.likelihood, m.shape, cfg.learned_variance,
                                                                  cfg.fixed_variance) for m in self.modalities})
        dec_kinds = dict(cfg.decoder_nets)
        self.decoders = nn.ModuleDict()
        for m in self.modalities:
            n_params = self.likelihoods[m.name].n_params
            if dec_kinds.get(m.name, "mlp") == "conv":
                self.decoders[m.name] = conv_decoder(cfg.zdim, m.shape, n_params, m.likelihood)
            else:
                self.decoders[m.name] = MLP(cfg.zdim, cfg.decoder_hidden, n_params * m.size, cfg.dropout)
        self.classifier = MLP(cfg.zdim, cfg.classifier_hidden, cfg.num_classes, cfg.dropout)

    def expert(self, m: ModalityDef) -> ConditionalPrior:
        """A Gaussian encoder q(z | x_m) of one modality (its feature net, then the encoder MLP)."""
        return ConditionalPrior((m,), dict(self.cfg.feature_nets), self.cfg.encoder_hidden, self.cfg.zdim,
                                self.cfg.dropout)

    @staticmethod
    def inputs(batch: dict) -> dict[str, torch.Tensor]:
        """Every modality of a training batch by name (observed and missing)."""
        return {**batch["obs"], **batch["mis"]}

    def log_likelihood(self, z: torch.Tensor, x: dict[str, torch.Tensor], names) -> torch.Tensor:
        """sum over ``names`` of log p(x_name | z); z (..., B, D) -> (..., B)."""
        lead = z.shape[:-1]
        z2 = z.reshape(-1, z.shape[-1])
        total = z.new_zeros(lead)
        for name in names:
            params = self.decoders[name](z2).reshape(*lead, -1)
            total = total + self.likelihoods[name].log_prob(params, x[name].flatten(1))
        return total

    def sample(self, mu: torch.Tensor, logvar: torch.Tensor, n: int) -> torch.Tensor:
        """n reparameterised samples, (n, B, D)."""
        return mu + torch.exp(0.5 * logvar) * torch.randn((n, *mu.shape), device=mu.device, dtype=mu.dtype)

    # -- what subclasses define ------------------------------------------------------------------
    @abc.abstractmethod
    def infer_observed(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The Gaussian latent (mu, logvar) from the observed modalities alone (test time)."""

    @abc.abstractmethod
    def joint_posterior(self, x: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The (Gaussian, or moment-matched) posterior given every modality, for the collapse curve."""

    @abc.abstractmethod
    def elbo_terms(self, batch: dict, n_samples: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(objective to minimise, its terms rec / kl) of the unsupervised model, means over rows."""

    # -- the platform calls -------------------------------------------------------------------------
    def forward(self, batch: dict, w: LossWeights, world_size: int = 1,
                with_classifier: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, terms = self.elbo_terms(batch, w.n_samples)
        mu_o, _ = self.infer_observed(batch["obs"])
        ce = _ce_term(self.classifier, mu_o, batch, self.cfg, w, world_size, with_classifier)
        total = loss + w.cls_weight * ce
        terms = {**terms, "mmd": total.new_zeros(()), "ce": ce, "loss": total}
        return total, {k: v.detach() for k, v in terms.items()}

    @torch.no_grad()
    def predict(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mu, logvar = self.infer_observed(obs)
        logits = self.classifier(mu)
        probs = torch.sigmoid(logits) if self.cfg.multilabel else torch.softmax(logits, -1)
        gen = {m.name: self.likelihoods[m.name].mean(self.decoders[m.name](mu)).reshape(-1, *m.shape)
               for m in self.cfg.missing}
        return {"z": mu, "logvar": logvar, "probs": probs, "generated": gen}

    @torch.no_grad()
    def collapse_params(self, batch: dict) -> tuple[torch.Tensor, ...]:
        mu, logvar = self.joint_posterior(self.inputs(batch))
        return mu, logvar, torch.zeros_like(mu), torch.zeros_like(logvar)


class MxO(OwnObjective, nn.Module):
    """M-x_o as a model of the platform: CMMD's prior network and classifier trained on x_o and c alone
    (the mean cross-entropy of its classifier on the prior's mean); ``train.baseline`` trains it beside CMMD."""

    def __init__(self, cfg: CMMDConfig, params: BaselineConfig | None = None):
        super().__init__()
        self.cfg, self.params = cfg, params or BaselineConfig("mx_o")
        self.prior = ConditionalPrior(cfg.observed, dict(cfg.feature_nets), cfg.prior_hidden, cfg.zdim, cfg.dropout)
        self.classifier = MLP(cfg.zdim, cfg.classifier_hidden, cfg.num_classes, cfg.dropout)

    def forward(self, batch: dict, w: LossWeights | None = None, world_size: int = 1,
                with_classifier: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mu, logvar = self.prior(batch["obs"])
        logits = self.classifier(mu)
        # the unused log-variance head (and, without labels, everything) stays in the graph with a zero
        # gradient: DDP without find_unused_parameters waits for a gradient of every parameter
        unused = logvar.sum() * 0.0
        if with_classifier:
            ce = classification_loss(logits, batch["y"], self.cfg.multilabel, "mean") + unused
        else:
            ce = logits.sum() * 0.0 + unused
        zero = ce.new_zeros(())
        terms = {"rec": zero, "kl": zero, "mmd": zero, "ce": ce, "loss": ce}
        return ce, {k: v.detach() for k, v in terms.items()}

    @torch.no_grad()
    def predict(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mu, logvar = self.prior(obs)
        logits = self.classifier(mu)
        probs = torch.sigmoid(logits) if self.cfg.multilabel else torch.softmax(logits, -1)
        return {"z": mu, "logvar": logvar, "probs": probs, "generated": {}}

    def collapse_params(self, batch: dict) -> None:
        return None
