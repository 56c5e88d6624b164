"""``footer_labels.label_range``: the label range of the rows a run trains on, from Parquet footers only (no row
read): only the row groups holding the first ``limit`` rows of each split count, and a footer without
statistics says nothing. The refusal of a sweep over such a dataset: tests/integration/test_bad_input.py."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from cmmd_dist.datasets.footer_labels import label_range


def shard(root, rel: str, groups: list[list[int]], statistics: bool = True) -> dict:
    """A shard of ``label`` row groups as listed (one Parquet row group each), and its manifest entry."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, pa.schema([("label", pa.int64())]), write_statistics=statistics) as w:
        for labels in groups:
            w.write_table(pa.table({"label": pa.array(labels, pa.int64())}))
    return {"path": rel, "split": rel.split("/")[0]}


def test_only_the_row_groups_of_the_first_limit_rows_count(tmp_path):
    manifest = {"files": [shard(tmp_path, "train/part-00000.parquet", [[3, 3], [3, 3], [1, 7]]),
                          shard(tmp_path, "val/part-00000.parquet", [[3, 3], [0, 3]])]}
    root = str(tmp_path)
    assert label_range(root, manifest) == (1, 7)  # stops at the first row group with a second class
    assert label_range(root, manifest, limit=4) == (3, 3)
    assert label_range(root, manifest, limit=5) == (1, 7)
    assert label_range(root, manifest, ("train", "val"), limit=2) == (3, 3)
    assert label_range(root, manifest, ("train", "val"), limit=3) == (0, 3)
    assert label_range(root, manifest, ("test",)) is None  # no rows listed


def test_a_footer_without_statistics_says_nothing(tmp_path):
    manifest = {"files": [shard(tmp_path, "train/part-00000.parquet", [[3, 3]], statistics=False)]}
    assert label_range(str(tmp_path), manifest) is None
