"""No silent substitution: a given source or prepared dataset is used or refused, never swapped for a default.

Each test sets up the default that the old code fell back to (a valid MNIST at ``$CMMD_MNIST_PATH`` or
``../shared/data/mnist.pkl.gz``, the built-in digits2v), so falling back would succeed quietly.
"""

import gzip
import pickle

import numpy as np
import pytest

from cmmd_dist.cli.app import build_parser, main, train_overrides
from cmmd_dist.config import DataConfig
from cmmd_dist.storage.yaml_files import load_run_config
from cmmd_dist.datasets.prepare import prepare
from cmmd_dist.datasets.registry import dataset_name, load_bundle
from cmmd_dist.errors import UserError
from cmmd_dist.storage import StorageError


def write_mnist_pkl(path, n=(40, 10, 10)):
    rng = np.random.default_rng(0)
    parts = tuple((rng.uniform(0, 1, (k, 784)).astype(np.float32), np.arange(k) % 10) for k in n)
    with gzip.open(path, "wb") as f:
        pickle.dump(parts, f)
    return path


@pytest.fixture
def default_mnist(tmp_path, monkeypatch):
    """A valid MNIST at $CMMD_MNIST_PATH AND at ../shared/data/mnist.pkl.gz of the working directory."""
    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    write_mnist_pkl(shared / "mnist.pkl.gz")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("CMMD_MNIST_PATH", str(shared / "mnist.pkl.gz"))
    return shared / "mnist.pkl.gz"


@pytest.mark.parametrize("dataset", ["mnist2v", "mnist-svhn", "mnist3", "mst", "xrmb", "flickr"])
def test_a_source_that_does_not_exist_is_named_not_replaced(default_mnist, tmp_path, dataset):
    typo = str(tmp_path / "mnsit.pkl.gz")
    with pytest.raises(UserError, match=rf"{dataset}: source '{typo}' does not exist"):
        prepare(dataset, typo, str(tmp_path / "out"))
    with pytest.raises(UserError, match=rf"source '{typo}' does not exist"):
        load_bundle(DataConfig(dataset=dataset, source=typo))
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_mnist2v_source_folder_without_mnist_is_named(default_mnist, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(UserError, match=rf"source '{folder}' holds no MNIST"):
        prepare("mnist2v", str(folder), str(tmp_path / "out"))


def test_mnist_svhn_takes_mnist_from_its_folder_or_an_explicit_cmmd_mnist_path(default_mnist, tmp_path, monkeypatch):
    from scipy.io import savemat

    folder = tmp_path / "svhn"
    folder.mkdir()
    for name, n in (("train", 40), ("test", 20)):
        y = np.arange(n) % 10
        savemat(folder / f"{name}_32x32.mat", {"X": np.zeros((32, 32, 3, n), np.uint8), "y": np.where(y == 0, 10, y)[:, None]})
    assert prepare("mnist-svhn", str(folder), str(tmp_path / "a"))["rows"]["train"] == 40  # explicit CMMD_MNIST_PATH
    monkeypatch.delenv("CMMD_MNIST_PATH")  # ../shared/data/mnist.pkl.gz still exists: it is NOT used
    with pytest.raises(UserError, match=rf"mnist-svhn: source '{folder}' holds no MNIST .* CMMD_MNIST_PATH is not set"):
        prepare("mnist-svhn", str(folder), str(tmp_path / "b"))


def test_no_source_still_means_the_default(default_mnist, tmp_path):
    assert prepare("mnist2v", None, str(tmp_path / "out"))["rows"] == {"train": 40, "val": 10, "test": 10}


def test_digits2v_refuses_a_source_instead_of_ignoring_it(tmp_path):
    with pytest.raises(UserError, match=rf"digits2v reads no source files.*'{tmp_path}'"):
        prepare("digits2v", str(tmp_path), str(tmp_path / "out"))
    with pytest.raises(UserError, match="digits2v reads no source files"):
        load_bundle(DataConfig(dataset="digits2v", source=str(tmp_path)))


def train_config(argv):
    args = build_parser().parse_args(["train", *argv])
    return load_run_config(None, train_overrides(args))


def test_train_data_without_a_manifest_is_an_error_naming_the_folder(tmp_path):
    folder = tmp_path / "not-prepared"
    folder.mkdir()
    run = train_config(["--data", str(folder), "--dataset", "digits2v"])
    assert run.data.prepared == str(folder) and run.data.source is None
    with pytest.raises(StorageError, match=rf"{folder}/manifest.json: no manifest"):
        load_bundle(run.data)


def test_cmmd_dist_train_data_without_a_manifest_exits_2(tmp_path, capsys):
    folder = tmp_path / "not-prepared"
    folder.mkdir()
    code = main(["train", "--data", str(folder), "--dataset", "digits2v", "--epochs", "1", "--limit", "30",
                 "--no-baseline", "--no-progress", "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and f"{folder}/manifest.json: no manifest" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_train_data_names_the_dataset_by_its_manifest(tmp_path):
    out = str(tmp_path / "byo")
    prepare("digits2v", None, out, rows_per_file=2000, name="my-digits")
    for argv in (["--data", out], ["--data", out, "--dataset", "my-digits"]):
        run = train_config(argv)
        assert run.data.dataset == "my-digits"  # what names the run folder, not the dataset's path
        assert dataset_name(run.data) == "my-digits" and load_bundle(run.data).spec.name == "my-digits"
    assert dataset_name(DataConfig(dataset=out)) == "my-digits"
    with pytest.raises(UserError, match="holds dataset 'my-digits', but data.dataset is 'digits2v'"):
        load_bundle(train_config(["--data", out, "--dataset", "digits2v"]).data)
    assert dataset_name(DataConfig(dataset="mnist2v")) == "mnist2v"


def test_a_prepared_dataset_takes_no_source(tmp_path):
    with pytest.raises(ValueError, match="a prepared dataset .* takes none"):
        DataConfig(dataset="mnist2v", prepared=str(tmp_path), source="x.pkl.gz")
    with pytest.raises(ValueError, match="name two prepared datasets"):
        DataConfig(dataset=str(tmp_path / "a"), prepared=str(tmp_path / "b"))


@pytest.mark.parametrize("name", ["../../escape", "a/b", "", ".hidden", 7])
def test_a_manifest_name_that_cannot_name_a_run_folder_is_refused(tmp_path, name):
    import json

    out = tmp_path / "byo"
    prepare("digits2v", None, str(out), rows_per_file=2000)
    m = json.loads((out / "manifest.json").read_text())
    m["spec"]["name"] = name
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StorageError, match=r"manifest.json: column 'spec.name' .* is not a dataset name"):
        train_config(["--data", str(out)])
    with pytest.raises(StorageError, match=r"column 'spec.name'"):
        load_bundle(DataConfig(prepared=str(out)))
