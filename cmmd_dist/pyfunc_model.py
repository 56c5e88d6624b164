"""The registered CMMD as an MLflow pyfunc model (models from code: this FILE is what gets logged).

    model = mlflow.pyfunc.load_model("models:/cmmd-digits2v@champion")
    model.predict(df, params={"task": "classify"})   # label (argmax, or the list of classes >= 0.5) + probs
    model.predict(df, params={"task": "generate"})   # one column per missing modality, flattened
    model.predict(df, params={"task": "embed"})      # z: the prior mean mu_p(x_o)

``df`` has one column per OBSERVED modality, each cell the flattened example (a Parquet
``list<float32>`` column reads back exactly so). The model folder holds ``model.pt``
(state_dict + CMMDConfig.to_dict()), ``spec.json`` (the dataset spec + scenario) and ``metrics.json``.
The package ``cmmd_dist`` must be importable where the model is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

__all__ = ["TASKS", "CMMDPyfunc", "save", "load_files", "frame_to_obs", "rows_frame", "signature", "requirements"]

TASKS = ("classify", "generate", "embed")


def save(path: str | Path, core, spec, scenario: str | None, metrics: dict, example_rows: dict) -> Path:
    """Write the pyfunc model folder (MLmodel, this file, model.pt, spec.json, metrics.json) at ``path``.

    ``example_rows``: a few rows of each OBSERVED modality, name -> array (n, *shape): the input example."""
    import tempfile

    import torch

    from cmmd_dist.datasets.shards import spec_to_dict

    observed = [m.name for m in core.cfg.observed]
    with tempfile.TemporaryDirectory() as tmp:
        files = {"model": Path(tmp) / "model.pt", "spec": Path(tmp) / "spec.json", "metrics": Path(tmp) / "metrics.json"}
        torch.save({"state_dict": core.state_dict(), "model_config": core.cfg.to_dict()}, files["model"])
        files["spec"].write_text(json.dumps({**spec_to_dict(spec), "scenario": scenario or spec.default_scenario}))
        files["metrics"].write_text(json.dumps(metrics, default=float))
        mlflow.pyfunc.save_model(
            path=str(path), python_model=__file__, artifacts={k: str(v) for k, v in files.items()},
            signature=signature(observed), input_example=rows_frame({k: example_rows[k] for k in observed}),
            pip_requirements=requirements(),
        )
    return Path(path)


def load_files(folder: str | Path):
    """(CMMD in eval mode, DatasetSpec, metrics) from a folder with model.pt, spec.json, metrics.json."""
    import torch

    from cmmd_dist.datasets.shards import spec_from_dict
    from cmmd_dist.model import CMMD, CMMDConfig

    folder = Path(folder)
    ckpt = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    core = CMMD(CMMDConfig.from_dict(ckpt["model_config"]))
    core.load_state_dict(ckpt["state_dict"])
    core.eval()
    spec = spec_from_dict(json.loads((folder / "spec.json").read_text()), where=str(folder / "spec.json"))
    metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").exists() else {}
    return core, spec, metrics


def _cells(a: np.ndarray) -> list[np.ndarray]:
    """(n, *shape) -> n flattened float32 rows (n may be 0)."""
    return list(a.reshape(a.shape[0], int(np.prod(a.shape[1:]))).astype(np.float32))


def rows_frame(arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    """name -> (n, *shape) arrays as a DataFrame of flattened float32 cells (the model's input form)."""
    return pd.DataFrame({k: _cells(np.asarray(v)) for k, v in arrays.items()})


def frame_to_obs(df: pd.DataFrame, observed) -> dict:
    """Observed-modality tensors (n, *shape) from ``df``; a ValueError names a missing or wrong-width column,
    or the column and first row (0-based position) holding a NaN/inf value."""
    import torch

    obs = {}
    for m in observed:
        if m.name not in df.columns:
            raise ValueError(f"input has no column {m.name!r} (observed modality, {m.size} floats per row); "
                             f"columns: {list(df.columns)}")
        try:
            rows = [np.asarray(v, dtype=np.float32).reshape(-1) for v in df[m.name]]
            arr = np.stack(rows) if rows else np.zeros((0, m.size), np.float32)
        except ValueError as err:
            raise ValueError(f"column {m.name!r}: rows differ in width, expected {m.size} floats each") from err
        if arr.shape[1] != m.size:
            raise ValueError(f"column {m.name!r} has {arr.shape[1]} floats per row, expected {m.size} "
                             f"(shape {tuple(m.shape)} flattened)")
        bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
        if len(bad):  # the networks would turn them into NaN probabilities and a confident-looking label 0
            raise ValueError(f"column {m.name!r}: row {int(bad[0])} has NaN/inf values ({len(bad)} of {len(arr)} "
                             f"rows do); the model needs finite inputs")
        obs[m.name] = torch.from_numpy(arr).reshape(len(arr), *m.shape)
    return obs




class CMMDPyfunc(mlflow.pyfunc.PythonModel):
    """classify / generate / embed from the observed modalities alone."""

    def load_context(self, context):
        self.core, self.spec, self.metrics = load_files(Path(context.artifacts["model"]).parent)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        import torch

        task = (params or {}).get("task", "classify")
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; one of {TASKS}")
        obs = frame_to_obs(pd.DataFrame(model_input), self.core.cfg.observed)
        n = len(model_input)
        if n == 0:  # the networks take no empty batch: one zero row, cut off below, keeps the columns' widths
            obs = {k: torch.zeros(1, *v.shape[1:]) for k, v in obs.items()}
        with torch.no_grad():
            preds = [self.core.predict({k: v[s:s + 1024] for k, v in obs.items()}) for s in range(0, max(n, 1), 1024)]

        def joined(get) -> np.ndarray:
            return np.concatenate([get(p).numpy() for p in preds])[:n]

        if task == "embed":
            return pd.DataFrame({"z": _cells(joined(lambda p: p["z"]))})
        if task == "generate":
            return pd.DataFrame({m.name: _cells(joined(lambda p, m=m: p["generated"][m.name])) for m in self.core.cfg.missing})
        probs = joined(lambda p: p["probs"])
        labels = [list(np.flatnonzero(p >= 0.5)) for p in probs] if self.core.cfg.multilabel else probs.argmax(1)
        return pd.DataFrame({"label": labels, "probs": _cells(probs)})


def signature(observed: list[str]):
    """Input: one Array(double) column per observed modality; params: task (default classify)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec(Array("double"), name) for name in observed]),
                          params=ParamSchema([ParamSpec("task", "string", "classify")]))


def requirements() -> list[str]:
    """Pinned where it matters; given explicitly so logging does not spend seconds inferring them."""
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}", "numpy", "pandas", "pyarrow"]


mlflow.models.set_model(CMMDPyfunc())
