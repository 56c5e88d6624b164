"""Paths resolve, then are confined: a symlink that leaves the dataset root (or ``--out``) is refused before
the file is opened, naming the entry and the target, and prepare writes and deletes only its own files.

Each read case links a DECOY outside the root: a byte-exact copy of a real shard (the checksum the manifest
expects), so a reader that followed the link would load it without complaint. Each write case puts a VICTIM
outside ``--out`` where a prepare that followed the link would write or delete.
"""

import shutil
from pathlib import Path

import pytest

from cmmd_dist.cli.app import main
from cmmd_dist.datasets.prepare import prepare
from cmmd_dist.datasets.shards import load_prepared, read_split
from cmmd_dist.datasets.streaming import ShardStream
from cmmd_dist.storage import StorageError, sha256_hex

SHARD = "train/part-00000.parquet"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("confined") / "ds"
    prepare("digits2v", None, str(root), rows_per_file=400)
    return root


def copy_of(prepared: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(prepared, root)
    return root


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def readers(root: Path):
    yield "load_prepared", lambda: load_prepared(str(root))
    yield "read_split", lambda: read_split(str(root), "train")
    yield "stream", lambda: list(ShardStream(str(root), "train", 256, shuffle=False))
    yield "stream-verify", lambda: list(ShardStream(str(root), "train", 256, shuffle=False, verify=True))


def test_a_shard_linked_outside_the_root_is_refused_naming_entry_and_target(prepared, tmp_path):
    root = copy_of(prepared, tmp_path)
    decoy = tmp_path / "outside" / "decoy.parquet"
    decoy.parent.mkdir()
    (root / SHARD).rename(decoy)  # the very bytes the manifest expects
    (root / SHARD).symlink_to(decoy)
    for name, read in readers(root):
        with pytest.raises(StorageError) as err:
            read()
        msg = str(err.value)
        assert SHARD in msg and str(decoy) in msg and "outside the dataset root" in msg, (name, msg)


def test_a_split_folder_linked_outside_the_root_is_refused(prepared, tmp_path):
    root = copy_of(prepared, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (root / "train").rename(elsewhere)
    (root / "train").symlink_to(elsewhere, target_is_directory=True)
    for name, read in readers(root):
        with pytest.raises(StorageError, match=f"{SHARD}.*resolves to {elsewhere}/part-00000.parquet, outside"):
            read()


def test_links_that_stay_inside_the_root_are_read(prepared, tmp_path):
    root = copy_of(prepared, tmp_path)
    (root / "train").rename(root / "real-train")
    (root / "train").symlink_to("real-train", target_is_directory=True)
    assert len(load_prepared(str(root)).train) == 1197
    assert sum(len(b["ids"]) for b in ShardStream(str(root), "train", 256, shuffle=False)) == 1197


def test_a_secret_outside_the_root_is_never_read_nor_its_size_or_digest_printed(prepared, tmp_path):
    root = copy_of(prepared, tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"root:x:0:0:not-a-parquet-file\n" * 7)
    (root / SHARD).unlink()
    (root / SHARD).symlink_to(secret)
    size, digest = str(secret.stat().st_size), sha256_hex(secret.read_bytes())[:16]
    for name, read in readers(root):
        with pytest.raises(StorageError) as err:
            read()
        msg = str(err.value)
        assert str(secret) in msg and size not in msg and digest not in msg, (name, msg)


def test_a_manifest_linked_outside_the_root_is_refused(prepared, tmp_path):
    root = copy_of(prepared, tmp_path)
    outside = tmp_path / "manifest-elsewhere.json"
    (root / "manifest.json").rename(outside)
    (root / "manifest.json").symlink_to(outside)
    with pytest.raises(StorageError, match=f"manifest.json.*resolves to {outside}, outside the dataset root"):
        load_prepared(str(root))


def test_train_cli_refuses_a_linked_shard_in_one_line_exit_2(prepared, tmp_path, capsys):
    root = copy_of(prepared, tmp_path)
    decoy = tmp_path / "decoy.parquet"
    (root / SHARD).rename(decoy)
    (root / SHARD).symlink_to(decoy)
    code = main(["train", "--data", str(root), "--out", str(tmp_path / "runs"), "--no-progress", "--no-baseline",
                 "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"resolves to {decoy}, outside the dataset root" in err, err


def test_overwrite_through_a_linked_split_folder_deletes_nothing_outside(tmp_path):
    out = tmp_path / "ds"
    prepare("digits2v", None, str(out), rows_per_file=400)
    victims = tmp_path / "victims"
    (out / "train").rename(victims)  # the old manifest's train/part-0000N.parquet now lie outside --out
    (out / "train").symlink_to(victims, target_is_directory=True)
    before = {p.name: p.read_bytes() for p in victims.iterdir()}
    with pytest.raises(StorageError, match=f"train.* resolves to {victims}.*outside"):
        prepare("digits2v", None, str(out), rows_per_file=2000, seed=3, overwrite=True)
    assert {p.name: p.read_bytes() for p in victims.iterdir()} == before


def test_a_fresh_prepare_through_a_linked_split_folder_writes_nothing_outside(tmp_path):
    out, elsewhere = tmp_path / "ds", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "train").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(StorageError, match=f"train.* resolves to {elsewhere}.*outside"):
        prepare("digits2v", None, str(out), rows_per_file=400)
    assert list(elsewhere.iterdir()) == []


def test_a_fresh_prepare_into_a_linked_out_folder_is_fine(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    prepare("digits2v", None, str(tmp_path / "link"), rows_per_file=2000)
    assert len(load_prepared(str(tmp_path / "link")).train) == 1197


def test_overwrite_never_deletes_through_a_listed_shard_that_is_a_link(prepared, tmp_path):
    out = copy_of(prepared, tmp_path)
    keep = out / "keep.bin"  # inside --out, but not a shard of this dataset
    (out / SHARD).rename(keep)
    (out / SHARD).symlink_to("../keep.bin")
    with pytest.raises(StorageError, match=f"{SHARD}.*not a regular file"):
        prepare("digits2v", None, str(out), rows_per_file=2000, seed=3, overwrite=True)
    assert keep.exists() and (out / "manifest.json").exists()


def test_stale_shards_of_a_killed_prepare_are_removed_by_the_next(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    prepare("digits2v", None, str(out), rows_per_file=100)  # 12 + 3 + 3 shards
    (out / "manifest.json").unlink()  # as if killed before its manifest
    (out / "train" / "part-00003.parquet.tmp-0123456789abcdef0123456789abcdef").write_bytes(b"half")
    (out / "notes.txt").write_text("mine")  # not of the dataset's naming: stays
    (out / "other").mkdir()
    (out / "other" / "part-00000.parquet").write_text("someone else's")  # not a split folder: stays
    m = prepare("digits2v", None, str(out), rows_per_file=2000)
    assert files_under(out) == {f["path"] for f in m["files"]} | {"manifest.json", "notes.txt", "other/part-00000.parquet"}


def test_a_stale_shard_that_is_a_link_is_refused_with_the_command_that_clears_it(tmp_path):
    out = tmp_path / "ds"
    (out / "val").mkdir(parents=True)
    target = tmp_path / "precious.parquet"
    target.write_text("precious")
    (out / "val" / "part-00004.parquet").symlink_to(target)
    with pytest.raises(StorageError, match=r"val/part-00004.parquet: .*not a regular file.*rm "):
        prepare("digits2v", None, str(out), rows_per_file=2000)
    assert target.read_text() == "precious" and not (out / "manifest.json").exists()


def test_data_prepare_cli_refuses_a_linked_out_split_in_one_line(tmp_path, capsys):
    out, elsewhere = tmp_path / "ds", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "test").symlink_to(elsewhere, target_is_directory=True)
    code = main(["data", "prepare", "--dataset", "digits2v", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"resolves to {elsewhere}" in err and "outside --out" in err, err
    assert list(elsewhere.iterdir()) == [] and not (out / "manifest.json").exists()
