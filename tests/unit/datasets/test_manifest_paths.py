"""Every path a manifest names stays inside the dataset's root: each escaping form is refused when the
manifest is read, naming the manifest and the entry, and the file it points at is never read.

Each case plants a DECOY where the bad path leads: a byte-exact copy of a real shard, with the checksum
the manifest expects, so a reader that followed the path would load it without complaint.
"""

import json
import shutil
from pathlib import Path

import pytest

from cmmd_dist.datasets.prepare import prepare
from cmmd_dist.datasets.shards import load_prepared, read_split
from cmmd_dist.datasets.streaming import ShardStream
from cmmd_dist.storage import StorageError, read_manifest

# (id, bad path as a function of the planted decoy's absolute path, where the decoy goes relative to tmp)
CASES = [
    ("parent", lambda decoy: "../decoy.parquet", "decoy.parquet"),
    ("deep-parent", lambda decoy: "test/../../decoy.parquet", "decoy.parquet"),
    ("grandparent", lambda decoy: "../../decoy.parquet", None),
    ("absolute", lambda decoy: str(decoy), "decoy.parquet"),
    ("file-uri", lambda decoy: f"file://{decoy}", "decoy.parquet"),
    ("file-scheme", lambda decoy: f"file:{decoy}", "decoy.parquet"),
    ("s3-uri", lambda decoy: "s3://other-bucket/test/part-00000.parquet", None),
    ("backslash", lambda decoy: "..\\decoy.parquet", "decoy.parquet"),
    ("backslash-inside", lambda decoy: "test\\..\\..\\decoy.parquet", "decoy.parquet"),
    ("home", lambda decoy: "~/decoy.parquet", None),
    ("drive", lambda decoy: "C:decoy.parquet", None),
    ("empty", lambda decoy: "", None),
    ("dot", lambda decoy: ".", None),
    ("nul", lambda decoy: "test/part-00000.parquet\x00.txt", None),
    ("not-a-string", lambda decoy: 7, None),
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("paths") / "ds"
    prepare("digits2v", None, str(root), rows_per_file=400)
    return root


def poisoned(prepared: Path, tmp_path: Path, make_path, decoy_at: str | None) -> tuple[Path, object, int]:
    """A copy of the dataset whose LAST 'test' entry points at ``make_path(decoy)``; returns (root, path, index)."""
    root = tmp_path / "ds"
    shutil.copytree(prepared, root)
    m = json.loads((root / "manifest.json").read_text())
    i = max(k for k, f in enumerate(m["files"]) if f["split"] == "test")
    decoy = tmp_path / (decoy_at or "decoy.parquet")
    if decoy_at:
        shutil.copyfile(root / m["files"][i]["path"], decoy)
    bad = make_path(decoy)
    m["files"][i]["path"] = bad
    (root / "manifest.json").write_text(json.dumps(m))
    return root, bad, i


@pytest.mark.parametrize("make_path,decoy_at", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_escaping_path_is_refused_when_the_manifest_is_read(prepared, tmp_path, make_path, decoy_at):
    root, bad, i = poisoned(prepared, tmp_path, make_path, decoy_at)
    names_entry = rf"{root}/manifest.json: files\[{i}\]: path"
    # the bad entry is in split 'test': reading 'train' fails too, so no file was opened before the check
    for read in (lambda: read_manifest(str(root)), lambda: read_split(str(root), "train"),
                 lambda: load_prepared(str(root)), lambda: ShardStream(str(root), "train", 64)):
        with pytest.raises(StorageError, match=names_entry):
            read()


def test_a_manifest_handed_in_is_checked_too(prepared, tmp_path):
    root, bad, i = poisoned(prepared, tmp_path, lambda decoy: str(decoy), "decoy.parquet")
    m = json.loads((root / "manifest.json").read_text())
    m["_uri"] = str(root / "manifest.json")
    with pytest.raises(StorageError, match=rf"files\[{i}\]: path '{bad}' is absolute"):
        read_split(str(root), "test", manifest=m)


def test_harmless_spellings_are_normalised_and_read(prepared, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(prepared, root)
    m = json.loads((root / "manifest.json").read_text())
    for f in m["files"]:
        f["path"] = "./" + f["path"].replace("/", "//")
    (root / "manifest.json").write_text(json.dumps(m))
    assert read_manifest(str(root))["files"][0]["path"] == "train/part-00000.parquet"
    assert len(load_prepared(str(root)).train) == 1197
