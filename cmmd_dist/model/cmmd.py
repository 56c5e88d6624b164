"""The CMMD module: encoder q(z|x_o,x_m,c), conditional prior p(z|x_o), decoders p(x_m|z,x_o), classifier p(c|mu_p).

Batches are dicts of tensors: ``{"obs": {name: (B, *shape)}, "mis": {name: (B, *shape)}, "y": labels}``
with int64 (B,) labels for classes or float (B, C) multi-hot labels for multi-label data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from cmmd_dist.model.likelihoods import Likelihood, make_likelihood
from cmmd_dist.model.loss import CMMDOutput, LossWeights, cmmd_loss
from cmmd_dist.model.networks import MLP, conv_decoder, feature_net

__all__ = ["ModalityDef", "CMMDConfig", "CMMD", "CMMDOutput"]


@dataclass(frozen=True)
class ModalityDef:
    """A modality as the model sees it: name, shape of one example, likelihood name."""

    name: str
    shape: tuple[int, ...]
    likelihood: str = "gaussian"

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass(frozen=True)
class CMMDConfig:
    """Everything the networks need; built from the pydantic configs by the training code."""

    observed: tuple[ModalityDef, ...]
    missing: tuple[ModalityDef, ...]
    num_classes: int
    multilabel: bool = False
    zdim: int = 50
    encoder_hidden: tuple[int, ...] = (2500, 2500, 2500)
    prior_hidden: tuple[int, ...] = (1024, 1024, 1024)
    decoder_hidden: tuple[int, ...] = (1024, 1024, 1024)
    classifier_hidden: tuple[int, ...] = (50, 50)
    dropout: float = 0.2
    decoder_uses_xo: bool = True
    learned_variance: bool = True
    fixed_variance: float = 1.0
    feature_nets: tuple[tuple[str, str], ...] = ()  # (modality, "mlp"|"conv")
    decoder_nets: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict:
        """Plain JSON-ready form (what checkpoints and registered models store)."""
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CMMDConfig":
        """Inverse of ``to_dict`` (lists from JSON become tuples again)."""
        d = dict(d)
        for key in ("observed", "missing"):
            d[key] = tuple(ModalityDef(m["name"], tuple(m["shape"]), m["likelihood"]) for m in d[key])
        for key in ("encoder_hidden", "prior_hidden", "decoder_hidden", "classifier_hidden"):
            d[key] = tuple(d[key])
        for key in ("feature_nets", "decoder_nets"):
            d[key] = tuple(tuple(p) for p in d[key])
        return cls(**d)


class GaussianMLP(nn.Module):
    """An MLP trunk with two linear heads: mean and log-variance of a diagonal Gaussian."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], zdim: int, dropout: float):
        super().__init__()
        self.trunk = MLP(in_dim, hidden, None, dropout)
        self.mu = nn.Linear(self.trunk.out_dim, zdim)
        self.logvar = nn.Linear(self.trunk.out_dim, zdim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.mu(h), self.logvar(h).clamp(-12.0, 8.0)


class ConditionalPrior(nn.Module):
    """p(z | x_o): per-modality feature nets, concatenated, then a Gaussian MLP."""

    def __init__(self, observed: tuple[ModalityDef, ...], kinds: dict[str, str], hidden, zdim, dropout):
        super().__init__()
        self.features = nn.ModuleDict({m.name: feature_net(kinds.get(m.name, "mlp"), m.shape) for m in observed})
        in_dim = sum(net.out_dim for net in self.features.values())
        self.gauss = GaussianMLP(in_dim, tuple(hidden), zdim, dropout)

    def forward(self, obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([net(obs[name]) for name, net in self.features.items()], dim=-1)
        return self.gauss(h)


class CMMD(nn.Module):
    """Conditional-prior multimodal model; see DESIGN.md section 1."""

    def __init__(self, cfg: CMMDConfig):
        super().__init__()
        if not cfg.observed:
            raise ValueError("CMMD needs at least one observed modality")
        self.cfg = cfg
        self.obs_dim = sum(m.size for m in cfg.observed)
        enc_in = self.obs_dim + sum(m.size for m in cfg.missing) + cfg.num_classes
        self.encoder = GaussianMLP(enc_in, cfg.encoder_hidden, cfg.zdim, cfg.dropout)
        self.prior = ConditionalPrior(cfg.observed, dict(cfg.feature_nets), cfg.prior_hidden, cfg.zdim, cfg.dropout)
        self.likelihoods = nn.ModuleDict(
            {m.name: make_likelihood(m.likelihood, m.shape, cfg.learned_variance, cfg.fixed_variance) for m in cfg.missing}
        )
        dec_kinds = dict(cfg.decoder_nets)
        self.decoders = nn.ModuleDict()
        for m in cfg.missing:
            lik: Likelihood = self.likelihoods[m.name]
            n_out = lik.n_params * m.size
            if dec_kinds.get(m.name, "mlp") == "conv":
                self.decoders[m.name] = conv_decoder(cfg.zdim, m.shape, lik.n_params, m.likelihood)
            else:
                dec_in = cfg.zdim + (self.obs_dim if cfg.decoder_uses_xo else 0)
                self.decoders[m.name] = MLP(dec_in, cfg.decoder_hidden, n_out, cfg.dropout)
        self.classifier = MLP(cfg.zdim, cfg.classifier_hidden, cfg.num_classes, cfg.dropout)

    # -- pieces -------------------------------------------------------------------------------
    def flat_obs(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([obs[m.name].flatten(1) for m in self.cfg.observed], dim=-1)

    def label_input(self, y: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        """One-hot (or multi-hot) label for the encoder; zeros when the label is withheld (pretraining)."""
        if y is None:
            return torch.zeros(batch, self.cfg.num_classes, device=device)
        if self.cfg.multilabel:
            return y.float()
        return F.one_hot(y.long(), self.cfg.num_classes).float()

    def decode(self, z: torch.Tensor, flat_obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Decoder parameters for every missing modality; z (..., B, D), flat_obs (B, obs_dim)."""
        out = {}
        lead = z.shape[:-1]
        z2 = z.reshape(-1, z.shape[-1])
        for m in self.cfg.missing:
            dec = self.decoders[m.name]
            if isinstance(dec, MLP) and self.cfg.decoder_uses_xo:
                xo = flat_obs.expand(*lead, -1).reshape(z2.shape[0], -1)
                params = dec(torch.cat([z2, xo], dim=-1))
            else:
                params = dec(z2)
            out[m.name] = params.reshape(*lead, -1)
        return out

    def encode(self, batch: dict, use_label: bool = True, flat_obs: torch.Tensor | None = None):
        """The posterior q(z | x_o, x_m, c): ``(mu_q, logvar_q)``; the label zeroed where ``use_label`` is false."""
        xo = self.flat_obs(batch["obs"]) if flat_obs is None else flat_obs
        # no missing modality (e.g. mst with all three observed): no decoder, REC = 0
        xm = torch.cat([batch["mis"][m.name].flatten(1) for m in self.cfg.missing] + [xo[:, :0]], dim=-1)
        c = self.label_input(batch.get("y") if use_label else None, xo.shape[0], xo.device)
        return self.encoder(torch.cat([xo, xm, c], dim=-1))

    def collapse_params(self, batch: dict) -> tuple[torch.Tensor, ...]:
        """``(mu_q, logvar_q, mu_p, logvar_p)``: the posterior on the full rows and the conditional prior, the
        interface every model of the platform shares for the collapse figures (``model.baselines``)."""
        mu_q, logvar_q = self.encode(batch)
        mu_p, logvar_p = self.prior(batch["obs"])
        return mu_q, logvar_q, mu_p, logvar_p

    def objective(self, forward: Callable, batch: dict, w: LossWeights, gather=None, world_size: int = 1,
                  with_classifier: bool = True, on_latents: Callable | None = None):
        """``(loss, detached terms)`` of one batch: the interface every model of the platform shares, so the
        loop needs no ``isinstance``. ``forward`` runs this module's forward pass (the module itself, or its
        DDP wrapper, whose forward must run for the gradients to be synchronised); without the classifier
        (pretraining) the label is withheld from the encoder too."""
        out = forward(batch, n_samples=w.n_samples, use_label=with_classifier, on_latents=on_latents)
        return cmmd_loss(self, out, batch, w, gather=gather, world_size=world_size, with_classifier=with_classifier)

    # -- full pass ----------------------------------------------------------------------------
    def forward(self, batch: dict, n_samples: int = 1, use_label: bool = True,
                on_latents: Callable[[torch.Tensor, torch.Tensor], None] | None = None) -> CMMDOutput:
        """``on_latents(z_q, z_p)`` is called as soon as both samples exist, before decoding (under data
        parallelism it starts the all-gather of the MMD's samples, which then overlaps the decoders)."""
        obs = batch["obs"]
        xo = self.flat_obs(obs)
        mu_q, logvar_q = self.encode(batch, use_label, xo)
        mu_p, logvar_p = self.prior(obs)
        eps_q = torch.randn((n_samples, *mu_q.shape), device=mu_q.device, dtype=mu_q.dtype)
        eps_p = torch.randn_like(eps_q)
        z_q = mu_q + torch.exp(0.5 * logvar_q) * eps_q
        z_p = mu_p + torch.exp(0.5 * logvar_p) * eps_p
        if on_latents is not None:
            on_latents(z_q, z_p)
        return CMMDOutput(
            mu_q=mu_q, logvar_q=logvar_q, mu_p=mu_p, logvar_p=logvar_p, z_q=z_q, z_p=z_p,
            dec_params=self.decode(z_q, xo), logits=self.classifier(mu_p),
        )

    @torch.no_grad()
    def predict(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Test-time use: latent mu_p(x_o), class probabilities, and the mean of each generated modality."""
        mu_p, logvar_p = self.prior(obs)
        logits = self.classifier(mu_p)
        probs = torch.sigmoid(logits) if self.cfg.multilabel else torch.softmax(logits, -1)
        params = self.decode(mu_p, self.flat_obs(obs))
        gen = {m.name: self.likelihoods[m.name].mean(params[m.name]).reshape(-1, *m.shape) for m in self.cfg.missing}
        return {"z": mu_p, "logvar": logvar_p, "probs": probs, "generated": gen}
