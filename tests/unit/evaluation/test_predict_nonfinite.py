"""A NaN or inf input cell is refused, naming its column and row, by the saved pyfunc model (what an MLflow
user calls) instead of becoming NaN probabilities and a label 0 that looks like a prediction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cmmd_dist.datasets.loaders import DIGITS2V_SPEC
from cmmd_dist.model import CMMD, CMMDConfig, ModalityDef
from cmmd_dist.tracking.pyfunc import frame_to_obs, rows_frame, save


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny CMMD saved as the pyfunc folder and loaded back with mlflow.pyfunc.load_model."""
    import mlflow.pyfunc

    torch.manual_seed(0)
    cfg = CMMDConfig(observed=(ModalityDef("view1", (8, 8)),), missing=(ModalityDef("view2", (8, 8)),),
                     num_classes=10, zdim=3, encoder_hidden=(16,), prior_hidden=(16,), decoder_hidden=(16,),
                     classifier_hidden=(8,))
    core = CMMD(cfg).eval()
    x = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    folder = save(tmp_path_factory.mktemp("pyfunc") / "model", core, DIGITS2V_SPEC, None, {}, {"view1": x})
    return mlflow.pyfunc.load_model(str(folder))


def rows(n: int = 5) -> np.ndarray:
    return np.random.default_rng(1).random((n, 64)).astype(np.float32)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("task", ["classify", "generate", "embed"])
def test_pyfunc_refuses_non_finite_rows_naming_column_and_row(model, value, task):
    x = rows()
    x[3, 17] = value
    x[4, 0] = value
    with pytest.raises(ValueError, match=r"column 'view1': row 3 has NaN/inf values \(2 of 5 rows do\)"):
        model.predict(pd.DataFrame({"view1": list(x)}), params={"task": task})


def test_finite_rows_still_predict(model):
    got = model.predict(pd.DataFrame({"view1": list(rows())}), params={"task": "classify"})
    assert len(got) == 5 and np.isfinite(np.stack(got["probs"])).all()


def test_frame_to_obs_checks_every_observed_column():
    observed = (ModalityDef("a", (2,)), ModalityDef("b", (3,)))
    b = np.ones((4, 3), np.float32)
    b[2, 1] = np.nan
    df = rows_frame({"a": np.ones((4, 2), np.float32), "b": b})
    with pytest.raises(ValueError, match=r"column 'b': row 2 has NaN/inf"):
        frame_to_obs(df, observed)
