"""Decoder likelihood heads: map flat parameters to a per-row log-likelihood and a mean.

Each head knows how many flat parameter blocks it needs per element of its modality.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Likelihood", "GaussianLikelihood", "BernoulliLikelihood", "CategoricalLikelihood", "make_likelihood"]

_LOG_2PI = math.log(2 * math.pi)


class Likelihood(nn.Module, ABC):
    """Base: ``n_params`` flat blocks of size ``size`` per row; ``log_prob`` sums over the modality's elements."""

    n_params: int = 1

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)
        self.size = int(math.prod(shape))

    @abstractmethod
    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | params) summed over the modality; params (..., n_params*size), x (..., size)."""

    @abstractmethod
    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The mean of the distribution, flat (..., size)."""


class GaussianLikelihood(Likelihood):
    """Diagonal Gaussian; learned variance (2 blocks: mean, log-variance) or a fixed one (1 block)."""

    def __init__(self, shape: tuple[int, ...], learned_variance: bool = True, fixed_variance: float = 1.0):
        super().__init__(shape)
        self.learned = learned_variance
        self.n_params = 2 if learned_variance else 1
        self.fixed_logvar = math.log(fixed_variance)

    def _split(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.learned:
            mu, logvar = params.split(self.size, dim=-1)
            # bounded so that a few perfectly predicted pixels cannot drive the likelihood to infinity
            return mu, logvar.clamp(-7.0, 5.0)
        return params, torch.full_like(params, self.fixed_logvar)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self._split(params)
        return -0.5 * (_LOG_2PI + logvar + (x - mu) ** 2 * torch.exp(-logvar)).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self._split(params)[0]


class BernoulliLikelihood(Likelihood):
    """Independent Bernoulli per element; parameters are logits."""

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -F.binary_cross_entropy_with_logits(params, x.expand(params.shape), reduction="none").sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params)


class CategoricalLikelihood(Likelihood):
    """One categorical per position over the LAST axis of the shape (e.g. text (8, 71)); x is one-hot."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__(shape)
        if len(shape) < 2:
            raise ValueError(f"categorical likelihood needs shape (positions..., alphabet), got {shape}")
        self.alphabet = shape[-1]

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logits = params.unflatten(-1, (-1, self.alphabet))
        onehot = x.unflatten(-1, (-1, self.alphabet))
        return (F.log_softmax(logits, dim=-1) * onehot).sum((-1, -2))

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return F.softmax(params.unflatten(-1, (-1, self.alphabet)), dim=-1).flatten(-2)


def make_likelihood(name: str, shape: tuple[int, ...], learned_variance: bool = True, fixed_variance: float = 1.0) -> Likelihood:
    if name == "gaussian":
        return GaussianLikelihood(shape, learned_variance, fixed_variance)
    if name == "bernoulli":
        return BernoulliLikelihood(shape)
    if name == "categorical":
        return CategoricalLikelihood(shape)
    raise ValueError(f"unknown likelihood {name!r}: use gaussian, bernoulli or categorical")
