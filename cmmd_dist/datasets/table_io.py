"""A whole Parquet file in and out, for rows a user hands over (``cmmd-dist models predict``): read with a
one-line error for a missing or unreadable file, written to a temporary name and renamed (never half a file)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from cmmd_dist.errors import UserError, one_line

__all__ = ["read_parquet_file", "write_parquet_frame"]


def read_parquet_file(path: str | Path, option: str = "--input") -> pa.Table:
    """The table in the Parquet file ``path`` (given as ``option``); a UserError if it is not a readable file."""
    if not Path(path).is_file():
        raise UserError(f"{option} {path}: no such file")
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as err:
        raise UserError(f"{option} {path}: not a readable Parquet file ({one_line(err)})") from err


def write_parquet_frame(frame, out: Path) -> None:
    """The pandas DataFrame ``frame`` (index dropped) as the Parquet file ``out``: written beside it under a
    hidden name, then renamed; ``out``'s folder must exist."""
    tmp = out.with_name(f".{out.name}.partial")
    try:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
