"""Streaming a prepared split into training batches, file by file, each DDP worker its own part.

:class:`ShardStream` reads the Parquet shards of one split with pyarrow (local or S3), a background
thread fetching the next files while the current one is batched. Every epoch the files are put in a
seeded order shared by all workers; worker ``rank`` of ``world_size`` takes rows
``[rank * n, (rank + 1) * n)`` of that order, ``n = total // world_size``, so the workers' parts are
disjoint and equally long (the same number of steps: DDP needs that), and the few rows left over
change with the epoch. Rows are shuffled within each file. :func:`ray_dataset` is the Ray Data route
(``ray.data.read_parquet`` over the same files, for ``ray.train.get_dataset_shard``).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cmmd_dist.datasets.shards import arrow_schema, manifest_spec, read_file_table
from cmmd_dist.datasets.spec import DatasetSpec
from cmmd_dist.storage import S3Settings, StorageError, join_uri, read_manifest, resolve, resolve_without_keys

__all__ = ["ShardStream", "ray_dataset", "arrays_from_batch"]

Batch = dict[str, np.ndarray]


class ShardStream:
    """Batches of one split as dicts ``{modality: (B, *shape) float32, 'label': ..., group: ...}``.

    ``verify=True`` checks every file's sha256 (reads it whole first); otherwise the file size and
    the schema are checked, which is free. Arrays of an unshuffled stream are read-only views."""

    def __init__(
        self,
        root: str,
        split: str = "train",
        batch_size: int = 256,
        *,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        columns: list[str] | None = None,
        verify: bool = False,
        prefetch: int = 2,
        settings: S3Settings | None = None,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.root, self.split, self.batch_size = root, split, batch_size
        self.rank, self.world_size, self.shuffle, self.seed = rank, world_size, shuffle, seed
        self.drop_last, self.verify, self.prefetch, self.settings = drop_last, verify, max(prefetch, 1), settings
        self.manifest = read_manifest(root, settings)
        self.spec: DatasetSpec = manifest_spec(self.manifest)
        self.entries = [f for f in self.manifest.get("files", []) if f.get("split") == split]
        if not self.entries:
            raise StorageError(f"{self.manifest['_uri']}: no files for split {split!r}")
        self.fs, self.base = resolve(root, settings)
        for e in self.entries:
            if "rows" not in e:  # a hand-written manifest may leave row counts out: read the footers
                e["rows"] = pq.ParquetFile(self.fs.open_input_file(join_uri(self.base, e["path"]))).metadata.num_rows
        self.schema = arrow_schema(self.spec)
        self.columns = columns or [f.name for f in self.schema if f.name not in ("split", "row")]
        unknown = set(self.columns) - set(self.schema.names)
        if unknown:
            raise KeyError(f"{self.manifest['_uri']}: no column(s) {sorted(unknown)}; columns are {self.schema.names}")
        self.epoch = 0

    @property
    def total_rows(self) -> int:
        return sum(int(e["rows"]) for e in self.entries)

    @property
    def rows_per_rank(self) -> int:
        return self.total_rows // self.world_size if self.world_size > 1 else self.total_rows

    def __len__(self) -> int:
        n, b = self.rows_per_rank, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch: file order, row shuffle and each worker's part depend on it."""
        self.epoch = epoch

    def _plan(self) -> list[tuple[dict, int, int]]:
        """(file entry, first row, stop row) pieces that make up this rank's part of this epoch."""
        order = np.arange(len(self.entries))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        lo = self.rank * self.rows_per_rank
        hi = lo + self.rows_per_rank
        pieces, offset = [], 0
        for i in order:
            e = self.entries[i]
            start, stop = max(lo - offset, 0), min(hi - offset, e["rows"])
            if start < stop:
                pieces.append((e, int(start), int(stop)))
            offset += e["rows"]
        return pieces

    def _read(self, entry: dict, start: int, stop: int) -> Batch:
        uri = join_uri(self.root, entry["path"])
        if self.verify:
            table = read_file_table(self.root, entry, True, self.settings).select(self.columns)
        else:
            try:
                with self.fs.open_input_file(join_uri(self.base, entry["path"])) as f:
                    if "bytes" in entry and f.size() != entry["bytes"]:
                        raise StorageError(f"{uri}: truncated or altered shard: {f.size()} bytes, manifest says {entry['bytes']}")
                    table = pq.read_table(f, columns=self.columns)
            except FileNotFoundError as err:
                raise StorageError(f"{uri}: shard is missing") from err
            except (pa.ArrowInvalid, OSError) as err:
                raise StorageError(f"{uri}: not a readable Parquet file (truncated?): {err}") from err
        if len(table) != entry["rows"]:
            raise StorageError(f"{uri}: has {len(table)} rows, manifest says {entry['rows']}")
        for name in self.columns:
            want = self.schema.field(name).type
            if table.schema.field(name).type != want:
                raise StorageError(f"{uri}: column {name!r} has type {table.schema.field(name).type}, expected {want}")
        return arrays_from_batch(table.slice(start, stop - start), self.spec)

    def __iter__(self) -> Iterator[Batch]:
        pieces = self._plan()
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, 1])
        carry: Batch | None = None
        with ThreadPoolExecutor(max_workers=min(self.prefetch, 2)) as pool:
            pending = [pool.submit(self._read, *p) for p in pieces[: self.prefetch]]
            nxt = len(pending)
            while pending:
                chunk = pending.pop(0).result()
                if nxt < len(pieces):
                    pending.append(pool.submit(self._read, *pieces[nxt]))
                    nxt += 1
                n = _rows(chunk)
                perm = rng.permutation(n) if self.shuffle else None
                pos = 0
                if carry is not None:
                    need = self.batch_size - _rows(carry)
                    head = _take(chunk, perm, 0, min(need, n))
                    carry = {k: np.concatenate([carry[k], head[k]]) for k in carry}
                    pos = min(need, n)
                    if _rows(carry) < self.batch_size:
                        continue
                    yield carry
                    carry = None
                while n - pos >= self.batch_size:
                    yield _take(chunk, perm, pos, pos + self.batch_size)
                    pos += self.batch_size
                if pos < n:
                    carry = _take(chunk, perm, pos, n)
        if carry is not None and not self.drop_last:
            yield carry


def _rows(batch: Batch) -> int:
    return len(next(iter(batch.values())))


def _take(chunk: Batch, perm: np.ndarray | None, start: int, stop: int) -> Batch:
    if perm is None:
        return {k: v[start:stop] for k, v in chunk.items()}
    idx = perm[start:stop]
    return {k: v[idx] for k, v in chunk.items()}


def arrays_from_batch(batch: pa.Table | dict, spec: DatasetSpec) -> Batch:
    """numpy arrays shaped by ``spec`` from an Arrow table or a Ray Data numpy batch."""
    out: Batch = {}
    columns = batch.column_names if isinstance(batch, pa.Table) else list(batch)
    widths = {m.name: m.shape for m in spec.modalities}
    if spec.label_kind == "multilabel":
        widths["label"] = (spec.num_classes,)
    for name in columns:
        col = batch.column(name) if isinstance(batch, pa.Table) else batch[name]
        if isinstance(col, (pa.ChunkedArray, pa.Array)):
            arr = col.chunk(0) if isinstance(col, pa.ChunkedArray) and col.num_chunks == 1 else col
            if isinstance(arr, pa.ChunkedArray):
                arr = arr.combine_chunks()
            if name in widths:
                values = arr.flatten().to_numpy(zero_copy_only=False)
            else:
                values = arr.to_numpy(zero_copy_only=False)
        else:
            values = np.asarray(col) if getattr(col, "dtype", None) != object else np.stack(col)
        out[name] = values.reshape((-1, *widths[name])) if name in widths else values
    return out


def ray_dataset(root: str, split: str = "train", settings: S3Settings | None = None, **read_kwargs):
    """The shards of ``split`` as a Ray Dataset (``ray.data.read_parquet`` over the manifest's files).

    Give it to ``TorchTrainer(datasets={'train': ...})`` and turn the batches of
    ``ray.train.get_dataset_shard('train').iter_batches(batch_format='pyarrow')`` into arrays with
    :func:`arrays_from_batch` (the numpy format also works, slower: Ray hands list columns as objects)."""
    import ray.data

    manifest = read_manifest(root, settings)
    fs, base = resolve_without_keys(root, settings)  # Ray pickles it into its tasks: no keys in it
    paths = [join_uri(base, f["path"]) for f in manifest.get("files", []) if f.get("split") == split]
    if not paths:
        raise StorageError(f"{manifest['_uri']}: no files for split {split!r}")
    return ray.data.read_parquet(paths, filesystem=fs, **read_kwargs)
