"""mst (MNIST-SVHN-Text, Sutter et al. 2020): mnist-svhn plus a generated Text modality.

Text: 8 characters, all blank except the digit's English word ("zero" .. "nine") at a random start
position, one-hot over a 71-symbol alphabet (blank first). The alphabet has the size of Sutter et
al.'s; its order is ours. Scenarios: every non-empty subset of {mnist, svhn, text} observed. The spec asks
for the coherence figure (``cmmd_dist.evaluation.coherence``): an MLP judges MNIST, conv nets SVHN and text.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np

from cmmd_dist.datasets.converters.base import Converted
from cmmd_dist.datasets.converters.svhn import MNIST, SVHN, paired_mnist_svhn
from cmmd_dist.datasets.spec import DatasetBundle, DatasetSpec, ModalitySpec, Split

__all__ = ["ALPHABET", "TEXT_LENGTH", "DIGIT_WORDS", "MST_SPEC", "text_one_hot", "decode_text", "convert_mst"]

ALPHABET = " abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-,;.!?:'"
TEXT_LENGTH = 8
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
assert len(ALPHABET) == 71

_NAMES = ("mnist", "svhn", "text")
MST_SPEC = DatasetSpec(
    name="mst",
    modalities=(MNIST, SVHN, ModalitySpec("text", (TEXT_LENGTH, len(ALPHABET)), "categorical")),
    label_kind="classes",
    num_classes=10,
    scenarios={"+".join(obs): obs for k in (1, 2, 3) for obs in combinations(_NAMES, k)},
    default_scenario="mnist",
    coherence={"mnist": "mlp", "svhn": "conv", "text": "conv"},  # unimodal classifiers judge generated modalities
)


def text_one_hot(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, 8, 71) float32 one-hot strings: the label's word at a random start, blanks elsewhere."""
    out = np.zeros((len(labels), TEXT_LENGTH, len(ALPHABET)), dtype=np.float32)
    out[:, :, 0] = 1.0
    for i, c in enumerate(labels):
        word = DIGIT_WORDS[int(c)]
        start = int(rng.integers(0, TEXT_LENGTH - len(word) + 1))
        for j, ch in enumerate(word):
            out[i, start + j, 0] = 0.0
            out[i, start + j, ALPHABET.index(ch)] = 1.0
    return out


def decode_text(one_hot: np.ndarray) -> str:
    return "".join(ALPHABET[i] for i in one_hot.argmax(axis=-1))


def convert_mst(source: str | Path | None = None, seed: int = 0, limit: int | None = None) -> Converted:
    parts, inputs, rng = paired_mnist_svhn(source, seed, limit, "mst")
    splits = {k: Split(arrays={"mnist": x, "svhn": s, "text": text_one_hot(y, rng)}, labels=y) for k, (x, s, y) in parts.items()}
    return Converted(bundle=DatasetBundle(spec=MST_SPEC, **splits), inputs=inputs)
