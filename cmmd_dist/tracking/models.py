"""The registered models of a tracking store, for ``cmmd-dist models``: their aliases and test figures, a
version loaded as an MLflow pyfunc, and MLflow's own errors as one-line user errors.

Every MLflow call of that command is here; the command line (:mod:`cmmd_dist.cli.models`) only formats.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from cmmd_dist.errors import UserError, one_line
from cmmd_dist.tracking.schema import CHAMPION
from cmmd_dist.tracking.store import Tracker

__all__ = ["quiet", "mlflow_errors", "registered_model_rows", "load_registered_pyfunc"]


def quiet() -> None:
    """No artifact progress bars, no pyfunc type-hint warnings: a command's output is its own lines."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore", message=".*type hints.*")


@contextmanager
def mlflow_errors(uri: str | None) -> Iterator[None]:
    """MLflow's own errors (unreachable store, refused request) inside as one-line UserErrors naming the store."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as err:
        raise UserError(f"MLflow ({uri or os.environ.get('MLFLOW_TRACKING_URI') or 'sqlite:///./mlruns.db'}): "
                        f"{one_line(err)}") from err


def registered_model_rows(tracker: Tracker) -> list[tuple[str, str, str, dict[str, float]]]:
    """(name, alias, version, test figures) for each alias of every registered model, by name then alias; a
    model without aliases is one row ``-`` with its latest version (``-`` if none). The figures are the version's
    ``metric.<name>`` tags."""
    rows = []
    for m in sorted(tracker.client.search_registered_models(), key=lambda m: m.name):
        for alias, version in sorted(m.aliases.items()) or [("-", m.latest_versions[-1].version if m.latest_versions else "-")]:
            tags = tracker.client.get_model_version(m.name, version).tags if version != "-" else {}
            figures = {k.removeprefix("metric."): float(v) for k, v in sorted(tags.items())
                       if k.startswith("metric.") and k.count(".") == 1}
            rows.append((m.name, alias, str(version), figures))
    return rows


def load_registered_pyfunc(tracker: Tracker, name: str, alias: str = CHAMPION):
    """``(model version, pyfunc model, names of its input columns)`` of ``name@alias``; an unknown name or alias
    is a TrackingError before anything is downloaded."""
    import mlflow.pyfunc

    mv = tracker.model_version(name, alias)
    with tempfile.TemporaryDirectory() as tmp:  # loading reads every file; the folder can go afterwards
        model = mlflow.pyfunc.load_model(str(tracker.download(name, alias, tmp)))
    return mv, model, [c.name for c in model.metadata.get_input_schema().inputs]
