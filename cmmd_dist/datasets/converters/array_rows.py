"""Rows of a 2-D array file read on demand, so a converter never holds a source bigger than memory.

    reader = open_rows(Path("image/unlabelled.npy"))      # reads the header only
    reader.shape                                         # (1000000, 3857)
    block = reader.take(np.arange(4096, 8192))           # those rows, in that order, in the file's dtype
    tags = open_rows(Path("text/text_all_2000_unlabelled.npz")).take_binary(index)   # float32 0/1

``.npy`` (and a folder of ``.npy`` shards, concatenated in name order): the header is read with
``np.load(mmap_mode="r")``, the rows with positioned reads, one per run of consecutive indices. The rows
are not read through the memory map: every page touched through a map stays in this process's resident
memory while the map lives, which for a 15 GB file is what streaming is meant to avoid. A Fortran-order
``.npy`` (rare) is read through its map. A scipy.sparse ``.npz`` is held as CSR (about 12 bytes a stored
value, nothing per zero) and densified a block of rows at a time; a dense ``.npz`` is loaded whole
(a zip member cannot be read at an offset).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cmmd_dist.storage import StorageError

__all__ = ["ArrayRows", "NpyRows", "NpyShards", "CsrRows", "open_rows"]


class ArrayRows:
    """Rows of an array already in memory; the base of every reader (``shape``, ``take``, ``take_binary``)."""

    def __init__(self, path: Path, array: np.ndarray):
        self.path, self._array = path, array

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._array.shape)

    def take(self, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` (in that order) as a new array in the file's dtype."""
        return np.asarray(self._array[np.asarray(index, np.int64)])

    def take_binary(self, index: np.ndarray) -> np.ndarray:
        """Rows ``index`` as float32, 1 where the value is > 0 (tag counts to tags), else 0."""
        return (self.take(index) > 0).astype(np.float32)

    def positive_counts(self, block_rows: int) -> np.ndarray:
        """Per row, how many values are > 0, read ``block_rows`` rows at a time."""
        n = self.shape[0]
        return np.concatenate([(self.take(np.arange(a, min(a + block_rows, n))) > 0).sum(axis=1)
                               for a in range(0, n, block_rows)] or [np.zeros(0, np.int64)])


class NpyRows(ArrayRows):
    """A C-order ``.npy`` read with positioned reads (see the module docstring)."""

    def __init__(self, path: Path):
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)  # parses and checks the header and the size
        super().__init__(path, mapped)
        self.dtype, self._offset = mapped.dtype, mapped.offset
        if mapped.ndim == 2 and mapped.shape[0] > 1 and not mapped.flags.c_contiguous:
            return  # Fortran order: rows are not contiguous in the file; read through the map
        self._shape = tuple(mapped.shape)
        self._array = None  # unmapped now: nothing of the file stays resident

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape if self._array is None else super().shape

    def take(self, index: np.ndarray) -> np.ndarray:
        if self._array is not None:
            return super().take(index)
        index = np.asarray(index, np.int64).reshape(-1)
        out = np.empty((len(index), *self._shape[1:]), self.dtype)
        if not len(index) or not out.size:
            return out
        if index.min() < 0 or index.max() >= self._shape[0]:
            raise IndexError(f"{self.path}: row index outside [0, {self._shape[0]})")
        row_bytes = out[0].nbytes
        flat = memoryview(out.reshape(-1).view(np.uint8))
        bounds = np.concatenate(([0], np.flatnonzero(np.diff(index) != 1) + 1, [len(index)]))
        with open(self.path, "rb", buffering=0) as f:
            for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):  # one read per run of consecutive rows
                f.seek(self._offset + int(index[a]) * row_bytes)
                view = flat[a * row_bytes : b * row_bytes]
                while len(view):
                    got = f.readinto(view)
                    if not got:
                        raise StorageError(f"{self.path}: not a readable array file: truncated at row {index[a]}")
                    view = view[got:]
        return out


class NpyShards(ArrayRows):
    """``.npy`` shards read as one array, concatenated in the given order."""

    def __init__(self, path: Path, shards: list[NpyRows]):
        super().__init__(path, np.zeros((0, 0)))
        widths = {s.shape[1:] for s in shards}
        if len(widths) > 1 or any(len(s.shape) < 1 for s in shards):
            raise StorageError(f"{path}: .npy shards have different row shapes {sorted(widths)}")
        self._shards = shards
        self._starts = np.cumsum([0] + [s.shape[0] for s in shards])
        self.dtype = np.result_type(*(s.dtype for s in shards))

    @property
    def shape(self) -> tuple[int, ...]:
        return (int(self._starts[-1]), *self._shards[0].shape[1:])

    def take(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, np.int64).reshape(-1)
        which = np.searchsorted(self._starts[1:], index, side="right")
        out = np.empty((len(index), *self.shape[1:]), self.dtype)
        for k in np.unique(which).tolist():
            mask = which == k
            out[mask] = self._shards[k].take(index[mask] - self._starts[k])
        return out


class CsrRows(ArrayRows):
    """A scipy.sparse matrix held as CSR with its duplicates summed (so > 0 means what it meant densified)."""

    def __init__(self, path: Path, matrix):
        csr = matrix.tocsr()
        csr.sum_duplicates()
        super().__init__(path, csr)

    def take(self, index: np.ndarray) -> np.ndarray:
        return self._array[np.asarray(index, np.int64)].toarray()

    def take_binary(self, index: np.ndarray) -> np.ndarray:
        sub = self._array[np.asarray(index, np.int64)]  # a CSR of those rows only: no dense float64 block
        out = np.zeros(sub.shape, np.float32)
        rows = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))
        positive = sub.data > 0
        out[rows[positive], sub.indices[positive]] = 1.0
        return out

    def positive_counts(self, block_rows: int) -> np.ndarray:
        csr = self._array
        seen = np.concatenate(([0], np.cumsum(csr.data > 0)))
        return seen[csr.indptr[1:]] - seen[csr.indptr[:-1]]


def open_rows(path: Path) -> ArrayRows:
    """A reader of the 2-D array in ``path``: a .npy, a folder of .npy shards, a scipy.sparse .npz or a dense
    .npz (key 'text', else the first); a missing or unreadable file is a StorageError naming it."""
    if path.is_dir():
        shards = sorted(path.glob("*.npy"))
        if not shards:
            raise StorageError(f"{path}: folder holds no .npy shards")
        return NpyShards(path, [open_rows(p) for p in shards])
    if not path.exists():
        raise StorageError(f"{path}: Flickr file is missing")
    try:
        if path.suffix == ".npy":
            return NpyRows(path)
        with np.load(path, allow_pickle=False) as z:
            if "indptr" in z.files:
                from scipy import sparse

                return CsrRows(path, sparse.load_npz(path))
            key = "text" if "text" in z.files else z.files[0]
            return ArrayRows(path, z[key])
    except (ValueError, OSError) as err:
        raise StorageError(f"{path}: not a readable array file: {err}") from err
