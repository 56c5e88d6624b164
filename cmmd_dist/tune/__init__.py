"""The sweep: ``python -m cmmd_dist.tune`` and ``cmmd-dist tune``. Ray Tune + Optuna (TPE) + ASHA, k-fold CV per trial.

    python -m cmmd_dist.tune --dataset digits2v --preset quick
    ray job submit -- python -m cmmd_dist.tune --dataset flickr --workers-per-trial 4 --use-gpu

Modules: ``options`` (the one option parser, built from ``SweepConfig``), ``sweep`` (the driver: plan, search,
register), ``plan`` / ``paths`` / ``preflight`` (the checks before it starts), ``register`` (the champion's
retrain and registration), ``trial`` (one trial's CV), ``search_space`` (the YAML spaces), ``searchers``
(TPE and ASHA on the space's figure), ``budget`` (the trial-epoch budget, ``--max-trial-epochs``),
``workarounds`` (Ray Tune bugs worked around, each with its issue and sentinel test), ``sweep_tracking`` (MLflow
and the sweep's Ray metrics), ``results`` (the trial table).
Importing this package imports no Ray: the names below load their module on first use.
"""

from __future__ import annotations

import importlib

__all__ = ["run_sweep", "plan_sweep", "SweepPlan", "SweepFailed", "champion_row", "sweep_base", "main"]

_HOME = {"main": "cmmd_dist.cli.tune", **{n: "cmmd_dist.tune.sweep" for n in __all__ if n != "main"}}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
