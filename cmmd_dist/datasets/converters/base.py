"""What every converter returns, and the source hash written into the manifest."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

from cmmd_dist.datasets.spec import DatasetBundle, DatasetStream
from cmmd_dist.errors import UserError

__all__ = ["Converted", "Converter", "hash_inputs", "given_source"]


class Converted:
    """A converter's output: the dataset and the source files it was made from.

    A converter of a small source hands over an in-memory ``bundle``; one whose source can be bigger than
    memory (flickr) hands over a ``stream`` read block by block, which ``data prepare`` writes as it reads.
    Either is available as the other: ``stream`` of a bundle is views of it, ``bundle`` of a stream reads
    it all into memory (small sources and tests only)."""

    def __init__(self, bundle: DatasetBundle | None = None, inputs: Sequence[Path] = (), source_note: str = "",
                 stream: DatasetStream | None = None):
        if (bundle is None) == (stream is None):
            raise TypeError("Converted takes a bundle or a stream, not both or neither")
        self._bundle, self._stream = bundle, stream
        self.inputs = list(inputs)
        self.source_note = source_note  # for sources that are not files (scikit-learn's digits)

    @property
    def streamed(self) -> bool:
        """Whether the rows are read while they are written (True) or already in memory."""
        return self._stream is not None

    @property
    def stream(self) -> DatasetStream:
        return self._stream if self._stream is not None else DatasetStream.of_bundle(self._bundle)

    @property
    def bundle(self) -> DatasetBundle:
        if self._bundle is None:
            self._bundle = self._stream.to_bundle()
        return self._bundle


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
