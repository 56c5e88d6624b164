"""In-memory loaders for the embedded digits2v and for mnist2v from MNIST files.

MNIST comes from the classic ``mnist.pkl.gz`` (50k/10k/10k) or from the four IDX files
(train 60k is split 50k/10k, test 10k). The default location is ``$CMMD_MNIST_PATH``, else
``../shared/data/mnist.pkl.gz`` relative to the working directory. The pickle is read by an
unpickler that builds numpy arrays and nothing else (a pickle can otherwise run any code).
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
from cmmd_dist.storage import StorageError

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
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:  # gzip raises BadGzipFile (an OSError) or EOFError when cut short
        raise StorageError(f"{path}: not a readable IDX file (truncated?): {err}") from err
    if len(data) < 4:
        raise StorageError(f"{path}: not an IDX file (only {len(data)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or len(data) < 4 + 4 * ndim:
        raise StorageError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise StorageError(f"{path}: truncated IDX file: header says {dims} ({int(np.prod(dims))} values), body has {body.size}")
    return body.reshape(dims)


class _ArrayUnpickler(pickle.Unpickler):
    """Builds numpy arrays, tuples, lists and numbers: the content of mnist.pkl.gz, nothing that runs code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are expected")
        return super().find_class(module, name)


def _read_mnist_pickle(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    try:
        with gzip.open(path, "rb") as f:
            parts = _ArrayUnpickler(f, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise StorageError(f"{path}: not a readable mnist.pkl.gz (truncated or not MNIST?): {type(err).__name__}: {err}") from err
    if not (isinstance(parts, (tuple, list)) and len(parts) == 3 and all(len(p) == 2 for p in parts)):
        raise StorageError(f"{path}: expected the (train, val, test) pairs of mnist.pkl.gz")
    out = {}
    for name, (x, y) in zip(("train", "val", "test"), parts):
        x, y = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)
        if x.size != len(y) * 784:
            raise StorageError(f"{path}: split {name!r} has images of shape {x.shape} for {len(y)} labels, expected (N, 784)")
        out[name] = (x.reshape(-1, 28, 28), y)
    return out


def read_mnist(source: str | os.PathLike | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train'|'val'|'test': (images float32 (N,28,28) in [0,1], labels int64)} from a pickle or an IDX folder."""
    path = Path(source) if source is not None else default_mnist_path()
    if not path.exists():
        hint = "pass --source" if source is not None else "the default: set CMMD_MNIST_PATH or pass --source"
        raise StorageError(f"{path}: MNIST source does not exist ({hint})")
    if path.is_dir():
        def find(stem: str) -> Path:
            for cand in (path / stem, path / f"{stem}.gz"):
                if cand.exists():
                    return cand
            raise StorageError(f"{path}: MNIST IDX folder lacks {stem}[.gz]")

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
    return _read_mnist_pickle(path)


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
