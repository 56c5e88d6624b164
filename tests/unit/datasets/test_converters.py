"""Each converter on small files of its exact source format, written here: shapes, labels, pairing."""

import gzip
import pickle
import struct

import numpy as np
import pytest
from scipy import sparse
from scipy.io import savemat

from cmmd_dist.datasets.converters import CONVERTERS
from cmmd_dist.datasets.converters.text import DIGIT_WORDS, decode_text
from cmmd_dist.datasets.prepare import prepare
from cmmd_dist.storage import StorageError


def digits(n, offset=0):
    """(images, labels): labels cycle 0..9; pixel [0, 0] encodes the label so pairing can be checked."""
    y = (np.arange(n) + offset) % 10
    x = np.random.default_rng(n + offset).uniform(0, 1, (n, 28, 28)).astype(np.float32)
    x[:, 0, 0] = y / 10.0
    return x, y


def write_mnist_pkl(folder, n=(60, 20, 20)):
    parts = [digits(k, i) for i, k in enumerate(n)]
    with gzip.open(folder / "mnist.pkl.gz", "wb") as f:
        pickle.dump(tuple((x.reshape(len(x), -1), y) for x, y in parts), f)


def write_idx(path, arr):
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_svhn_source(tmp_path, svhn_writer):  # svhn_writer: tests/conftest.py
    write_mnist_pkl(tmp_path)
    svhn_writer(tmp_path)
    return tmp_path


def test_mnist2v_from_idx_files(tmp_path):
    x, y = digits(72)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", x * 255)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", y)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x[:12] * 255)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y[:12])
    out = CONVERTERS["mnist2v"](tmp_path, 0, None)
    b = out.bundle
    assert (len(b.train), len(b.val), len(b.test)) == (60, 12, 12)
    assert b.train.arrays["view1"].shape == (60, 28, 28) and len(out.inputs) == 4
    assert set(np.unique(b.test.labels)) <= set(range(10))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x0c" + b"\x01" * 5))
    with pytest.raises(StorageError, match=r"t10k-labels-idx1-ubyte.gz: truncated IDX file"):
        CONVERTERS["mnist2v"](tmp_path, 0, None)
    cut = (tmp_path / "train-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(cut[: len(cut) // 2])  # a cut-short download
    with pytest.raises(StorageError, match=r"train-images-idx3-ubyte.gz: not a readable IDX file \(truncated\?\)"):
        CONVERTERS["mnist2v"](tmp_path, 0, None)


def test_mnist2v_from_pickle(tmp_path):
    write_mnist_pkl(tmp_path)
    b = CONVERTERS["mnist2v"](tmp_path / "mnist.pkl.gz", 0, 10).bundle
    assert (len(b.train), len(b.val), len(b.test)) == (10, 10, 10)
    assert b.train.arrays["view2"].min() >= 0 and b.train.arrays["view2"].max() <= 1


def test_mnist_svhn_pairs_by_class(mnist_svhn_source):
    b = CONVERTERS["mnist-svhn"](mnist_svhn_source, 0, None).bundle
    assert (len(b.train), len(b.val), len(b.test)) == (60, 20, 20)
    for split in b.splits().values():
        assert split.arrays["svhn"].shape[1:] == (3, 32, 32) and split.arrays["svhn"].dtype == np.float32
        svhn_class = np.round((split.arrays["svhn"][:, 0, 0, 0] * 255 - 5) / 20).astype(int)
        mnist_class = np.round(split.arrays["mnist"][:, 0, 0] * 10).astype(int)
        assert np.array_equal(svhn_class, split.labels) and np.array_equal(mnist_class, split.labels)
        assert split.labels.min() >= 0 and split.labels.max() <= 9


def test_mnist3_has_both_paper_scenarios(mnist_svhn_source):
    b = CONVERTERS["mnist3"](mnist_svhn_source, 1, None).bundle
    obs, mis = b.spec.split_modalities("mnist")
    assert [m.name for m in mis] == ["mnist_rot", "svhn"]
    obs, mis = b.spec.split_modalities("mnist+mnist_rot")
    assert [m.name for m in mis] == ["svhn"]
    assert b.train.arrays["mnist_rot"].shape == (60, 28, 28)


def test_mst_text_spells_the_label(mnist_svhn_source):
    b = CONVERTERS["mst"](mnist_svhn_source, 0, None).bundle
    assert len(b.spec.scenarios) == 7
    text = b.test.arrays["text"]
    assert text.shape == (20, 8, 71) and np.all(text.sum(axis=-1) == 1)
    for row, label in zip(text, b.test.labels):
        s = decode_text(row)
        assert len(s) == 8 and s.strip() == DIGIT_WORDS[label]


def test_mst_prepare_is_byte_identical(mnist_svhn_source, tmp_path):
    m1 = prepare("mst", mnist_svhn_source, str(tmp_path / "a"), rows_per_file=32, seed=5)
    m2 = prepare("mst", mnist_svhn_source, str(tmp_path / "b"), rows_per_file=32, seed=5)
    assert m1 == m2 and len(m1["files"]) == 4
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()
    m3 = prepare("mst", mnist_svhn_source, str(tmp_path / "c"), rows_per_file=32, seed=6)
    assert m3["files"][0]["sha256"] != m1["files"][0]["sha256"]


def test_svhn_bad_labels_and_shape_name_file_and_column(mnist_svhn_source):
    savemat(mnist_svhn_source / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.array([[1], [2], [11], [3]])})
    with pytest.raises(StorageError, match=r"test_32x32.mat: column 'y' has values outside 1..10"):
        CONVERTERS["mnist-svhn"](mnist_svhn_source, 0, None)
    savemat(mnist_svhn_source / "test_32x32.mat", {"X": np.zeros((28, 28, 3, 4), np.uint8), "y": np.ones((4, 1))})
    with pytest.raises(StorageError, match=r"test_32x32.mat: column 'X' has shape \(28, 28, 3, 4\)"):
        CONVERTERS["mnist-svhn"](mnist_svhn_source, 0, None)


def write_xrmb(folder, n=(50, 10, 12)):
    rng = np.random.default_rng(0)
    m1, m2 = {}, {}
    for (k1, k2, kl, kid), rows in zip((("X1", "X2", "trainLabel", "trainID"), ("XV1", "XV2", "tuneLabel", "tuneID"),
                                        ("XTe1", "XTe2", "testLabel", "testID")), n):
        m1[k1] = rng.normal(size=(rows, 273))
        m2[k2] = rng.normal(size=(rows, 112))
        m2[kl] = (np.arange(rows) % 40).reshape(-1, 1).astype(np.float64)
        m2[kid] = (np.arange(rows) // 5 + 1).reshape(-1, 1)
    savemat(folder / "XRMB1.mat", m1)
    savemat(folder / "XRMB2.mat", m2)
    return m1, m2


def test_xrmb(tmp_path):
    m1, m2 = write_xrmb(tmp_path)
    b = CONVERTERS["xrmb"](tmp_path, 0, None).bundle
    assert b.train.arrays["acoustic"].shape == (50, 273) and b.test.arrays["articulatory"].shape == (12, 112)
    assert np.array_equal(b.val.arrays["acoustic"], m1["XV1"].astype(np.float32))
    assert b.train.labels.max() == 39 and b.spec.group_column == "speaker"
    assert np.array_equal(b.test.groups, m2["testID"].ravel())
    from cmmd_dist.datasets.shards import load_prepared

    prepare("xrmb", tmp_path, str(tmp_path / "out"), rows_per_file=20)
    back = load_prepared(str(tmp_path / "out"))
    assert np.array_equal(back.train.groups, b.train.groups) and back.spec.group_column == "speaker"
    m2["testLabel"][3] = 40
    savemat(tmp_path / "XRMB2.mat", m2)
    with pytest.raises(StorageError, match=r"XRMB2.mat: column 'testLabel' has values outside the 40 phone classes"):
        CONVERTERS["xrmb"](tmp_path, 0, None)
    del m2["tuneID"]
    savemat(tmp_path / "XRMB2.mat", m2)
    with pytest.raises(StorageError, match=r"XRMB2.mat: column 'tuneID' is missing"):
        CONVERTERS["xrmb"](tmp_path, 0, None)


def write_flickr(root, n=60, n_unlab=30):
    rng = np.random.default_rng(0)
    (root / "image").mkdir()
    (root / "text").mkdir()
    (root / "splits").mkdir()
    np.save(root / "image" / "labelled.npy", rng.normal(3.0, 2.0, (n, 3857)).astype(np.float32))
    counts = (rng.uniform(size=(n, 2000)) < 0.01) * rng.integers(1, 4, (n, 2000))
    sparse.save_npz(root / "text" / "text_all_2000_labelled.npz", sparse.csr_matrix(counts))
    np.save(root / "labels.npy", (rng.uniform(size=(n, 38)) < 0.2).astype(np.int8))
    order = rng.permutation(n)
    for name, ix in (("train", order[:30]), ("valid", order[30:40]), ("test", order[40:])):
        np.save(root / "splits" / f"{name}_indices_1.npy", ix)
    np.save(root / "image" / "unlabelled.npy", rng.normal(size=(n_unlab, 3857)).astype(np.float32))
    utags = np.zeros((n_unlab, 2000))
    utags[: n_unlab - 5, :3] = 1  # the last five have no tags and are dropped
    sparse.save_npz(root / "text" / "text_all_2000_unlabelled.npz", sparse.csr_matrix(utags))


def test_flickr(tmp_path):
    write_flickr(tmp_path)
    b = CONVERTERS["flickr"](tmp_path, 0, None).bundle
    assert (len(b.train), len(b.val), len(b.test), len(b.extra["unlabeled"])) == (30, 10, 20, 25)
    assert b.spec.label_kind == "multilabel" and b.train.labels.shape == (30, 38) and b.train.labels.dtype == np.float32
    assert set(np.unique(b.train.arrays["tags"])) <= {0.0, 1.0} and b.test.arrays["image"].shape == (20, 3857)
    assert np.allclose(b.train.arrays["image"].mean(axis=0), 0, atol=1e-4)
    assert np.allclose(b.train.arrays["image"].std(axis=0), 1, atol=1e-3)
    np.save(tmp_path / "labels.npy", np.ones((60, 37)))
    with pytest.raises(StorageError, match=r"labels.npy: column 'labels' has shape \(60, 37\)"):
        CONVERTERS["flickr"](tmp_path, 0, None)


def test_flickr_prepare_keeps_the_unlabeled_split(tmp_path):
    (tmp_path / "src").mkdir()
    write_flickr(tmp_path / "src")
    from cmmd_dist.datasets.shards import load_prepared

    prepare("flickr", tmp_path / "src", str(tmp_path / "out"), rows_per_file=16)
    b = load_prepared(str(tmp_path / "out"))
    assert set(b.extra) == {"unlabeled"} and len(b.extra["unlabeled"]) == 25
    assert b.train.labels.shape == (30, 38)
