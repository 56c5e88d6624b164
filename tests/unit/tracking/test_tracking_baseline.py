"""A baseline of the paper registered and served like CMMD: it comes back as itself, not as a CMMD.

VCCA through the registry (embedded store, ``register_best`` -> ``pull`` and ``mlflow.pyfunc.load_model``,
which rebuilds it from the bundled model package); M-x_o through the model folder alone (it generates nothing).
"""

import numpy as np
import pytest
import torch

from cmmd_dist.datasets.loaders import DIGITS2V_SPEC
from cmmd_dist.model import VCCA, BaselineConfig, CMMDConfig, ModalityDef, MxO
from cmmd_dist.tracking.pyfunc import load_files, model_kind, rows_frame, save
from cmmd_dist.tracking import Tracker, pull, registered_name


def tiny_cfg() -> CMMDConfig:
    return CMMDConfig(observed=(ModalityDef("view1", (8, 8)),), missing=(ModalityDef("view2", (8, 8)),),
                      num_classes=10, zdim=3, encoder_hidden=(16,), prior_hidden=(16,), decoder_hidden=(16,),
                      classifier_hidden=(8,))


def test_registered_vcca_round_trips_as_vcca(tmp_path):
    import mlflow.pyfunc

    torch.manual_seed(0)
    core = VCCA(tiny_cfg(), BaselineConfig("vcca", beta=0.5)).eval()
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlruns.db'}")
    parent = tracker.start_sweep("digits2v", None, {})
    x = np.random.default_rng(0).random((5, 8, 8)).astype(np.float32)
    uri = tracker.register_best(tracker.retrain_run(parent, {}), core, DIGITS2V_SPEC, {"error": 0.3}, "digits2v",
                                None, {"view1": x[:2]})
    # its own name: a baseline's champion never takes CMMD's alias
    assert uri == "models:/vcca-digits2v@champion" == f"models:/{registered_name('digits2v', kind='vcca')}@champion"
    assert tracker.model_version("vcca-digits2v").tags["model_kind"] == "vcca"
    assert [m.name for m in tracker.client.search_registered_models()] == ["vcca-digits2v"]

    pulled, spec = pull("vcca-digits2v", uri=tracker.uri)
    assert isinstance(pulled, VCCA) and pulled.params == core.params and spec == DIGITS2V_SPEC
    for a, b in zip(pulled.state_dict().values(), core.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    model = mlflow.pyfunc.load_model(str(tracker.download("vcca-digits2v")))
    assert model.metadata.metadata["kind"] == "vcca"
    ref = core.predict({"view1": torch.from_numpy(x)})
    df = rows_frame({"view1": x})
    np.testing.assert_allclose(np.stack(model.predict(df, params={"task": "classify"})["probs"]),
                               ref["probs"].numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.stack(model.predict(df, params={"task": "generate"})["view2"]),
                               ref["generated"]["view2"].reshape(5, -1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.stack(model.predict(df, params={"task": "embed"})["z"]), ref["z"].numpy(), rtol=1e-6)


def test_saved_mx_o_loads_as_mx_o_and_refuses_to_generate(tmp_path):
    import mlflow.pyfunc

    torch.manual_seed(1)
    core = MxO(tiny_cfg()).eval()
    x = np.random.default_rng(1).random((4, 8, 8)).astype(np.float32)
    save(tmp_path / "model", core, DIGITS2V_SPEC, None, {"error": 0.2}, {"view1": x[:2]})
    loaded, _, metrics = load_files(tmp_path / "model" / "artifacts")
    assert isinstance(loaded, MxO) and model_kind(loaded) == "mx_o" and metrics == {"error": 0.2}
    model = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    assert model.metadata.metadata["tasks"]["generate"] == []
    ref = core.predict({"view1": torch.from_numpy(x)})
    got = model.predict(rows_frame({"view1": x}), params={"task": "classify"})
    assert list(got["label"]) == list(ref["probs"].argmax(1).numpy())
    with pytest.raises(ValueError, match="this mx_o model generates no modality"):
        model.predict(rows_frame({"view1": x}), params={"task": "generate"})
