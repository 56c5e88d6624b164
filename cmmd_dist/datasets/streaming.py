"""Streaming prepared splits into batches, file by file, each DDP worker its own part, in bounded memory.

:class:`ShardStream` reads the Parquet shards of one or more splits with pyarrow (local or S3). Every
epoch the files are put in an order seeded by ``(seed, epoch)``, the same on every worker; the rows
that ``keep`` admits (all by default; a CV fold's fit rows, say) are counted per file from the small
``row`` column, and worker ``rank`` of ``world_size`` takes rows ``[rank * n, (rank + 1) * n)`` of
that order, ``n = kept // world_size``: the workers' parts are disjoint and equally long (DDP and the
exact gathered MMD need the same number of steps), and the fewer than ``world_size`` rows left over
change with the epoch. A worker opens only the files its part touches.

Shuffling is two-level, as Ray Data's ``local_shuffle_buffer_size``: the file order, then a buffer of
at least ``shuffle_buffer`` rows that mixes rows across files (when it holds ``shuffle_buffer +
batch_size`` rows it is permuted and all but ``shuffle_buffer / 2`` rows leave as batches). A
background thread reads the next ``prefetch`` files while the current ones are batched.

Memory of one stream (``B`` bytes a row, ``F`` rows a file): about ``(prefetch + 1) * F * B`` for the
files in flight plus ``2 * (shuffle_buffer + F) * B`` for the buffer while it is permuted. Nothing
depends on the number of rows in the dataset.

Every batch is ``{column: array}`` plus ``"ids"``: stable row ids (``cmmd_dist.train.folds.row_ids``: the
split's code times 10^12 plus the ``row`` column), which the fold filter and the tests key on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cmmd_dist.datasets.shard_layout import arrow_schema
from cmmd_dist.datasets.shard_reader import manifest_spec, read_file_table
from cmmd_dist.datasets.spec import DatasetSpec
from cmmd_dist.storage import S3Settings, StorageError, check_manifest_files, confined, join_uri, read_manifest, resolve

__all__ = ["ShardStream", "arrays_from_batch", "Keep", "DEFAULT_SHUFFLE_BUFFER", "DEFAULT_PREFETCH"]

Batch = dict[str, np.ndarray]
Keep = Callable[[str, np.ndarray], np.ndarray]
"""``keep(split, rows) -> bool mask``: which rows (their ``row`` values within ``split``) a stream takes."""

DEFAULT_SHUFFLE_BUFFER = 4096
DEFAULT_PREFETCH = 2


class ShardStream:
    """Batches of ``splits`` as dicts ``{modality: (B, *shape) float32, 'label': ..., 'ids': int64, ...}``.

    ``verify=True`` checks every file's sha256 (reads it whole first); otherwise the file size, row count
    and schema are checked, which is free. ``keep`` filters rows by split and row number (see :data:`Keep`)."""

    def __init__(
        self,
        root: str,
        splits: str | Sequence[str] = "train",
        batch_size: int = 256,
        *,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        columns: list[str] | None = None,
        verify: bool = False,
        prefetch: int = DEFAULT_PREFETCH,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        keep: Keep | None = None,
        settings: S3Settings | None = None,
        manifest: dict | None = None,
    ):
        from cmmd_dist.datasets.row_ids import row_ids  # folds name rows; this module only carries the names

        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.splits = [splits] if isinstance(splits, str) else list(splits)
        self.root, self.batch_size = root, batch_size
        self.rank, self.world_size, self.shuffle, self.seed = rank, world_size, shuffle, seed
        self.drop_last, self.verify, self.prefetch, self.settings = drop_last, verify, max(prefetch, 1), settings
        self.shuffle_buffer = max(int(shuffle_buffer), 0)
        self.manifest = manifest or read_manifest(root, settings)
        self.spec: DatasetSpec = manifest_spec(self.manifest)
        files = check_manifest_files(self.manifest, root=root)  # links resolved: every entry inside root
        self.entries = [dict(f) for f in files if f.get("split") in self.splits]
        for split in self.splits:
            if not any(e["split"] == split for e in self.entries):
                raise StorageError(f"{self.manifest['_uri']}: no files for split {split!r}")
        self.fs, self.base = resolve(root, settings)
        self.schema = arrow_schema(self.spec)
        self.columns = columns or [f.name for f in self.schema if f.name not in ("split", "row")]
        unknown = set(self.columns) - set(self.schema.names)
        if unknown:
            raise KeyError(f"{self.manifest['_uri']}: no column(s) {sorted(unknown)}; columns are {self.schema.names}")
        self._row_ids = row_ids
        self._kept: list[np.ndarray | None] = []  # per entry: positions of the kept rows (None: all)
        for e in self.entries:
            if "rows" not in e or keep is not None:  # a hand-written manifest may leave row counts out
                rows = self._row_column(e)
                e["rows"] = len(rows)
                self._kept.append(None if keep is None else np.flatnonzero(keep(e["split"], rows)))
            else:
                self._kept.append(None)
        self.epoch = 0

    def _row_column(self, entry: dict) -> np.ndarray:
        uri = confined(self.root, entry["path"])
        try:
            with self.fs.open_input_file(join_uri(self.base, entry["path"])) as f:
                return pq.read_table(f, columns=["row"]).column("row").to_numpy()
        except FileNotFoundError as err:
            raise StorageError(f"{uri}: shard is missing") from err
        except (pa.ArrowInvalid, OSError, KeyError) as err:
            raise StorageError(f"{uri}: not a readable Parquet file with a 'row' column: {err}") from err

    def _count(self, i: int) -> int:
        kept = self._kept[i]
        return int(self.entries[i]["rows"]) if kept is None else len(kept)

    @property
    def total_rows(self) -> int:
        """Rows the stream takes per epoch over all workers, before the remainder is dropped."""
        return sum(self._count(i) for i in range(len(self.entries)))

    @property
    def rows_per_rank(self) -> int:
        return self.total_rows // self.world_size

    def __len__(self) -> int:
        n, b = self.rows_per_rank, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch: file order, row shuffle and each worker's part depend on it."""
        self.epoch = epoch

    def _plan(self) -> list[tuple[int, np.ndarray | slice]]:
        """(entry index, kept positions of that file) pieces that make up this rank's part of this epoch."""
        order = np.arange(len(self.entries))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        lo = self.rank * self.rows_per_rank
        hi = lo + self.rows_per_rank
        pieces, offset = [], 0
        for i in order:
            count = self._count(i)
            start, stop = max(lo - offset, 0), min(hi - offset, count)
            if start < stop:
                kept = self._kept[i]
                pieces.append((int(i), slice(start, stop) if kept is None else kept[start:stop]))
            offset += count
            if offset >= hi:
                break
        return pieces

    def _read(self, i: int, take: np.ndarray | slice) -> Batch:
        entry = self.entries[i]
        uri = confined(self.root, entry["path"])  # again before the open: nothing outside root is read
        wanted = list(dict.fromkeys([*self.columns, "row"]))
        if self.verify:
            table = read_file_table(self.root, entry, True, self.settings).select(wanted)
        else:
            try:
                with self.fs.open_input_file(join_uri(self.base, entry["path"])) as f:
                    if "bytes" in entry and f.size() != entry["bytes"]:
                        raise StorageError(f"{uri}: truncated or altered shard: {f.size()} bytes, manifest says {entry['bytes']}")
                    table = pq.read_table(f, columns=wanted)
            except FileNotFoundError as err:
                raise StorageError(f"{uri}: shard is missing") from err
            except (pa.ArrowInvalid, OSError) as err:
                raise StorageError(f"{uri}: not a readable Parquet file (truncated?): {err}") from err
        if len(table) != entry["rows"]:
            raise StorageError(f"{uri}: has {len(table)} rows, manifest says {entry['rows']}")
        for name in wanted:
            want = self.schema.field(name).type
            if table.schema.field(name).type != want:
                raise StorageError(f"{uri}: column {name!r} has type {table.schema.field(name).type}, expected {want}")
        table = table.slice(take.start, take.stop - take.start) if isinstance(take, slice) else table.take(take)
        out = arrays_from_batch(table, self.spec)
        out["ids"] = self._row_ids(entry["split"], 1)[0] + out["row"].astype(np.int64)
        if "row" not in self.columns:
            del out["row"]
        return out

    def __iter__(self) -> Iterator[Batch]:
        pieces = self._plan()
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, 1])
        bs = self.batch_size
        buffer = _Buffer()
        with ThreadPoolExecutor(max_workers=1) as pool:  # one reader thread: pyarrow decodes with its own pool
            pending = [pool.submit(self._read, *p) for p in pieces[: self.prefetch]]
            nxt = len(pending)
            while pending:
                chunk = pending.pop(0).result()
                if nxt < len(pieces):
                    pending.append(pool.submit(self._read, *pieces[nxt]))
                    nxt += 1
                buffer.add(chunk)
                if not self.shuffle:  # in stored order: views of the file's columns, a copy only across files
                    yield from buffer.leading_batches(bs)
                elif buffer.held >= self.shuffle_buffer + bs:
                    perm = rng.permutation(buffer.held)
                    n_out = ((buffer.held - self.shuffle_buffer // 2) // bs) * bs
                    for s in range(0, n_out, bs):
                        yield buffer.take(perm[s : s + bs])
                    buffer.keep_only(perm[n_out:])
        if buffer.held:
            order = rng.permutation(buffer.held) if self.shuffle else np.arange(buffer.held)
            if self.drop_last:
                order = order[: (buffer.held // bs) * bs]
            for s in range(0, len(order), bs):
                yield buffer.take(order[s : s + bs])


class _Buffer:
    """Rows held between files: a list of chunks, rows gathered straight into each batch (one copy)."""

    def __init__(self):
        self.chunks: list[Batch] = []

    @property
    def held(self) -> int:
        return sum(_rows(c) for c in self.chunks)

    def add(self, chunk: Batch) -> None:
        if _rows(chunk):
            self.chunks.append(chunk)

    def take(self, idx: np.ndarray) -> Batch:
        """The rows at positions ``idx`` of the chunks laid end to end, as new arrays."""
        if len(self.chunks) == 1:
            return {k: v[idx] for k, v in self.chunks[0].items()}
        offsets = np.cumsum([0] + [_rows(c) for c in self.chunks])
        which = np.searchsorted(offsets, idx, side="right") - 1
        parts = [(c, which == c) for c in np.unique(which)]
        out = {}
        for k, first in self.chunks[0].items():
            arr = np.empty((len(idx), *first.shape[1:]), dtype=first.dtype)
            for c, sel in parts:
                arr[sel] = self.chunks[c][k][idx[sel] - offsets[c]]
            out[k] = arr
        return out

    def keep_only(self, idx: np.ndarray) -> None:
        self.chunks = [self.take(idx)] if len(idx) else []

    def leading_batches(self, bs: int) -> Iterator[Batch]:
        """Whole batches from the front, in order (views where a batch lies in one chunk); the rest stays."""
        while self.held >= bs:
            first = self.chunks[0]
            n = _rows(first)
            if n >= bs:
                yield {k: v[:bs] for k, v in first.items()}
                self.chunks[0] = {k: v[bs:] for k, v in first.items()}
                if n == bs:
                    self.chunks.pop(0)
            else:
                yield self.take(np.arange(bs))
                self._drop_front(bs)

    def _drop_front(self, n: int) -> None:
        while n:
            first = self.chunks[0]
            m = _rows(first)
            if m <= n:
                self.chunks.pop(0)
                n -= m
            else:
                self.chunks[0] = {k: v[n:] for k, v in first.items()}
                n = 0


def _rows(batch: Batch) -> int:
    return len(next(iter(batch.values())))


def arrays_from_batch(batch: pa.Table | dict, spec: DatasetSpec) -> Batch:
    """numpy arrays shaped by ``spec`` from an Arrow table (or a dict of numpy columns)."""
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
