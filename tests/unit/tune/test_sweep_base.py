"""A sweep hands its trials absolute data paths: Tune runs every trial in a directory of its own."""

from pathlib import Path

import pytest

from cmmd_dist.config import SweepConfig
from cmmd_dist.tune.search_space import load_search_space
from cmmd_dist.tune.plan import sweep_base


def test_relative_prepared_dataset_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = SweepConfig(dataset="digits2v", data="prepared/digits2v")
    base = sweep_base(settings, load_search_space("digits2v").with_preset("smoke"))
    assert base["data"]["dataset"] == str(tmp_path / "prepared" / "digits2v")


def test_mnist2v_default_source_is_pinned_where_the_driver_found_it(tmp_path, monkeypatch):
    mnist = tmp_path / "data" / "mnist.pkl.gz"
    mnist.parent.mkdir()
    mnist.write_bytes(b"")
    monkeypatch.chdir(tmp_path / "data")
    monkeypatch.setenv("CMMD_MNIST_PATH", "mnist.pkl.gz")  # relative, as a user might set it
    base = sweep_base(SweepConfig(dataset="mnist2v"), load_search_space("mnist2v").with_preset("smoke"))
    assert base["data"]["source"] == str(mnist)
    assert Path(base["data"]["source"]).is_absolute()


def test_missing_default_mnist_is_left_to_the_loader_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CMMD_MNIST_PATH", str(tmp_path / "nowhere.pkl.gz"))
    base = sweep_base(SweepConfig(dataset="mnist2v"), load_search_space("mnist2v").with_preset("smoke"))
    assert "source" not in base["data"] or base["data"]["source"] is None


@pytest.mark.parametrize("uri", ["s3://bucket/mnist2v"])
def test_s3_sources_are_untouched(uri):
    base = sweep_base(SweepConfig(dataset="digits2v", data=uri), load_search_space("digits2v").with_preset("smoke"))
    assert base["data"]["dataset"] == uri
