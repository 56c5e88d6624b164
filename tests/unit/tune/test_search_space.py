"""Search spaces: every shipped YAML loads; bad ones name the key; params map onto run configs; folds."""

from pathlib import Path

import numpy as np
import pytest

from cmmd_dist.storage.yaml_files import load_run_config
from cmmd_dist.datasets.spec import Split
from cmmd_dist.train.folds import assign_folds
from cmmd_dist.tune.search_space import apply_params, load_search_space

ROOT = Path(__file__).resolve().parents[3]


def test_every_search_space_loads_with_its_presets():
    files = sorted((ROOT / "cmmd_dist" / "search_spaces").glob("*.yaml"))
    assert {f.stem for f in files} >= {"digits2v", "mnist2v", "mnist-svhn", "mnist3", "mst", "xrmb", "flickr"}
    for f in files:
        space = load_search_space(f)
        assert space.dataset == f.stem
        for name in [None, *space.presets]:
            s = space.with_preset(name)
            load_run_config(None, apply_params(s.fixed, {k: d.bounds()[0] for k, d in s.params.items()}))


@pytest.mark.parametrize(
    "body,needle",
    [
        ("dataset: x\nparms: {}\n", "parms"),
        ("dataset: x\nparams:\n  train.lr: {dist: loguniform, low: 0.1, high: 0.01}\n", "train.lr"),
        ("dataset: x\nparams:\n  loss.lam: {dist: uniform, low: 0.0, high: 1.5}\n", "loss.lam"),
        ("dataset: x\nparams:\n  loss.lam: {dist: grid, values: [0.0, -0.5]}\n", "lambda"),
        ("dataset: x\nparams:\n  model.zdimm: {dist: int, low: 2, high: 4}\n", "zdimm"),
        ("dataset: x\nfixed:\n  train: {epohcs: 3}\n", "epohcs"),
        ("dataset: x\nfolds: {k: 1}\n", "folds.k"),
    ],
)
def test_bad_space_names_the_key(tmp_path, body, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(body)
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")):
        load_search_space(p)


def test_depth_and_width_become_hidden_lists():
    out = apply_params({"model": {"zdim": 3}}, {"model.encoder_depth": 3, "model.encoder_width": 64, "loss.lam": 0.2})
    assert out == {"model": {"zdim": 3, "encoder_hidden": [64, 64, 64]}, "loss": {"lam": 0.2}}


def test_folds_stratified_grouped_and_errors():
    y = np.repeat(np.arange(3), 20)
    s = Split(arrays={"a": np.zeros((60, 1), np.float32)}, labels=y, groups=np.repeat(np.arange(6), 10))
    f = assign_folds(s, 4, "stratified", seed=0)
    assert sorted(np.unique(f)) == [0, 1, 2, 3]
    for k in range(4):
        assert np.bincount(y[f == k], minlength=3).min() >= 4  # every class in every fold
    g = assign_folds(s, 3, "grouped")
    for grp in range(6):
        assert len(np.unique(g[s.groups == grp])) == 1  # a speaker never straddles folds
    with pytest.raises(ValueError, match="group column"):
        assign_folds(Split(arrays={}, labels=y), 3, "grouped")


def test_asha_rungs_come_from_the_preset_unless_the_sweep_names_them():
    from cmmd_dist.config import SweepConfig
    from cmmd_dist.tune.searchers import make_scheduler

    quick = load_search_space("digits2v").with_preset("quick")
    assert (quick.asha.grace_period, quick.asha.reduction_factor) == (5, 3)
    assert load_search_space("digits2v").with_preset("smoke").asha.grace_period == 1  # the space's default
    def rungs(sched):  # ASHA's milestones (epochs at which a trial may be stopped)
        return sorted(m for m, _ in sched._brackets[0]._rungs)

    assert rungs(make_scheduler(SweepConfig(dataset="digits2v"), quick, 15)) == [5, 15]
    assert rungs(make_scheduler(SweepConfig(dataset="digits2v", grace_period=2, reduction_factor=2.0), quick, 15)) == [2, 4, 8]


def test_unknown_dataset_names_it_and_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match=r"unknown dataset 'flikr'.*digits2v, flickr"):
        load_search_space("flikr")
