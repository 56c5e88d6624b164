"""What the project writes into MLflow, and under which names: the registered model's name and its champion
alias, the tags that make an experiment a model-training one with the shared sweep view, and how Python values
become MLflow params (text, at most ``PARAM_MAX`` characters) and metrics (finite floats, nested keys joined
with '.').

Plain functions and constants: nothing here imports mlflow or talks to a store.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np

__all__ = ["CHAMPION", "EXPERIMENT_KIND_TAG", "EXPERIMENT_KIND", "SWEEP_VIEW", "SWEEP_COLUMNS", "EXPERIMENT_TAGS",
           "PARAM_MAX", "registered_name", "default_scenario", "flatten", "numeric", "param_text"]

CHAMPION = "champion"
# MLflow 3's UI opens an experiment in its GenAI / traces view unless this tag says it is model training
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# the runs table starts with no metric columns: a shared view (opened with ?viewStateShareKey=sweep-figures)
# shows the figures every sweep's parent run logs, so that sweeps compare side by side
SWEEP_VIEW = "sweep-figures"
# (the table orders metric columns by name and draws only what fits a screen: the six most telling)
SWEEP_COLUMNS = ("best_cv_mean", "best_cv_std", "test_error", "test_map", "trials_finished", "trials_pruned")
EXPERIMENT_TAGS = {
    EXPERIMENT_KIND_TAG: EXPERIMENT_KIND,
    f"mlflow.sharedViewState.{SWEEP_VIEW}": json.dumps({"selectedColumns": [f"metrics.`{k}`" for k in SWEEP_COLUMNS]}),
}
PARAM_MAX = 6000


def registered_name(dataset: str, scenario: str | None = None, default_scenario: str | None = None,
                    kind: str = "cmmd") -> str:
    """``cmmd-<dataset>``, or ``cmmd-<dataset>-<scenario>`` for a non-default scenario (safe characters); a
    baseline of the paper is registered under its own kind, ``<kind>-<dataset>[-<scenario>]`` (``vcca-mnist2v``),
    so that its champion never replaces CMMD's."""
    name = f"{kind}-{dataset}"
    if scenario and scenario != default_scenario:
        name += f"-{scenario}"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def default_scenario(dataset: str) -> str | None:
    """The default scenario of a known dataset (None for one the registry does not know)."""
    from cmmd_dist.datasets.registry import SPECS

    return SPECS[dataset].default_scenario if dataset in SPECS else None


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested dicts as one level, keys joined with '.'."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def numeric(metrics: dict) -> dict[str, float]:
    """Finite scalars only (lists such as collapse curves go to artifacts, NaN is not a figure)."""
    return {k: float(v) for k, v in flatten(metrics).items()
            if isinstance(v, (bool, int, float, np.integer, np.floating)) and math.isfinite(float(v))}


def param_text(v) -> str:
    """A param's value as MLflow stores it: text (JSON for anything but a string), cut at ``PARAM_MAX``."""
    return (v if isinstance(v, str) else json.dumps(v, default=str))[:PARAM_MAX]
