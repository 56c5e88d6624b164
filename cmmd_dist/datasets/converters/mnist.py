"""digits2v (scikit-learn's bundled digits) and mnist2v (MNIST IDX folder or mnist.pkl.gz).

The recipes are those of ``cmmd_dist.datasets.loaders``; this module adds where MNIST is found
inside a source folder shared with other datasets (SVHN, ...), and which files were read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmmd_dist.datasets.converters.base import Converted
from cmmd_dist.datasets.loaders import default_mnist_path, load_digits2v, load_mnist2v, read_mnist

__all__ = ["convert_digits2v", "convert_mnist2v", "find_mnist", "mnist_inputs", "read_mnist_limited"]

_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def find_mnist(source: str | Path | None) -> Path:
    """The MNIST source inside ``source``: the file itself, a folder holding mnist.pkl.gz or the IDX
    files (directly or under ``mnist/``), else ``$CMMD_MNIST_PATH`` / ``../shared/data/mnist.pkl.gz``."""
    if source is None:
        return default_mnist_path()
    path = Path(source)
    if path.is_file():
        return path
    for folder in (path, path / "mnist"):
        if (folder / "mnist.pkl.gz").exists():
            return folder / "mnist.pkl.gz"
        if any((folder / n).exists() or (folder / f"{n}.gz").exists() for n in _IDX):
            return folder
    return default_mnist_path()


def mnist_inputs(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.name.split(".")[0] in _IDX)
    return [path]


def read_mnist_limited(source: str | Path | None, limit: int | None) -> tuple[dict, list[Path]]:
    """read_mnist of the MNIST inside ``source``, each split cut to ``limit`` rows; and the files read."""
    path = find_mnist(source)
    parts = read_mnist(path)
    if limit is not None:
        parts = {k: (x[:limit], y[:limit]) for k, (x, y) in parts.items()}
    return parts, mnist_inputs(path)


def convert_digits2v(source: str | Path | None = None, seed: int = 0, limit: int | None = None) -> Converted:
    """digits2v needs no source: the 8x8 digits ship with scikit-learn."""
    import sklearn

    bundle = load_digits2v(seed=seed)
    if limit is not None:
        for name in ("train", "val", "test"):
            split = getattr(bundle, name)
            setattr(bundle, name, split.take(np.arange(min(limit, len(split)))))
    return Converted(bundle=bundle, source_note=f"sklearn.datasets.load_digits {sklearn.__version__}")


def convert_mnist2v(source: str | Path | None = None, seed: int = 0, limit: int | None = None) -> Converted:
    path = find_mnist(source)
    return Converted(bundle=load_mnist2v(source=path, seed=seed, limit=limit), inputs=mnist_inputs(path))
