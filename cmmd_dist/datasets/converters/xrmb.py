"""xrmb from the TTIC release ``XRMB1.mat`` (acoustic) and ``XRMB2.mat`` (articulatory, labels, speakers).

XRMB1.mat: ``X1`` (train), ``XV1`` (tune = val), ``XTe1`` (test), each (N, 273) acoustic features
(13 MFCCs + deltas + double deltas over a 7-frame window). XRMB2.mat: ``X2``, ``XV2``, ``XTe2`` (N, 112)
articulatory; ``trainLabel``, ``tuneLabel``, ``testLabel`` (40 phone classes, 0-based); ``trainID``,
``tuneID``, ``testID`` (speaker ids) -> the ``speaker`` group column used for folds.
MATLAB v7.3 (HDF5) files cannot be read by scipy: re-save them with ``save(..., '-v7')``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmmd_dist.datasets.converters.base import Converted, given_source
from cmmd_dist.datasets.spec import DatasetBundle, DatasetSpec, ModalitySpec, Split
from cmmd_dist.storage import StorageError

__all__ = ["XRMB_SPEC", "XRMB_KEYS", "read_mat", "convert_xrmb"]

XRMB_SPEC = DatasetSpec(
    name="xrmb",
    modalities=(ModalitySpec("acoustic", (273,), "gaussian"), ModalitySpec("articulatory", (112,), "gaussian")),
    label_kind="classes",
    num_classes=40,
    scenarios={"acoustic": ("acoustic",)},
    default_scenario="acoustic",
    group_column="speaker",
)

# split -> (acoustic key in XRMB1, articulatory key, label key, speaker key in XRMB2)
XRMB_KEYS = {
    "train": ("X1", "X2", "trainLabel", "trainID"),
    "val": ("XV1", "XV2", "tuneLabel", "tuneID"),
    "test": ("XTe1", "XTe2", "testLabel", "testID"),
}


def read_mat(path: Path) -> dict:
    from scipy.io import loadmat

    if not path.exists():
        raise StorageError(f"{path}: XRMB file is missing")
    try:
        return loadmat(path)
    except NotImplementedError as err:
        raise StorageError(f"{path}: MATLAB v7.3 (HDF5) file; re-save it with save(..., '-v7')") from err
    except Exception as err:  # scipy raises several types for a damaged file
        raise StorageError(f"{path}: not a readable .mat file: {err}") from err


def _get(mat: dict, path: Path, key: str) -> np.ndarray:
    if key not in mat:
        raise StorageError(f"{path}: column {key!r} is missing")
    return np.asarray(mat[key])


def _features(mat: dict, path: Path, key: str, dim: int) -> np.ndarray:
    x = _get(mat, path, key)
    if x.ndim != 2 or x.shape[1] != dim:
        raise StorageError(f"{path}: column {key!r} has shape {x.shape}, expected (N, {dim})")
    return np.ascontiguousarray(x, dtype=np.float32)


def convert_xrmb(source: str | Path | None = None, seed: int = 0, limit: int | None = None) -> Converted:
    """Source: a folder holding XRMB1.mat and XRMB2.mat. No randomness: ``seed`` is unused."""
    if source is None:
        raise StorageError("xrmb: --source must be a folder holding XRMB1.mat and XRMB2.mat")
    folder = given_source(source, "xrmb")
    p1, p2 = folder / "XRMB1.mat", folder / "XRMB2.mat"
    m1, m2 = read_mat(p1), read_mat(p2)
    splits = {}
    for name, (k1, k2, kl, kid) in XRMB_KEYS.items():
        acoustic = _features(m1, p1, k1, 273)
        articulatory = _features(m2, p2, k2, 112)
        labels = _get(m2, p2, kl).reshape(-1)
        speakers = _get(m2, p2, kid).reshape(-1)
        for key, arr in ((k2, articulatory), (kl, labels), (kid, speakers)):
            if len(arr) != len(acoustic):
                raise StorageError(f"{p2}: column {key!r} has {len(arr)} rows, {p1} column {k1!r} has {len(acoustic)}")
        if len(labels) and (labels.min() < 0 or labels.max() >= 40 or not np.all(labels == np.round(labels))):
            raise StorageError(f"{p2}: column {kl!r} has values outside the 40 phone classes 0..39 (min {labels.min()}, max {labels.max()})")
        keep = slice(None) if limit is None else slice(0, limit)
        splits[name] = Split(
            arrays={"acoustic": acoustic[keep], "articulatory": articulatory[keep]},
            labels=labels[keep].astype(np.int64),
            groups=speakers[keep].astype(np.int64),
        )
    return Converted(bundle=DatasetBundle(spec=XRMB_SPEC, **splits), inputs=[p1, p2])
