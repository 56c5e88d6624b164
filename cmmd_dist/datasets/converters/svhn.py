"""mnist-svhn and mnist3 from MNIST plus SVHN's ``train_32x32.mat`` / ``test_32x32.mat``.

Source: a folder holding the two SVHN files and MNIST (``mnist.pkl.gz`` or the IDX files, directly
or under ``mnist/``; if absent, ``$CMMD_MNIST_PATH`` when set, else an error: never a silent default). SVHN ``X`` is (32, 32, 3, N) uint8 and ``y``
(N, 1) with 10 meaning digit 0; we store (3, 32, 32) float32 in [0, 1]. A seeded 10% of each class of SVHN
train is SVHN's val pool. Every MNIST row is paired with a random SVHN row of the same class from the pool of
the same split (Shi et al. 2019). mnist3 adds ``mnist_rot``: ANOTHER same-class MNIST digit rotated
by U[-45, 45] degrees; its scenarios are the paper's two (Sec. 4.3.1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmmd_dist.datasets.converters.base import Converted
from cmmd_dist.datasets.converters.mnist import find_mnist_beside, read_mnist_limited
from cmmd_dist.datasets.spec import DatasetBundle, DatasetSpec, ModalitySpec, Split
from cmmd_dist.datasets.two_view import pair_by_class, rotate_images
from cmmd_dist.storage import StorageError

__all__ = ["MNIST_SVHN_SPEC", "MNIST3_SPEC", "read_svhn_file", "read_svhn", "stratified_holdout", "pair_across",
           "paired_mnist_svhn", "convert_mnist_svhn", "convert_mnist3"]

MNIST = ModalitySpec("mnist", (28, 28), "gaussian")
SVHN = ModalitySpec("svhn", (3, 32, 32), "gaussian")

MNIST_SVHN_SPEC = DatasetSpec(
    name="mnist-svhn", modalities=(MNIST, SVHN), label_kind="classes", num_classes=10,
    scenarios={"mnist": ("mnist",)}, default_scenario="mnist",
)

MNIST3_SPEC = DatasetSpec(
    name="mnist3", modalities=(MNIST, ModalitySpec("mnist_rot", (28, 28), "gaussian"), SVHN),
    label_kind="classes", num_classes=10,
    # i) rotated MNIST and SVHN both missing; ii) only SVHN missing
    scenarios={"mnist": ("mnist",), "mnist+mnist_rot": ("mnist", "mnist_rot")}, default_scenario="mnist",
)


def read_svhn_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (N, 3, 32, 32) in [0, 1], labels int64 0-9) from one SVHN .mat file."""
    from scipy.io import loadmat

    if not path.exists():
        raise StorageError(f"{path}: SVHN file is missing")
    try:
        mat = loadmat(path)
    except Exception as err:  # scipy raises several types for a damaged file
        raise StorageError(f"{path}: not a readable .mat file: {err}") from err
    for key in ("X", "y"):
        if key not in mat:
            raise StorageError(f"{path}: column {key!r} is missing")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise StorageError(f"{path}: column 'X' has shape {x.shape}, expected (32, 32, 3, N)")
    if x.shape[3] != len(y):
        raise StorageError(f"{path}: column 'y' has {len(y)} labels for {x.shape[3]} images in 'X'")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise StorageError(f"{path}: column 'y' has values outside 1..10 (min {y.min()}, max {y.max()})")
    images = np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1)), dtype=np.float32) / np.float32(255.0)
    return images, (y.astype(np.int64) % 10)


def read_svhn(folder: str | Path, seed: int = 0) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[Path]]:
    """SVHN pools per split: train (90% of train_32x32), val (10%, seeded), test; and the files read."""
    folder = Path(folder)
    train_path, test_path = folder / "train_32x32.mat", folder / "test_32x32.mat"
    xtr, ytr = read_svhn_file(train_path)
    xte, yte = read_svhn_file(test_path)
    keep, held = stratified_holdout(ytr, 0.1, np.random.default_rng([seed, 7]))
    pools = {"train": (xtr[keep], ytr[keep]), "val": (xtr[held], ytr[held]), "test": (xte, yte)}
    return pools, [train_path, test_path]


def stratified_holdout(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) sorted indices: ``fraction`` of every class held out (at least one when it has two)."""
    kept, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = max(int(round(len(idx) * fraction)), 1 if len(idx) > 1 else 0)
        held.append(idx[:k])
        kept.append(idx[k:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def pair_across(labels: np.ndarray, pool_labels: np.ndarray, rng: np.random.Generator, where: str = "") -> np.ndarray:
    """For every label, the index of a random row of ``pool_labels`` with the same class."""
    out = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        pool = np.flatnonzero(pool_labels == c)
        if len(pool) == 0:
            raise StorageError(f"{where}: no SVHN image of class {c} to pair with (column 'y')")
        out[rows] = pool[rng.integers(0, len(pool), size=len(rows))]
    return out


def paired_mnist_svhn(source: str | Path | None, seed: int, limit: int | None, dataset: str = "mnist-svhn"):
    """{split: (mnist images, svhn images paired by class, labels)}, the files read, and the rng."""
    if source is None:
        raise StorageError(f"{dataset}: --source must be a folder holding train_32x32.mat and test_32x32.mat")
    rng = np.random.default_rng(seed)
    mnist, mnist_files = read_mnist_limited(find_mnist_beside(source, dataset), limit)
    pools, svhn_files = read_svhn(source, seed)
    out = {}
    for name in ("train", "val", "test"):
        x, y = mnist[name]
        sx, sy = pools[name]
        out[name] = (x, sx[pair_across(y, sy, rng, f"{source} split {name}")], y)
    return out, mnist_files + svhn_files, rng


def convert_mnist_svhn(source: str | Path | None = None, seed: int = 0, limit: int | None = None) -> Converted:
    parts, inputs, _ = paired_mnist_svhn(source, seed, limit)
    splits = {k: Split(arrays={"mnist": x, "svhn": s}, labels=y) for k, (x, s, y) in parts.items()}
    return Converted(bundle=DatasetBundle(spec=MNIST_SVHN_SPEC, **splits), inputs=inputs)


def convert_mnist3(source: str | Path | None = None, seed: int = 0, limit: int | None = None) -> Converted:
    parts, inputs, rng = paired_mnist_svhn(source, seed, limit, "mnist3")
    splits = {}
    for k, (x, s, y) in parts.items():
        rot = rotate_images(x[pair_by_class(y, rng)], rng)
        splits[k] = Split(arrays={"mnist": x, "mnist_rot": rot, "svhn": s}, labels=y)
    return Converted(bundle=DatasetBundle(spec=MNIST3_SPEC, **splits), inputs=inputs)
