"""The CMMD objective (minimised): L = REC + lam*KL + (1-lam)*mmd_weight*MMD + cls_weight*CE.

REC and KL are means over rows; CE is a batch sum (reference) or mean. At lam = 1 the MMD is not
computed (reported as 0): the plain conditional ELBO, at its own cost. Without the classifier
(pretraining) CE is 0 and the classifier's gradient is zero. Under data parallelism
``world_size`` scales the sum-reduced CE so that DDP's gradient average equals the gradient of
the global-batch sum; the MMD sees the global batch through ``gather``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn import functional as F

from cmmd_dist.model.mmd import Gather, mmd

__all__ = ["LossWeights", "CMMDOutput", "gaussian_kl", "classification_loss", "cmmd_loss"]


@dataclass
class CMMDOutput:
    """What CMMD's forward pass hands its objective (defined here so that ``cmmd`` imports the loss, not
    the other way round)."""

    mu_q: torch.Tensor  # (B, D)
    logvar_q: torch.Tensor
    mu_p: torch.Tensor
    logvar_p: torch.Tensor
    z_q: torch.Tensor  # (S, B, D) posterior samples
    z_p: torch.Tensor  # (S, B, D) prior samples
    dec_params: dict[str, torch.Tensor]  # name -> (S, B, n_params*size)
    logits: torch.Tensor  # (B, C) from the classifier on mu_p


@dataclass(frozen=True)
class LossWeights:
    lam: float = 0.4
    mmd_weight: float = 1000.0
    cls_weight: float = 10.0
    ce_reduction: Literal["sum", "mean"] = "sum"
    n_samples: int = 1

    @property
    def mmd_scale(self) -> float:
        """The MMD's weight in the loss, (1 - lam) * mmd_weight; 0 (lam = 1): the MMD is not computed."""
        return (1.0 - self.lam) * self.mmd_weight


def gaussian_kl(mu_q, logvar_q, mu_p, logvar_p) -> torch.Tensor:
    """Element-wise KL(N(mu_q, s2_q) || N(mu_p, s2_p)) of diagonal Gaussians, shape (B, D)."""
    return 0.5 * (logvar_p - logvar_q + (torch.exp(logvar_q) + (mu_q - mu_p) ** 2) * torch.exp(-logvar_p) - 1.0)


def classification_loss(logits: torch.Tensor, y: torch.Tensor, multilabel: bool, reduction: str) -> torch.Tensor:
    """Cross-entropy per row (softmax) or summed over labels (sigmoid), reduced over the batch."""
    if multilabel:
        per_row = F.binary_cross_entropy_with_logits(logits, y.float(), reduction="none").sum(-1)
    else:
        per_row = F.cross_entropy(logits, y.long(), reduction="none")
    return per_row.sum() if reduction == "sum" else per_row.mean()


def cmmd_loss(
    model,  # a cmmd_dist.model.cmmd.CMMD
    out: CMMDOutput,
    batch: dict,
    w: LossWeights,
    gather: Gather | None = None,
    world_size: int = 1,
    with_classifier: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(total loss, detached terms {'rec','kl','mmd','ce','loss'}) of one batch."""
    rec = torch.zeros((), device=out.mu_q.device)
    for m in model.cfg.missing:
        x = batch["mis"][m.name].flatten(1)
        rec = rec - model.likelihoods[m.name].log_prob(out.dec_params[m.name], x).mean()
    kl = gaussian_kl(out.mu_q, out.logvar_q, out.mu_p, out.logvar_p).sum(-1).mean()
    d = out.z_q.shape[-1]
    # lam = 1 is the plain conditional ELBO: no MMD computed (every rank has the same weights, so no rank gathers)
    mmd_term = mmd(out.z_q.reshape(-1, d), out.z_p.reshape(-1, d), gather) if w.mmd_scale else out.z_q.new_zeros(())
    if with_classifier:
        ce = classification_loss(out.logits, batch["y"], model.cfg.multilabel, w.ce_reduction)
        if w.ce_reduction == "sum":
            ce = ce * world_size
    else:
        # no classifier term, but the classifier stays in the graph with a zero gradient: DDP (without
        # find_unused_parameters) waits for a gradient of every parameter the forward pass used
        # (through the weights, not the logits: 0 * a non-finite logit would poison the loss)
        ce = torch.stack([p.sum() for p in model.classifier.parameters()]).sum() * 0.0
    total = rec + w.lam * kl + w.mmd_scale * mmd_term + w.cls_weight * ce
    terms = {"rec": rec, "kl": kl, "mmd": mmd_term, "ce": ce, "loss": total}
    return total, {k: v.detach() for k, v in terms.items()}
