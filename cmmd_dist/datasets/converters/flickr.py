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
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmmd_dist.datasets.converters.base import Converted, given_source
from cmmd_dist.datasets.spec import DatasetBundle, DatasetSpec, ModalitySpec, Split
from cmmd_dist.storage import StorageError

__all__ = ["FLICKR_SPEC", "IMAGE_DIM", "TAG_DIM", "NUM_LABELS", "load_array", "convert_flickr"]

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
    """A dense 2-D array from .npy, a folder of .npy shards, a scipy.sparse .npz or a dense .npz."""
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


def _checked(path: Path, arr: np.ndarray, dim: int, rows: int | None = None) -> np.ndarray:
    if arr.ndim != 2 or arr.shape[1] != dim or (rows is not None and arr.shape[0] != rows):
        raise StorageError(f"{path}: column {path.stem!r} has shape {arr.shape}, expected ({rows or 'N'}, {dim})")
    return arr


def _first(*paths: Path) -> Path:
    return next((p for p in paths if p.exists()), paths[0])


def convert_flickr(source: str | Path | None = None, seed: int = 0, limit: int | None = None) -> Converted:
    if source is None:
        raise StorageError("flickr: --source must be a folder in the layout of cmmd_dist.datasets.converters.flickr")
    root = given_source(source, "flickr")
    img_path = _first(root / "image" / "labelled.npy", root / "image" / "labelled")
    txt_path = _first(root / "text" / "text_all_2000_labelled.npz", root / "text" / "labelled.npy")
    lab_path = root / "labels.npy"
    labels = _checked(lab_path, load_array(lab_path), NUM_LABELS)
    n = len(labels)
    image = _checked(img_path, load_array(img_path), IMAGE_DIM, n).astype(np.float32)
    tags = (_checked(txt_path, load_array(txt_path), TAG_DIM, n) > 0).astype(np.float32)
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

    tr = image[idx["train"]]
    mean, std = tr.mean(axis=0), tr.std(axis=0)
    std[std == 0] = 1.0

    def make(rows: np.ndarray) -> Split:
        return Split(arrays={"image": (image[rows] - mean) / std, "tags": tags[rows]}, labels=labels[rows].astype(np.float32))

    splits = {"train": make(idx["train"]), "val": make(idx["valid"]), "test": make(idx["test"])}
    extra = {}
    u_img, u_txt = root / "image" / "unlabelled.npy", root / "text" / "text_all_2000_unlabelled.npz"
    if u_img.exists() and u_txt.exists():
        ui = load_array(u_img)
        ut = (_checked(u_txt, load_array(u_txt), TAG_DIM, len(ui)) > 0).astype(np.float32)
        ui = _checked(u_img, ui, IMAGE_DIM).astype(np.float32)
        keep = np.flatnonzero(ut.sum(axis=1) >= 2)[: limit]
        extra["unlabeled"] = Split(arrays={"image": (ui[keep] - mean) / std, "tags": ut[keep]},
                                   labels=np.zeros((len(keep), NUM_LABELS), dtype=np.float32))
        inputs += [u_img, u_txt]
    return Converted(bundle=DatasetBundle(spec=FLICKR_SPEC, **splits, extra=extra), inputs=inputs)
