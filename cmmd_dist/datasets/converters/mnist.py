"""digits2v (scikit-learn's bundled digits) and mnist2v (MNIST IDX folder or mnist.pkl.gz).

The recipes are those of ``cmmd_dist.datasets.loaders``; this module adds where MNIST is found
inside a source folder shared with other datasets (SVHN, ...), and which files were read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cmmd_dist.datasets.converters.base import Converted, given_source
from cmmd_dist.datasets.loaders import default_mnist_path, load_digits2v, load_mnist2v, read_mnist
from cmmd_dist.errors import UserError

__all__ = ["convert_digits2v", "convert_mnist2v", "find_mnist", "find_mnist_beside", "refuse_source", "mnist_inputs",
           "read_mnist_limited"]

_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def find_mnist(source: str | Path | None, dataset: str = "mnist2v") -> Path:
    """The MNIST source inside ``source``: the file itself, or a folder holding mnist.pkl.gz or the IDX
    files (directly or under ``mnist/``). With no source: ``$CMMD_MNIST_PATH`` /
    ``../shared/data/mnist.pkl.gz``. A given source without MNIST is an error naming it."""
    path = given_source(source, dataset)
    if path is None:
        return default_mnist_path()
    found = _mnist_in(path)
    if found is None:
        hint = " (it holds a manifest: a prepared dataset goes in --data / data.prepared)" if _has_manifest(path) else ""
        raise UserError(f"{dataset}: source {str(source)!r} holds no MNIST: mnist.pkl.gz or the IDX files "
                        f"({_IDX[0]}[.gz], ...), directly or under mnist/{hint}")
    return found


def find_mnist_beside(folder: str | Path, dataset: str) -> Path:
    """MNIST in a folder of another dataset's files (SVHN's): inside it (or its ``mnist/``), else
    ``$CMMD_MNIST_PATH`` when that is set (an explicit choice), else an error naming the folder."""
    path = given_source(folder, dataset)
    found = _mnist_in(path) if path.is_dir() else None
    if found is not None:
        return found
    if os.environ.get("CMMD_MNIST_PATH"):
        return find_mnist(os.environ["CMMD_MNIST_PATH"], f"{dataset} (CMMD_MNIST_PATH)")
    raise UserError(f"{dataset}: source {str(folder)!r} holds no MNIST (mnist.pkl.gz or the IDX files, directly "
                    "or under mnist/), and CMMD_MNIST_PATH is not set")


def _mnist_in(path: Path) -> Path | None:
    if path.is_file():
        return path
    for folder in (path, path / "mnist"):
        if (folder / "mnist.pkl.gz").exists():
            return folder / "mnist.pkl.gz"
        if any((folder / n).exists() or (folder / f"{n}.gz").exists() for n in _IDX):
            return folder
    return None


def _has_manifest(path: Path) -> bool:
    from cmmd_dist.storage import MANIFEST_NAMES

    return any((path / name).exists() for name in MANIFEST_NAMES)


def refuse_source(source: str | Path | None, dataset: str) -> None:
    """A dataset built without source files refuses one rather than ignore it (a prepared dataset was meant?)."""
    if source is not None:
        raise UserError(f"{dataset} reads no source files (scikit-learn's bundled digits), got source {str(source)!r}; "
                        "a prepared dataset goes in --data / data.prepared")


def mnist_inputs(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.name.split(".")[0] in _IDX)
    return [path]


def read_mnist_limited(path: Path, limit: int | None) -> tuple[dict, list[Path]]:
    """read_mnist of the MNIST at ``path`` (see :func:`find_mnist`), each split cut to ``limit`` rows; and the files read."""
    parts = read_mnist(path)
    if limit is not None:
        parts = {k: (x[:limit], y[:limit]) for k, (x, y) in parts.items()}
    return parts, mnist_inputs(path)


def convert_digits2v(source: str | Path | None = None, seed: int = 0, limit: int | None = None) -> Converted:
    """digits2v needs no source: the 8x8 digits ship with scikit-learn (a given source is refused, not ignored)."""
    import sklearn

    refuse_source(source, "digits2v")

    bundle = load_digits2v(seed=seed)
    if limit is not None:
        for name in ("train", "val", "test"):
            split = getattr(bundle, name)
            setattr(bundle, name, split.take(np.arange(min(limit, len(split)))))
    return Converted(bundle=bundle, source_note=f"sklearn.datasets.load_digits {sklearn.__version__}")


def convert_mnist2v(source: str | Path | None = None, seed: int = 0, limit: int | None = None) -> Converted:
    path = find_mnist(source)
    return Converted(bundle=load_mnist2v(source=path, seed=seed, limit=limit), inputs=mnist_inputs(path))
