"""Coherence on a tiny mst built by the real converter (fake SVHN .mat files, real MNIST): the judges, their cache,
the figures of every generating model kind, and the figures' way to MLflow and ``cmmd-dist models list``.

The judges train once for the module (a short recipe: the default one trains for minutes on a full split).
"""

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cmmd_dist.evaluation import coherence
from cmmd_dist.evaluation.coherence import Recipe, coherence_judges, coherence_nets, load_or_train
from cmmd_dist.datasets.converters.text import MST_SPEC, convert_mst
from cmmd_dist.datasets.spec import DatasetSpec
from cmmd_dist.evaluation.metrics import evaluate_model
from cmmd_dist.model import BaselineConfig, CMMDConfig, ModalityDef, make_model
from cmmd_dist.datasets.tensors import SplitTensors
from tiny import TINY

MNIST_PKL = Path(__file__).resolve().parents[4] / "shared" / "data" / "mnist.pkl.gz"
RECIPE = Recipe(epochs=1, min_steps=100, batch_size=32)
OBS, MIS = ["mnist"], ["svhn", "text"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two threads on a busy 2-core machine train the judges ten times slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mst(tmp_path_factory, svhn_writer):
    """(bundle, output_dir): 300 train / val / test rows of mst; the judges trained into ``<output_dir>/coherence``."""
    mnist = Path(os.environ.get("CMMD_MNIST_PATH") or MNIST_PKL)
    if not mnist.is_file():
        pytest.skip(f"real MNIST not found at {mnist} (set CMMD_MNIST_PATH)")
    src = tmp_path_factory.mktemp("mst-source")
    svhn_writer(src, 100, 40)
    (src / "mnist.pkl.gz").symlink_to(mnist.resolve())
    bundle = convert_mst(src, 0, 300).bundle
    out = tmp_path_factory.mktemp("runs")
    judges = coherence_judges(bundle.spec, rows(bundle.train), out, RECIPE)
    assert judges.trained and judges.path.parent == out / "coherence" and judges.path.name.startswith("mst-")
    return bundle, out


def rows(split, obs=OBS, mis=MIS) -> SplitTensors:
    return SplitTensors.from_split(split, obs, mis)


def judges_of(mst):
    bundle, out = mst
    return coherence_judges(bundle.spec, rows(bundle.train), out, RECIPE)


def test_a_perfect_generator_scores_the_ceiling_and_noise_scores_chance(mst):
    bundle, _ = mst
    judges = judges_of(mst)
    test = bundle.test
    truth = {n: test.arrays[n] for n in ("mnist", "svhn", "text")}
    perfect = judges.figures(truth, truth, test.labels)
    for n in truth:
        assert perfect[f"coherence_{n}"] == perfect[f"coherence_ceiling_{n}"]
    assert perfect["coherence_ceiling_mnist"] > 0.6  # a real judge (of real MNIST); chance is 0.1
    rng = np.random.default_rng(0)
    noise = {n: rng.uniform(0, 1, a.shape).astype(np.float32) for n, a in truth.items()}
    scored = judges.figures(noise, truth, test.labels)
    for n in truth:
        assert scored[f"coherence_{n}"] < 0.3, (n, scored)  # 10 balanced classes: chance is 0.1
        assert scored[f"coherence_ceiling_{n}"] == perfect[f"coherence_ceiling_{n}"]
    assert scored["coherence"] == pytest.approx(np.mean([scored[f"coherence_{n}"] for n in truth]))


def test_a_second_evaluation_reads_the_cache_and_other_rows_train_their_own(mst, monkeypatch, tmp_path):
    bundle, out = mst
    first = judges_of(mst)
    stamp = first.path.stat().st_mtime_ns
    monkeypatch.setattr(coherence, "_train", no_training)
    again = judges_of(mst)
    assert not again.trained and again.path == first.path and first.path.stat().st_mtime_ns == stamp
    x = torch.from_numpy(bundle.test.arrays["svhn"])
    assert np.array_equal(again.judges["svhn"].labels(x), first.judges["svhn"].labels(x))
    monkeypatch.undo()
    fewer = load_or_train(bundle.spec, rows(bundle.train.take(np.arange(100))), tmp_path, RECIPE)
    assert fewer.trained and fewer.path.name != first.path.name  # the key follows the rows


def test_a_damaged_or_foreign_cache_file_is_retrained_with_one_warning(mst, tmp_path):
    bundle, _ = mst
    train = rows(bundle.train.take(np.arange(64)))
    small = Recipe(epochs=1, min_steps=2, batch_size=32)
    made = load_or_train(bundle.spec, train, tmp_path, small)
    good = made.path.read_bytes()
    foreign = {"format": coherence.FORMAT, "key": "0" * 64, "judges": {}}
    for damage in (lambda p: p.write_bytes(good[: len(good) // 2]), lambda p: torch.save(foreign, p),
                   lambda p: p.write_bytes(b"not a torch file")):
        damage(made.path)
        with pytest.warns(UserWarning, match=r"coherence judges .*mst-.*\.pt: not usable .*retraining them") as got:
            again = load_or_train(bundle.spec, train, tmp_path, small)
        assert again.trained and len(got) == 1 and "\n" not in str(got[0].message)
        for name, judge in made.judges.items():  # seeded: the same rows train the same judges
            theirs = again.judges[name].state_dict()
            assert all(torch.equal(v, theirs[k]) for k, v in judge.state_dict().items()), name
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert not load_or_train(bundle.spec, train, tmp_path, small).trained  # replaced by a good file
    assert [p.name for p in tmp_path.iterdir()] == [made.path.name]  # no partial file left behind


def tiny_model(kind: str = "cmmd"):
    """An untrained model of mst's scenario ``mnist`` (svhn and text missing): small MLPs."""
    torch.manual_seed(0)
    cfg = CMMDConfig(observed=(ModalityDef("mnist", (28, 28)),),
                     missing=(ModalityDef("svhn", (3, 32, 32)), ModalityDef("text", (8, 71), "categorical")),
                     num_classes=10, zdim=4, encoder_hidden=(16,), prior_hidden=(16,), decoder_hidden=(16,),
                     classifier_hidden=(8,))
    return make_model(cfg, None if kind == "cmmd" else BaselineConfig(kind=kind)).eval()


def no_training(*args, **kwargs):
    raise AssertionError("the judges were trained again")


def test_evaluate_model_reports_coherence_for_every_model_that_generates(mst):
    bundle, _ = mst
    judges = judges_of(mst)
    test = rows(bundle.test)
    for kind in ("cmmd", "vcca", "mvae", "mmvae", "mx_o"):
        core = tiny_model(kind)
        got = evaluate_model(core, test, with_collapse=False, coherence=judges)
        keys = {k for k in got if k.startswith("coherence")}
        if kind == "mx_o":  # generates nothing
            assert keys == set()
            continue
        assert keys == {"coherence", "coherence_svhn", "coherence_text", "coherence_ceiling_svhn",
                        "coherence_ceiling_text"}, kind
        assert 0.0 <= got["coherence"] <= 1.0
        assert got["coherence_ceiling_svhn"] == judges.figures({"svhn": bundle.test.arrays["svhn"]}, test.mis,
                                                               bundle.test.labels)["coherence_svhn"]
        assert "coherence" not in evaluate_model(core, test, with_collapse=False)  # only when asked


def test_which_datasets_ask_for_coherence():
    from cmmd_dist.datasets.shard_layout import spec_from_dict, spec_to_dict

    assert coherence_nets(MST_SPEC) == {"mnist": "mlp", "svhn": "conv", "text": "conv"}
    from_manifest = spec_from_dict(spec_to_dict(MST_SPEC))  # a prepared mst's manifest does not store it
    assert from_manifest.coherence == {} and coherence_nets(from_manifest) == coherence_nets(MST_SPEC)
    other = DatasetSpec("mst", MST_SPEC.modalities[:2], "classes", 10, {"mnist": ("mnist",)}, "mnist")
    assert coherence_nets(other) == {}  # same name, other modalities: not mst's judges
    from cmmd_dist.datasets.registry import SPECS

    assert [name for name, spec in SPECS.items() if coherence_nets(spec)] == ["mst"]
    with pytest.raises(ValueError, match="coherence entry 'audio'"):
        DatasetSpec("x", MST_SPEC.modalities, "classes", 10, {"mnist": ("mnist",)}, "mnist", coherence={"audio": "mlp"})


def test_a_sweep_logs_coherence_and_the_judges_to_mlflow_and_models_list_shows_it(mst, monkeypatch, tmp_path, capsys):
    """``run_coherence`` and ``finish_sweep`` as the sweep's retrain and driver call them, on an embedded store: the
    judges of the fixture are reused."""
    from cmmd_dist.cli.app import main
    from cmmd_dist.config import RunConfig
    from cmmd_dist.evaluation.metrics import run_coherence
    from cmmd_dist.tracking.recorder import SweepRecorder
    from cmmd_dist.tracking.store import Tracker
    from cmmd_dist.tune.sweep_tracking import finish_sweep

    bundle, out = mst
    monkeypatch.setattr(coherence, "DEFAULT_RECIPE", RECIPE)  # the sweep's judges: the fixture's cached file
    monkeypatch.setattr(coherence, "_train", no_training)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    core = tiny_model()
    trial = {"trial_id": "t0", "params": {"loss.lam": 0.5}, "best_cv_metric": 0.8, "cv_std": 0.01, "epochs_run": 1,
             "stopped_early": False, "error": None}
    run = RunConfig.model_validate({"data": {"dataset": "mst", "scenario": "mnist"}, "output_dir": str(out)})
    figures, judges_file = run_coherence(core, run, bundle.spec, bundle)  # as retrain_distributed adds them
    test = {**evaluate_model(core, rows(bundle.test), with_collapse=False), **figures}
    summary = {"trials": [trial], "best": trial, "test": dict(test), "trials_failed": 0}
    retrain = {"model": core, "history": [], "test": test, "coherence_judges": judges_file}
    finish_sweep(SweepRecorder("mst", None, {}, sweep_id="coherence-1", uri=uri), summary, retrain, bundle,
                 {"data": {"dataset": "mst", "scenario": "mnist"}, "output_dir": str(out)})

    with torch.no_grad():
        generated = core.predict(rows(bundle.test).obs)["generated"]
    expected = judges_of(mst).figures(generated, rows(bundle.test).mis, bundle.test.labels)
    assert summary["test"]["coherence"] == pytest.approx(expected["coherence"])
    client = Tracker(uri).client
    version = client.get_registered_model("cmmd-mst").latest_versions[-1]
    run = client.get_run(version.run_id)
    assert run.data.metrics["coherence"] == pytest.approx(expected["coherence"])
    assert {"coherence_svhn", "coherence_text", "coherence_ceiling_svhn"} <= set(run.data.metrics)
    assert [a.path for a in client.list_artifacts(run.info.run_id, "coherence")] == [
        f"coherence/{judges_of(mst).path.name}"]
    parent = client.get_run(client.get_run(run.info.run_id).data.tags["mlflow.parentRunId"])
    assert parent.data.metrics["test_coherence"] == pytest.approx(expected["coherence"])
    capsys.readouterr()
    assert main(["models", "list", "--mlflow", uri]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("cmmd-mst "))
    assert f"coherence={expected['coherence']:.4f}" in line and "coherence_svhn=" in line


def test_train_single_reports_coherence_on_mst(mst, monkeypatch):
    """``cmmd-dist train``'s fit on mst: the test figures carry coherence, judged by the cached judges."""
    from cmmd_dist.config import RunConfig
    from cmmd_dist.train.single import fit

    bundle, out = mst
    monkeypatch.setattr(coherence, "DEFAULT_RECIPE", RECIPE)  # the fixture's judges, read from their cache
    monkeypatch.setattr(coherence, "_train", no_training)
    run = RunConfig.model_validate({
        "data": {"dataset": "mst", "scenario": "mnist"},
        "model": TINY,
        "train": {"epochs": 1, "batch_size": 64, "progress": False, "baseline": False, "threads": 1},
        "output_dir": str(out)})
    test = fit(run, bundle, log=lambda *a: None)["test"]
    assert 0.0 <= test["coherence"] <= 1.0
    assert {"coherence_svhn", "coherence_text", "coherence_ceiling_svhn", "coherence_ceiling_text"} <= set(test)
