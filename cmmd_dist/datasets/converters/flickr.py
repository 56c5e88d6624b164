"""flickr: MIR Flickr features as released by Srivastava & Salakhutdinov (2012), in this layout::

    image/labelled.npy                   (25000, 3857) float   image features (or image/labelled/*.npy
                                                               shards, concatenated in name order)
    text/text_all_2000_labelled.npz      (25000, 2000) tag counts: a scipy.sparse .npz (save_npz) or a
                                                               dense array under key 'arr_0' / 'text'
    labels.npy                           (25000, 38) 0/1 multi-label
    splits/{train,valid,test}_indices_1.npy                  row indices of each split (optional:
                                                               else a seeded 10000 / 5000 / rest)
    image/unlabelled.npy, text/text_all_2000_unlabelled.npz   optional unlabeled part

Tags become binary (Bernoulli decoder); image features are standardised with the train split's mean
and standard deviation. Unlabeled rows with fewer than 2 tags are dropped (paper appendix C); the rest
go to ``extra['unlabeled']`` with all-zero labels.

The source is never loaded whole (MIR Flickr is 25,000 labelled and about 1,000,000 unlabelled rows,
some 20 GB as float32): the arrays are read through :mod:`array_rows` ``BLOCK_ROWS`` rows at a time,
the image statistics in two passes over the train rows, and the converter returns a
:class:`DatasetStream` that ``data prepare`` writes as it reads. In memory at once: one block, the
labels, and the tags as CSR (about 12 bytes a tag). The statistics are summed row by row in float32, in
the order of the train split, as numpy's ``mean(axis=0)`` / ``std(axis=0)`` of the whole train array
did, so the output is byte-identical to loading it whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cmmd_dist.datasets.converters.array_rows import ArrayRows, open_rows
from cmmd_dist.datasets.converters.base import Converted, given_source
from cmmd_dist.datasets.spec import DatasetSpec, DatasetStream, ModalitySpec, Split
from cmmd_dist.storage import StorageError

__all__ = ["FLICKR_SPEC", "IMAGE_DIM", "TAG_DIM", "NUM_LABELS", "BLOCK_ROWS", "load_array", "convert_flickr"]

BLOCK_ROWS = 2048  # rows read and handed on at a time: about 50 MB of float32 image features and tags
IMAGE_DIM, TAG_DIM, NUM_LABELS = 3857, 2000, 38

FLICKR_SPEC = DatasetSpec(
    name="flickr",
    modalities=(ModalitySpec("image", (IMAGE_DIM,), "gaussian"), ModalitySpec("tags", (TAG_DIM,), "bernoulli")),
    label_kind="multilabel",
    num_classes=NUM_LABELS,
    scenarios={"image": ("image",)},
    default_scenario="image",
)


def load_array(path: Path) -> np.ndarray:
    """A dense 2-D array from .npy, a folder of .npy shards, a scipy.sparse .npz or a dense .npz, loaded whole:
    for small files (labels); the big ones are read a block at a time (``array_rows.open_rows``)."""
    if path.is_dir():
        shards = sorted(path.glob("*.npy"))
        if not shards:
            raise StorageError(f"{path}: folder holds no .npy shards")
        return np.concatenate([load_array(p) for p in shards])
    if not path.exists():
        raise StorageError(f"{path}: Flickr file is missing")
    try:
        if path.suffix == ".npy":
            return np.load(path, allow_pickle=False)
        with np.load(path, allow_pickle=False) as z:
            if "indptr" in z.files:
                from scipy import sparse

                return sparse.load_npz(path).toarray()
            key = "text" if "text" in z.files else z.files[0]
            return z[key]
    except (ValueError, OSError) as err:
        raise StorageError(f"{path}: not a readable array file: {err}") from err


def _checked(path: Path, arr: np.ndarray | ArrayRows, dim: int, rows: int | None = None) -> np.ndarray | ArrayRows:
    shape = tuple(arr.shape)
    if len(shape) != 2 or shape[1] != dim or (rows is not None and shape[0] != rows):
        raise StorageError(f"{path}: column {path.stem!r} has shape {shape}, expected ({rows or 'N'}, {dim})")
    return arr


def _first(*paths: Path) -> Path:
    return next((p for p in paths if p.exists()), paths[0])


def _standardiser(image: ArrayRows, train: np.ndarray, where: Path, block_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (0 -> 1) of the image features of the ``train`` rows, read a block at a time.

    float32, summed one row at a time in the order of ``train``: numpy's ``mean(axis=0)`` and ``std(axis=0)``
    of the whole float32 train array add the rows in that order, so the values are the same to the bit."""
    if not len(train):
        raise StorageError(f"{where}: the train split is empty: no statistics to standardise the image features with")
    total = np.zeros(IMAGE_DIM, np.float32)
    for a in range(0, len(train), block_rows):
        for row in image.take(train[a : a + block_rows]).astype(np.float32, copy=False):
            total += row
    mean = np.true_divide(total, len(train))
    total[:], dev = 0.0, np.empty(IMAGE_DIM, np.float32)
    for a in range(0, len(train), block_rows):
        for row in image.take(train[a : a + block_rows]).astype(np.float32, copy=False):
            np.subtract(row, mean, out=dev)
            total += np.square(dev, out=dev)
    std = np.sqrt(np.true_divide(total, len(train)))
    std[std == 0] = 1.0
    return mean, std


def _blocks(image: ArrayRows, tags: ArrayRows, labels: np.ndarray | None, rows: np.ndarray, mean: np.ndarray,
            std: np.ndarray, block_rows: int) -> Iterator[Split]:
    """Rows ``rows`` of the source as Splits of at most ``block_rows`` rows; no labels: all-zero labels."""
    for a in range(0, len(rows), block_rows):
        ix = rows[a : a + block_rows]
        x = image.take(ix).astype(np.float32, copy=False)  # a fresh array: standardised in place
        x -= mean
        x /= std
        y = labels[ix].astype(np.float32) if labels is not None else np.zeros((len(ix), NUM_LABELS), np.float32)
        yield Split(arrays={"image": x, "tags": tags.take_binary(ix)}, labels=y)


def convert_flickr(source: str | Path | None = None, seed: int = 0, limit: int | None = None,
                   block_rows: int | None = None) -> Converted:
    """The Flickr source as a stream of blocks of ``block_rows`` (default ``BLOCK_ROWS``) rows; shapes, labels
    and split indices are checked and the image statistics computed here, the rows are read when written."""
    if source is None:
        raise StorageError("flickr: --source must be a folder in the layout of cmmd_dist.datasets.converters.flickr")
    block_rows = block_rows or BLOCK_ROWS
    root = given_source(source, "flickr")
    img_path = _first(root / "image" / "labelled.npy", root / "image" / "labelled")
    txt_path = _first(root / "text" / "text_all_2000_labelled.npz", root / "text" / "labelled.npy")
    lab_path = root / "labels.npy"
    labels = _checked(lab_path, load_array(lab_path), NUM_LABELS)
    n = len(labels)
    image = _checked(img_path, open_rows(img_path), IMAGE_DIM, n)
    tags = _checked(txt_path, open_rows(txt_path), TAG_DIM, n)
    if not np.isin(labels, (0, 1)).all():
        raise StorageError(f"{lab_path}: column 'labels' must be 0/1 over {NUM_LABELS} classes")
    inputs = [lab_path, *([img_path] if img_path.is_file() else sorted(img_path.glob("*.npy"))), txt_path]

    split_files = {s: root / "splits" / f"{s}_indices_1.npy" for s in ("train", "valid", "test")}
    if all(p.exists() for p in split_files.values()):
        idx = {s: np.load(p).astype(np.int64).reshape(-1) for s, p in split_files.items()}
        inputs += list(split_files.values())
        for s, ix in idx.items():
            if len(ix) and (ix.min() < 0 or ix.max() >= n):
                raise StorageError(f"{split_files[s]}: column 'indices' has values outside [0, {n})")
    else:
        order = np.random.default_rng(seed).permutation(n)
        n_tr, n_va = min(10000, int(n * 0.4)), min(5000, int(n * 0.2))
        idx = {"train": order[:n_tr], "valid": order[n_tr : n_tr + n_va], "test": order[n_tr + n_va :]}
    if limit is not None:
        idx = {s: ix[:limit] for s, ix in idx.items()}
    mean, std = _standardiser(image, idx["train"], split_files["train"], block_rows)

    def split(img: ArrayRows, txt: ArrayRows, y: np.ndarray | None, rows: np.ndarray):
        return lambda: _blocks(img, txt, y, rows, mean, std, block_rows)

    splits = {"train": split(image, tags, labels, idx["train"]), "val": split(image, tags, labels, idx["valid"]),
              "test": split(image, tags, labels, idx["test"])}
    u_img, u_txt = root / "image" / "unlabelled.npy", root / "text" / "text_all_2000_unlabelled.npz"
    if u_img.exists() and u_txt.exists():
        ui = open_rows(u_img)
        ut = _checked(u_txt, open_rows(u_txt), TAG_DIM, ui.shape[0] if ui.shape else 0)
        ui = _checked(u_img, ui, IMAGE_DIM)
        keep = np.flatnonzero(ut.positive_counts(block_rows) >= 2)[: limit]
        splits["unlabeled"] = split(ui, ut, None, keep)
        inputs += [u_img, u_txt]
    return Converted(stream=DatasetStream(spec=FLICKR_SPEC, splits=splits), inputs=inputs)
