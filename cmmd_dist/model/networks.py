"""Building blocks: softplus MLPs, convolutional feature nets and decoders (paper tables H3-H5)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLP", "ImageFeatureNet", "TextFeatureNet", "ImageDecoderNet", "TextDecoderNet", "feature_net", "conv_decoder"]


class MLP(nn.Module):
    """Linear layers with softplus and dropout after every hidden layer; ``out_dim`` None ends on the last hidden."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.Softplus()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        self.net = nn.Sequential(*layers)
        self.out_dim = width
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                # Glorot init (the reference Theano code's): torch's default shrinks the signal through
                # softplus layers and leaves the classifier on a long plateau at chance
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _image_chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 2:
        return (1, shape[0], shape[1])
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    raise ValueError(f"conv nets need an image shape (H, W) or (C, H, W), got {shape}")


class ImageFeatureNet(nn.Module):
    """Table H3 conv stack (SVHN); 28x28 images are zero-padded to 32x32 first. Output: 128 features."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        c, h, w = _image_chw(shape)
        if (h, w) not in ((28, 28), (32, 32)):
            raise ValueError(f"conv feature net supports 28x28 or 32x32 images, got {h}x{w}")
        self.chw = (c, h, w)
        self.pad = (32 - h) // 2
        self.net = nn.Sequential(
            nn.Conv2d(c, 32, 4, 2, 1), nn.Softplus(),
            nn.Conv2d(32, 64, 4, 2, 1), nn.Softplus(),
            nn.Conv2d(64, 64, 4, 2, 1), nn.Softplus(),
            nn.Conv2d(64, 128, 4, 2, 0), nn.Softplus(),
        )
        self.out_dim = 128

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.chw)
        if self.pad:
            x = nn.functional.pad(x, (self.pad,) * 4)
        return self.net(x).flatten(1)


class TextFeatureNet(nn.Module):
    """Table H5 conv stack over one-hot text (L, A), channels = alphabet. Output: 128 features."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        if len(shape) != 2:
            raise ValueError(f"text feature net needs shape (length, alphabet), got {shape}")
        length, alphabet = shape
        self.net = nn.Sequential(
            nn.Conv1d(alphabet, 128, 1, 1, 0), nn.Softplus(),
            nn.Conv1d(128, 128, 4, 2, 1), nn.Softplus(),
            nn.Conv1d(128, 128, 4, 2, 0), nn.Softplus(),
        )
        with torch.no_grad():
            self.out_dim = int(self.net(torch.zeros(1, alphabet, length)).numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.transpose(1, 2)).flatten(1)


class ImageDecoderNet(nn.Module):
    """Table H3 decoder: linear to 128, then transposed convs to (k*C, 32, 32); cropped back to 28x28 if needed."""

    def __init__(self, in_dim: int, shape: tuple[int, ...], n_params: int):
        super().__init__()
        c, h, w = _image_chw(shape)
        if (h, w) not in ((28, 28), (32, 32)):
            raise ValueError(f"conv decoder supports 28x28 or 32x32 images, got {h}x{w}")
        self.c, self.h, self.w, self.k = c, h, w, n_params
        self.fc = nn.Sequential(nn.Linear(in_dim, 128), nn.Softplus())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 4, 1, 0), nn.Softplus(),
            nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.Softplus(),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.Softplus(),
            nn.ConvTranspose2d(32, c * n_params, 4, 2, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(self.fc(z).reshape(z.shape[0], 128, 1, 1))  # (B, k*C, 32, 32)
        off = (32 - self.h) // 2
        out = out[:, :, off : off + self.h, off : off + self.w]
        return out.reshape(z.shape[0], self.k, self.c * self.h * self.w).flatten(1)


class TextDecoderNet(nn.Module):
    """Table H5 decoder: linear to 128, transposed convs, 1x1 conv to the alphabet; output flat (B, L*A) logits."""

    def __init__(self, in_dim: int, shape: tuple[int, ...]):
        super().__init__()
        length, alphabet = shape
        self.length, self.alphabet = length, alphabet
        self.fc = nn.Sequential(nn.Linear(in_dim, 128), nn.Softplus())
        self.net = nn.Sequential(
            nn.ConvTranspose1d(128, 128, 4, 1, 0), nn.Softplus(),
            nn.ConvTranspose1d(128, 128, 4, 2, 1), nn.Softplus(),
            nn.Conv1d(128, alphabet, 1, 1, 0),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(self.fc(z).unsqueeze(-1))  # (B, A, 8)
        if out.shape[-1] < self.length:
            out = nn.functional.pad(out, (0, self.length - out.shape[-1]))
        out = out[..., : self.length]
        return out.transpose(1, 2).flatten(1)


def feature_net(kind: str, shape: tuple[int, ...]) -> nn.Module:
    """The prior's per-modality feature net: 'mlp' flattens; 'conv' picks the image or text conv stack."""
    if kind == "mlp":
        net = nn.Flatten()
        net.out_dim = int(math.prod(shape))  # type: ignore[attr-defined]
        return net
    if kind == "conv":
        if len(shape) == 2 and shape[0] < shape[1] and shape[1] > 32:  # (length, alphabet) text
            return TextFeatureNet(shape)
        return ImageFeatureNet(shape)
    raise ValueError(f"unknown feature net {kind!r}: use 'mlp' or 'conv'")


def conv_decoder(in_dim: int, shape: tuple[int, ...], n_params: int, likelihood: str) -> nn.Module:
    """A conv decoder producing ``n_params`` flat parameter blocks for a modality of ``shape``."""
    if likelihood == "categorical":
        return TextDecoderNet(in_dim, shape)
    return ImageDecoderNet(in_dim, shape, n_params)
