"""What every converter returns, and the source hash written into the manifest."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmmd_dist.datasets.spec import DatasetBundle

__all__ = ["Converted", "Converter", "hash_inputs", "take_first", "split_indices"]


@dataclass
class Converted:
    """A converter's output: the bundle and the source files it was made from."""

    bundle: DatasetBundle
    inputs: list[Path] = field(default_factory=list)
    source_note: str = ""  # for sources that are not files (scikit-learn's digits)


Converter = Callable[[str | Path | None, int, int | None], Converted]


def hash_inputs(inputs: Sequence[Path], note: str = "") -> str:
    """sha256 over the names and bytes of ``inputs`` (sorted), so a changed source changes the manifest."""
    h = hashlib.sha256(note.encode())
    for path in sorted(Path(p) for p in inputs):
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def take_first(x: np.ndarray, limit: int | None) -> np.ndarray:
    return x if limit is None else x[:limit]


def split_indices(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) sorted indices: a seeded ``fraction`` of range(n) held out (e.g. a val split)."""
    order = rng.permutation(n)
    k = int(round(n * fraction))
    return np.sort(order[k:]), np.sort(order[:k])
