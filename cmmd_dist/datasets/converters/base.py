"""What every converter returns, and the source hash written into the manifest."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cmmd_dist.datasets.spec import DatasetBundle

__all__ = ["Converted", "Converter", "hash_inputs"]


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
