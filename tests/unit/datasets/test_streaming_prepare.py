"""data prepare --dataset flickr streams: peak memory does not grow with the source's rows, the shards are
the bytes that converting the source whole gives, and an interrupted or failed prepare leaves no manifest."""

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import sparse

import cmmd_dist.datasets.prepare as prepare_module
from cmmd_dist.datasets.converters import CONVERTERS
from cmmd_dist.datasets.converters.array_rows import open_rows
from cmmd_dist.datasets.converters.flickr import FLICKR_SPEC
from cmmd_dist.datasets.prepare import prepare
from cmmd_dist.datasets.shards import load_prepared, write_bundle
from cmmd_dist.datasets.spec import DatasetBundle, Split
from cmmd_dist.datasets.synth import synth_like_flickr
from cmmd_dist.storage import StorageError


def convert_whole(root):
    """The converter as it was before it streamed: every array loaded whole, float32 numpy mean/std."""
    labels = np.load(root / "labels.npy")
    image = np.load(root / "image" / "labelled.npy").astype(np.float32)
    tags = (sparse.load_npz(root / "text" / "text_all_2000_labelled.npz").toarray() > 0).astype(np.float32)
    idx = {s: np.load(root / "splits" / f"{s}_indices_1.npy") for s in ("train", "valid", "test")}
    tr = image[idx["train"]]
    mean, std = tr.mean(axis=0), tr.std(axis=0)
    std[std == 0] = 1.0

    def make(img, txt, y, rows):
        return Split(arrays={"image": (img[rows] - mean) / std, "tags": txt[rows]}, labels=y[rows].astype(np.float32))

    ui = np.load(root / "image" / "unlabelled.npy").astype(np.float32)
    ut = (sparse.load_npz(root / "text" / "text_all_2000_unlabelled.npz").toarray() > 0).astype(np.float32)
    keep = np.flatnonzero(ut.sum(axis=1) >= 2)
    unlabeled = make(ui, ut, np.zeros((len(ui), 38), np.float32), keep)
    return DatasetBundle(spec=FLICKR_SPEC, train=make(image, tags, labels, idx["train"]),
                         val=make(image, tags, labels, idx["valid"]), test=make(image, tags, labels, idx["test"]),
                         extra={"unlabeled": unlabeled})


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """90 labelled rows with the split indices shuffled (rows are gathered out of order) and 120 unlabelled."""
    root = tmp_path_factory.mktemp("flickr") / "src"
    synth_like_flickr(root, 90, 120, seed=0)
    for name in ("train", "valid", "test"):
        path = root / "splits" / f"{name}_indices_1.npy"
        np.save(path, np.random.default_rng(len(name)).permutation(np.load(path)))
    return root


def test_streamed_shards_are_the_bytes_of_the_whole_conversion(source, tmp_path):
    converted = CONVERTERS["flickr"](source, 0, None, block_rows=7)  # 7 divides neither a split nor a file
    assert converted.streamed and [len(b) for b in converted.stream.blocks("val")] == [7, 7, 4]
    streamed = prepare("flickr", source, str(tmp_path / "streamed"), rows_per_file=16)
    whole = write_bundle(convert_whole(source), str(tmp_path / "whole"), rows_per_file=16,
                         source_sha256=streamed["source_sha256"], extra={"seed": 0, "limit": None})
    assert streamed["rows"] == whole["rows"] and streamed["rows"]["val"] == 18
    assert 60 < streamed["rows"]["unlabeled"] < 120  # rows with fewer than 2 tags dropped
    assert [(f["path"], f["rows"], f["sha256"]) for f in streamed["files"]] == \
           [(f["path"], f["rows"], f["sha256"]) for f in whole["files"]]
    a, b = load_prepared(str(tmp_path / "streamed")), load_prepared(str(tmp_path / "whole"))
    for name, split in a.splits().items():
        other = b.splits()[name]
        assert np.array_equal(split.labels, other.labels)
        for k in ("image", "tags"):
            assert np.array_equal(split.arrays[k], other.arrays[k]), (name, k)


def interrupt_after(blocks, monkeypatch, error):
    """Make flickr's ``unlabeled`` split raise ``error`` once ``blocks`` of its blocks have been handed on."""
    real = CONVERTERS["flickr"]

    def converter(source, seed, limit):
        converted = real(source, seed, limit, block_rows=20)
        read = converted.stream.splits["unlabeled"]

        def dying():
            for i, block in enumerate(read()):
                if i == blocks:
                    raise error
                yield block

        converted.stream.splits["unlabeled"] = dying
        return converted

    monkeypatch.setitem(prepare_module.CONVERTERS, "flickr", converter)


def test_an_interrupted_streaming_prepare_leaves_no_manifest_and_a_rerun_completes(source, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    done = prepare("flickr", source, str(out), rows_per_file=16)  # the complete dataset being rewritten
    interrupt_after(3, monkeypatch, KeyboardInterrupt("killed mid-prepare"))
    with pytest.raises(KeyboardInterrupt):
        prepare("flickr", source, str(out), rows_per_file=16)
    monkeypatch.undo()
    assert not (out / "manifest.json").exists()
    with pytest.raises(StorageError, match="no manifest"):
        load_prepared(str(out))
    # the shards went out as the blocks came: train/val/test and the first unlabeled rows were on disk
    assert (out / "test" / "part-00001.parquet").exists() and (out / "unlabeled" / "part-00002.parquet").exists()
    assert prepare("flickr", source, str(out), rows_per_file=16) == done


def test_a_bad_block_half_way_is_one_error_and_leaves_nothing(source, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    interrupt_after(2, monkeypatch, StorageError(f"{source}/image/unlabelled.npy: not a readable array file"))
    with pytest.raises(StorageError, match="unlabelled.npy: not a readable array file"):
        prepare("flickr", source, str(out), rows_per_file=16)
    assert not (out / "manifest.json").exists() and not list(out.rglob("*.parquet"))


def test_row_readers_give_the_rows_of_the_whole_array(tmp_path):
    rng = np.random.default_rng(0)
    whole = rng.integers(-1, 3, (40, 6)).astype(">f8")  # big-endian float64: read as stored, cast by the caller
    np.save(tmp_path / "c.npy", whole)
    np.save(tmp_path / "f.npy", np.asfortranarray(whole))
    (tmp_path / "shards").mkdir()
    np.save(tmp_path / "shards" / "a.npy", whole[:15].astype(np.float32))
    np.save(tmp_path / "shards" / "b.npy", whole[15:])
    np.savez(tmp_path / "dense.npz", text=whole)
    assert whole[3, 2] == 0  # a duplicate pair there, -5 and 5: summed as densifying does, it is no tag
    base = sparse.csr_matrix(whole.astype(np.float64))
    at = base.indptr[4]
    dup = sparse.csr_matrix((np.r_[base.data[:at], -5.0, 5.0, base.data[at:]],
                             np.r_[base.indices[:at], 2, 2, base.indices[at:]], base.indptr + 2 * (np.arange(41) >= 4)),
                            shape=whole.shape)
    sparse.save_npz(tmp_path / "sparse.npz", dup)
    index = np.r_[7, 8, 9, 0, 39, 16, 14, 15, 3]  # runs, jumps, backwards, across the shard boundary
    for name in ("c.npy", "f.npy", "shards", "dense.npz", "sparse.npz"):
        rows = open_rows(tmp_path / name)
        want = dup.toarray() if name == "sparse.npz" else whole
        assert rows.shape == (40, 6) and np.array_equal(rows.take(index), want[index]), name
        assert np.array_equal(rows.take_binary(index), (want[index] > 0).astype(np.float32)), name
        assert np.array_equal(rows.positive_counts(7), (want > 0).sum(axis=1)), name
    (tmp_path / "cut.npy").write_bytes((tmp_path / "c.npy").read_bytes()[:-50])
    with pytest.raises(StorageError, match=r"cut.npy: not a readable array file"):
        open_rows(tmp_path / "cut.npy")


# VmHWM of the child's own address space (see test_synth.py for why not ru_maxrss)
PEAK = """
import sys
import cmmd_dist.datasets.converters.flickr as flickr
from cmmd_dist.datasets.prepare import prepare
flickr.BLOCK_ROWS = 256
manifest = prepare("flickr", sys.argv[1], sys.argv[2], rows_per_file=256)
print(manifest["rows"]["unlabeled"], open("/proc/self/status").read().split("VmHWM:")[1].split()[0])  # KiB
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_does_not_grow_with_the_source_rows(tmp_path):
    peak, kept = {}, {}
    for unlabelled in (2000, 8000):  # 47 MB against 188 MB of float32 image features and tags, if loaded whole
        src = tmp_path / f"src{unlabelled}"
        synth_like_flickr(src, 64, unlabelled, seed=0)
        done = subprocess.run([sys.executable, "-c", PEAK, str(src), str(tmp_path / f"out{unlabelled}")],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        rows, kib = done.stdout.split()[-2:]
        kept[unlabelled], peak[unlabelled] = int(rows), int(kib)
    assert kept[8000] > 3 * kept[2000]  # the bigger source did write about 4x the rows
    assert peak[8000] <= 1.1 * peak[2000], peak
    manifest = json.loads((tmp_path / "out8000" / "manifest.json").read_text())
    assert max(f["rows"] for f in manifest["files"]) == 256
