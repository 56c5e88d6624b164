"""data synth --like flickr: the real Flickr converter reads its output, labels are learnable from the
image features, the same seed gives the same bytes, peak memory does not grow with rows, bad input is
one UserError naming the option."""

import argparse
import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from sklearn.multiclass import OneVsRestClassifier

from cmmd_dist.datasets.converters import CONVERTERS
from cmmd_dist.cli.synth import add_synth_subcommand
from cmmd_dist.datasets.synth import BLOCK_ROWS, SYNTH_LAYOUT, synth_like_flickr
from cmmd_dist.errors import UserError

ROWS, UNLABELLED = 600, 300
MAP_MARGIN = 0.2  # test mAP of a linear model on the image features must beat the random ranking by this much


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "flickr"
    summary = synth_like_flickr(out, ROWS, UNLABELLED, seed=0)
    return out, summary, CONVERTERS["flickr"](out, 0, None).bundle


def digest(root):
    return {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in SYNTH_LAYOUT if (root / f).exists()}


def test_converter_reads_the_layout_shapes_splits_and_unlabelled_part(synth):
    out, summary, b = synth
    assert sorted(summary["files"]) == sorted(SYNTH_LAYOUT)
    # the split files are used (40/20/40 as Flickr's 10000/5000/10000), and they partition the rows
    assert (len(b.train), len(b.val), len(b.test)) == (240, 120, 240)
    idx = np.concatenate([np.load(out / "splits" / f"{s}_indices_1.npy") for s in ("train", "valid", "test")])
    assert np.array_equal(np.sort(idx), np.arange(ROWS))
    assert b.train.arrays["image"].shape == (240, 3857) and b.test.arrays["tags"].shape == (240, 2000)
    assert b.train.labels.shape == (240, 38) and set(np.unique(b.train.labels)) == {0.0, 1.0}
    # tags are sparse like real ones (about 5 a row), every label occurs
    tags = sparse.load_npz(out / "text" / "text_all_2000_labelled.npz")
    assert tags.shape == (ROWS, 2000) and 3 < tags.nnz / ROWS < 8
    labels = np.load(out / "labels.npy")
    assert labels.shape == (ROWS, 38) and (labels.sum(axis=0) > 0).all()
    # unlabelled: the converter keeps exactly the rows with >= 2 tags (some have fewer)
    utags = sparse.load_npz(out / "text" / "text_all_2000_unlabelled.npz")
    kept = int((utags.getnnz(axis=1) >= 2).sum())
    assert np.load(out / "image" / "unlabelled.npy", mmap_mode="r").shape == (UNLABELLED, 3857)
    assert 0.5 * UNLABELLED < kept < UNLABELLED and len(b.extra["unlabeled"]) == kept


def test_labels_are_learnable_from_the_image_features(synth):
    _, _, b = synth
    clf = OneVsRestClassifier(LogisticRegression(solver="liblinear", dual=True, C=1e-3))  # dual: rows << dims, fast
    scores = clf.fit(b.train.arrays["image"], b.train.labels).decision_function(b.test.arrays["image"])
    present = b.test.labels.sum(axis=0) > 0
    mean_ap = average_precision_score(b.test.labels[:, present], scores[:, present], average="macro")
    random_ap = b.test.labels[:, present].mean()  # a random ranking's expected AP is the prevalence
    assert mean_ap > random_ap + MAP_MARGIN, (mean_ap, random_ap)  # seed 0: about 0.5 against 0.10


def test_same_seed_same_bytes_other_seed_other_data(synth, tmp_path):
    out, _, _ = synth
    small = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        synth_like_flickr(tmp_path / name, 40, 10, seed=seed)
        small[name] = digest(tmp_path / name)
    assert small["a"] == small["b"]
    assert not set(small["a"].values()) & set(small["c"].values())
    # a row's values depend on its block, not on how many rows follow: the first 40 rows of the 600
    assert np.array_equal(np.load(tmp_path / "a" / "image" / "labelled.npy"),
                          np.load(out / "image" / "labelled.npy", mmap_mode="r")[:40])


def test_cli_overwrite_replaces_only_its_files_and_drops_a_stale_unlabelled_part(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    data = parser.add_subparsers(dest="command").add_parser("data")
    add_synth_subcommand(data.add_subparsers(dest="data_command"))
    out = tmp_path / "out"

    def run(*extra):
        args = parser.parse_args(["data", "synth", "--like", "flickr", "--out", str(out), *extra])
        return args.func(args)

    assert run("--rows", "20", "--unlabelled", "5", "--seed", "3") == 0
    assert json.loads(capsys.readouterr().out)["unlabelled"] == 5
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"^--out .* is a non-empty folder; add --overwrite"):
        run("--rows", "20")
    assert run("--rows", "20", "--overwrite") == 0
    assert (out / "notes.txt").read_text() == "mine" and not (out / "image" / "unlabelled.npy").exists()
    assert "unlabeled" not in CONVERTERS["flickr"](out, 0, None).bundle.extra
    assert not list(tmp_path.glob(".*synth-partial"))


@pytest.mark.parametrize("kwargs, message", [
    ({"rows": 0}, r"^--rows must be >= 3"),
    ({"rows": 10, "unlabelled": -1}, r"^--unlabelled must be >= 0"),
    ({"rows": 10, "seed": -2}, r"^--seed must be >= 0"),
    ({"rows": 10, "out_dir": "s3://bucket/x"}, r"^--out 's3://bucket/x': data synth writes a local folder"),
    ({"rows": 10**12}, r"^--out .*: needs \d+\.\d GB, only"),
])
def test_bad_input_is_one_user_error_naming_the_option(tmp_path, kwargs, message):
    kwargs.setdefault("out_dir", tmp_path / "out")
    with pytest.raises(UserError, match=message) as err:
        synth_like_flickr(**kwargs)
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()


# VmHWM, the peak resident memory of this process's own address space, and not ru_maxrss: a child's
# ru_maxrss starts at its parent's peak (the kernel keeps the old address space's peak across exec),
# so under pytest both runs would print pytest's own peak.
PEAK = """
import sys
from cmmd_dist.datasets.synth import synth_like_flickr
synth_like_flickr(sys.argv[1], int(sys.argv[2]), int(sys.argv[2]))
print(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])  # KiB
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_peak_memory_does_not_grow_with_rows(tmp_path):
    peak = {}
    for rows in (BLOCK_ROWS, 4 * BLOCK_ROWS):  # 4x rows write 4x the bytes (126 MB at 4 blocks a part)
        done = subprocess.run([sys.executable, "-c", PEAK, str(tmp_path / str(rows)), str(rows)],
                              capture_output=True, text=True, check=True)
        peak[rows] = int(done.stdout.split()[-1])
    assert peak[4 * BLOCK_ROWS] <= 1.1 * peak[BLOCK_ROWS] + 8 * 1024, peak
