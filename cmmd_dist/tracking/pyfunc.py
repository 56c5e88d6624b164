"""The registered CMMD as an MLflow pyfunc model (models from code: this FILE is what gets logged).

    model = mlflow.pyfunc.load_model("models:/cmmd-digits2v@champion")
    model.predict(df, params={"task": "classify"})   # label (argmax, or the list of classes >= 0.5) + probs
    model.predict(df, params={"task": "generate"})   # one column per missing modality, flattened
    model.predict(df, params={"task": "embed"})      # z: the prior mean mu_p(x_o)

``df`` has one column per OBSERVED modality, each cell the flattened example (a Parquet
``list<float32>`` column reads back exactly so). The model stands alone: it needs torch, mlflow,
numpy and pandas (its ``requirements.txt``), not cmmd_dist. Its folder holds this file, the
pure-torch model package copied under a name of its own (``code/cmmd_model_<digest>``, see
:func:`bundle_model_code`), ``artifacts/model.pt`` (state_dict + CMMDConfig.to_dict(), and for a baseline
of the paper (VCCA, MVAE, MMVAE, M-x_o) its BaselineConfig.to_dict() as ``baseline_config``; read with
``weights_only=True``), ``spec.json`` (the dataset spec + scenario) and ``metrics.json``. A baseline
answers the same tasks from the latent it classifies; M-x_o generates nothing (``generate`` is refused).

Logged, this file runs without cmmd_dist: at module level it imports only mlflow, numpy and pandas,
and cmmd_dist is imported only inside :func:`save`, :func:`load_files` and :func:`bundle_model_code`,
which run on the developer's side.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

__all__ = ["TASKS", "CODE_PACKAGE_KEY", "CMMDPyfunc", "save", "load_files", "bundle_model_code", "frame_to_obs",
           "rows_frame", "signature", "task_columns", "requirements", "model_kind"]

TASKS = ("classify", "generate", "embed")
CODE_PACKAGE_KEY = "code_package"  # model_config key: the bundled model package's import name


def save(path: str | Path, core, spec, scenario: str | None, metrics: dict, example_rows: dict) -> Path:
    """Write the pyfunc model folder (MLmodel, this file, code/, model.pt, spec.json, metrics.json) at ``path``.

    ``example_rows``: a few rows of each OBSERVED modality, name -> array (n, *shape): the input example."""
    import tempfile

    import torch

    from cmmd_dist.datasets.shard_layout import spec_to_dict

    observed = [m.name for m in core.cfg.observed]
    with tempfile.TemporaryDirectory() as tmp:
        files = {"model": Path(tmp) / "model.pt", "spec": Path(tmp) / "spec.json", "metrics": Path(tmp) / "metrics.json"}
        ckpt = {"state_dict": core.state_dict(), "model_config": core.cfg.to_dict()}
        if model_kind(core) != "cmmd":
            ckpt["baseline_config"] = core.params.to_dict()
        torch.save(ckpt, files["model"])
        files["spec"].write_text(json.dumps({**spec_to_dict(spec), "scenario": scenario or spec.default_scenario}))
        files["metrics"].write_text(json.dumps(metrics, default=float))
        package = bundle_model_code(Path(tmp) / "code")
        example = rows_frame({k: example_rows[k] for k in observed})
        mlflow.pyfunc.save_model(
            path=str(path), python_model=__file__, artifacts={k: str(v) for k, v in files.items()},
            code_paths=[str(package)], model_config={CODE_PACKAGE_KEY: package.name},
            signature=signature(core.cfg), input_example=(example, {"task": "classify"}),
            pip_requirements=requirements(),
            metadata={"kind": model_kind(core), "tasks": task_columns(core.cfg, model_kind(core)),
                      "shapes": {m.name: list(m.shape) for m in (*core.cfg.observed, *core.cfg.missing)}},
        )
    return Path(path)


def bundle_model_code(dst: str | Path, src: str | Path | None = None) -> Path:
    """Copy the pure-torch package ``cmmd_dist.model`` (or the package folder ``src`` written like it) to
    ``dst/cmmd_model_<digest of its source>``, its own imports renamed to match; returns that folder.

    Why not ``cmmd_dist/model`` as it is: MLflow puts a model's ``code/`` first on ``sys.path``, so a bundled
    top-level ``cmmd_dist`` (holding only ``model/``) would hide an installed cmmd_dist from every later import
    in that process. A name of its own clashes with nothing, and the digest keeps two champions trained on
    different code apart when one process loads both. Refuses a file that imports anything but torch, the
    standard library and the package itself: the model's requirements would not cover it."""
    import ast
    import hashlib
    import re
    import sys

    src = Path(src) if src else Path(importlib.import_module("cmmd_dist.model").__file__).parent
    texts = {p.relative_to(src).as_posix(): p.read_text() for p in sorted(src.rglob("*.py"))
             if "__pycache__" not in p.parts}
    name = "cmmd_model_" + hashlib.sha256(json.dumps(texts, sort_keys=True).encode()).hexdigest()[:12]
    allowed = {"torch", name, *sys.stdlib_module_names}
    out = Path(dst) / name
    for rel, text in texts.items():
        text = re.sub(r"\bcmmd_dist\.model\b", name, text)
        for node in ast.walk(ast.parse(text, rel)):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for mod in mods:
                if mod.split(".")[0] not in allowed:
                    raise RuntimeError(f"{src / rel} imports {mod}: the registered model bundles cmmd_dist/model "
                                       "alone and needs it to import torch only")
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    return out


def model_kind(core) -> str:
    """'cmmd', or the baseline's kind (vcca, mvae, mmvae, mx_o): what ``model.baselines.make_model`` built."""
    params = getattr(core, "params", None)
    return getattr(params, "kind", "cmmd")


def _load_core(path: Path, model_package):
    """The model of ``model.pt`` (CMMD, or the baseline its ``baseline_config`` names) in eval mode, built
    from ``model_package`` (cmmd_dist.model or its bundled copy)."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    cfg = model_package.CMMDConfig.from_dict(ckpt["model_config"])
    params = ckpt.get("baseline_config")
    core = model_package.make_model(cfg, None if params is None else model_package.BaselineConfig(**params))
    core.load_state_dict(ckpt["state_dict"])
    return core.eval()


def load_files(folder: str | Path):
    """(model in eval mode, DatasetSpec, metrics) from a folder with model.pt, spec.json, metrics.json (needs cmmd_dist)."""
    from cmmd_dist import model as model_package
    from cmmd_dist.datasets.shard_layout import spec_from_dict

    folder = Path(folder)
    core = _load_core(folder / "model.pt", model_package)
    spec = spec_from_dict(json.loads((folder / "spec.json").read_text()), where=str(folder / "spec.json"))
    return core, spec, _metrics(folder)


def _metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").exists() else {}


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
        # the bundled copy of cmmd_dist/model (on sys.path through the model's code/ folder), never cmmd_dist
        package = importlib.import_module(context.model_config[CODE_PACKAGE_KEY])
        folder = Path(context.artifacts["model"]).parent
        self.core = _load_core(folder / "model.pt", package)
        self.metrics = _metrics(folder)

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
            if self.core.cfg.missing and not preds[0]["generated"]:
                raise ValueError(f"task 'generate': this {model_kind(self.core)} model generates no modality "
                                 "(it classifies from the observed modalities alone)")
            return pd.DataFrame({m.name: _cells(joined(lambda p, m=m: p["generated"][m.name])) for m in self.core.cfg.missing})
        probs = joined(lambda p: p["probs"])
        labels = [list(np.flatnonzero(p >= 0.5)) for p in probs] if self.core.cfg.multilabel else probs.argmax(1)
        return pd.DataFrame({"label": labels, "probs": _cells(probs)})


def task_columns(cfg, kind: str = "cmmd") -> dict[str, list[str]]:
    """The output columns of each task (what ``predict`` returns for ``params={"task": ...}``); M-x_o generates none."""
    generated = [] if kind == "mx_o" else [m.name for m in cfg.missing]
    return {"classify": ["label", "probs"], "generate": generated, "embed": ["z"]}


def signature(cfg):
    """Input: one Array(double) column per observed modality; params: task (default classify); outputs: every
    task's columns, each optional because a call returns one task's (``task_columns``, also in the MLmodel metadata)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    label = Array("long") if cfg.multilabel else "long"
    outputs = [ColSpec(label, "label", required=False), ColSpec(Array("float"), "probs", required=False),
               *(ColSpec(Array("float"), m.name, required=False) for m in cfg.missing),
               ColSpec(Array("float"), "z", required=False)]
    return ModelSignature(inputs=Schema([ColSpec(Array("double"), m.name) for m in cfg.observed]),
                          outputs=Schema(outputs), params=ParamSchema([ParamSpec("task", "string", "classify")]))


def requirements() -> list[str]:
    """Exactly what this file and the bundled model package import, pinned to the versions that trained it
    (torch's local label dropped: ``torch==2.13.0`` is met by the CPU and the CUDA builds alike)."""
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
            f"numpy=={np.__version__}", f"pandas=={pd.__version__}"]


mlflow.models.set_model(CMMDPyfunc())
