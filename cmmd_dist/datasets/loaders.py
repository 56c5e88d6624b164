"""In-memory loaders for the embedded digits2v and for mnist2v from MNIST files.

MNIST comes from the classic ``mnist.pkl.gz`` (50k/10k/10k) or from the four IDX files
(train 60k is split 50k/10k, test 10k). The default location is ``$CMMD_MNIST_PATH``, else
``../shared/data/mnist.pkl.gz`` relative to the working directory.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np

from cmmd_dist.datasets.spec import DatasetBundle, DatasetSpec, ModalitySpec, Split
from cmmd_dist.datasets.two_view import two_view

__all__ = [
    "DIGITS2V_SPEC",
    "MNIST2V_SPEC",
    "load_digits2v",
    "load_mnist2v",
    "read_mnist",
    "read_idx",
    "default_mnist_path",
]

DIGITS2V_SPEC = DatasetSpec(
    name="digits2v",
    modalities=(ModalitySpec("view1", (8, 8), "gaussian"), ModalitySpec("view2", (8, 8), "gaussian")),
    label_kind="classes",
    num_classes=10,
    scenarios={"view1": ("view1",)},
    default_scenario="view1",
)

MNIST2V_SPEC = DatasetSpec(
    name="mnist2v",
    modalities=(ModalitySpec("view1", (28, 28), "gaussian"), ModalitySpec("view2", (28, 28), "gaussian")),
    label_kind="classes",
    num_classes=10,
    scenarios={"view1": ("view1",)},
    default_scenario="view1",
)


def _split_two_view(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> Split:
    v1, v2 = two_view(images, labels, rng)
    return Split(arrays={"view1": v1, "view2": v2}, labels=labels.astype(np.int64))


def load_digits2v(seed: int = 0, n_val: int = 300, n_test: int = 300) -> DatasetBundle:
    """scikit-learn's bundled 8x8 digits (1797 rows) as a seeded two-view dataset."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images / 16.0).astype(np.float32)
    labels = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    test_idx, val_idx, train_idx = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return DatasetBundle(
        spec=DIGITS2V_SPEC,
        train=_split_two_view(images[train_idx], labels[train_idx], rng),
        val=_split_two_view(images[val_idx], labels[val_idx], rng),
        test=_split_two_view(images[test_idx], labels[test_idx], rng),
    )


def default_mnist_path() -> Path:
    env = os.environ.get("CMMD_MNIST_PATH")
    return Path(env) if env else Path("../shared/data/mnist.pkl.gz")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one MNIST IDX file (optionally gzipped) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file (only {len(data)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: truncated IDX file: header says {dims} ({int(np.prod(dims))} values), body has {body.size}")
    return body.reshape(dims)


def read_mnist(source: str | os.PathLike | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train'|'val'|'test': (images float32 (N,28,28) in [0,1], labels int64)} from a pickle or an IDX folder."""
    path = Path(source) if source is not None else default_mnist_path()
    if not path.exists():
        raise FileNotFoundError(f"MNIST source {path} does not exist (set CMMD_MNIST_PATH or pass --source)")
    if path.is_dir():
        def find(stem: str) -> Path:
            for cand in (path / stem, path / f"{stem}.gz"):
                if cand.exists():
                    return cand
            raise FileNotFoundError(f"MNIST IDX folder {path} lacks {stem}[.gz]")

        xtr = read_idx(find("train-images-idx3-ubyte")).astype(np.float32) / 255.0
        ytr = read_idx(find("train-labels-idx1-ubyte")).astype(np.int64)
        xte = read_idx(find("t10k-images-idx3-ubyte")).astype(np.float32) / 255.0
        yte = read_idx(find("t10k-labels-idx1-ubyte")).astype(np.int64)
        n_train = len(xtr) - 10000 if len(xtr) > 10000 else int(len(xtr) * 5 / 6)
        return {
            "train": (xtr[:n_train], ytr[:n_train]),
            "val": (xtr[n_train:], ytr[n_train:]),
            "test": (xte, yte),
        }
    with gzip.open(path, "rb") as f:
        train, val, test = pickle.load(f, encoding="latin1")
    out = {}
    for name, (x, y) in zip(("train", "val", "test"), (train, val, test)):
        out[name] = (np.asarray(x, dtype=np.float32).reshape(-1, 28, 28), np.asarray(y, dtype=np.int64))
    return out


def load_mnist2v(source: str | os.PathLike | None = None, seed: int = 0, limit: int | None = None) -> DatasetBundle:
    """Two-view MNIST (50k/10k/10k). ``limit`` keeps the first rows of each split (for quick runs)."""
    rng = np.random.default_rng(seed)
    parts = read_mnist(source)
    splits = {}
    for name in ("train", "val", "test"):
        x, y = parts[name]
        if limit is not None:
            x, y = x[:limit], y[:limit]
        splits[name] = _split_two_view(x, y, rng)
    return DatasetBundle(spec=MNIST2V_SPEC, **splits)
