"""What every converter returns, and the source hash written into the manifest."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cmmd_dist.datasets.spec import DatasetBundle
from cmmd_dist.errors import UserError

__all__ = ["Converted", "Converter", "hash_inputs", "given_source"]


@dataclass
class Converted:
    """A converter's output: the bundle and the source files it was made from."""

    bundle: DatasetBundle
    inputs: list[Path] = field(default_factory=list)
    source_note: str = ""  # for sources that are not files (scikit-learn's digits)


Converter = Callable[[str | Path | None, int, int | None], Converted]


def given_source(source: str | Path | None, dataset: str) -> Path | None:
    """``source`` as a Path when one is given, None when none is (only then may a converter use its default).

    A given source must exist: a typo is an error naming it, never a quiet fall-back to a default."""
    if source is None:
        return None
    text = str(source)
    path = Path(text)
    if not text or not path.exists():
        hint = ""
        if "://" in text:
            hint = " (converters read local files; a prepared dataset's URI goes in --data / data.prepared)"
        raise UserError(f"{dataset}: source {text!r} does not exist{hint}")
    return path


def hash_inputs(inputs: Sequence[Path], note: str = "") -> str:
    """sha256 over the names and bytes of ``inputs`` (sorted), so a changed source changes the manifest."""
    h = hashlib.sha256(note.encode())
    for path in sorted(Path(p) for p in inputs):
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
