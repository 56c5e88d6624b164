"""The model registry side of a tracking store, as a mixin of :class:`~cmmd_dist.tracking.store.Tracker`:
a trained model logged as a pyfunc and registered as ``<kind>-<dataset>[-<scenario>]`` with alias
``champion`` pointing at the newest version (:meth:`ModelRegistry.register_best`), the version behind
``name@alias`` (:meth:`~ModelRegistry.model_version`) and its files (:meth:`~ModelRegistry.download`).

The mixin needs only ``self.client`` (an ``MlflowClient`` on the store and its registry) and ``self.uri``.
mlflow is imported when a method first runs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from cmmd_dist.tracking.schema import CHAMPION, numeric, registered_name
from cmmd_dist.tracking.uri import TrackingError

__all__ = ["ModelRegistry"]


class ModelRegistry:
    """Registered models of the store that ``self.client`` / ``self.uri`` name."""

    client: object
    uri: str

    def register_best(self, run_id: str, core, spec, metrics: dict, dataset: str, scenario: str | None,
                      input_example_rows: dict, tags: dict | None = None, description: str | None = None) -> str:
        """Log ``core`` as a pyfunc model into ``run_id``, register it, point alias ``champion`` at it.

        ``input_example_rows``: a few rows of each OBSERVED modality, name -> array (n, *shape).
        Returns ``models:/<name>@champion``."""
        from mlflow.exceptions import MlflowException

        from cmmd_dist.tracking import pyfunc as pyfunc_model

        kind = pyfunc_model.model_kind(core)
        name = registered_name(dataset, scenario, spec.default_scenario, kind)
        observed = [m.name for m in core.cfg.observed]
        with tempfile.TemporaryDirectory() as tmp:
            pyfunc_model.save(Path(tmp) / "model", core, spec, scenario, metrics, input_example_rows)
            self.client.log_artifacts(run_id, str(Path(tmp) / "model"), "model")
        try:
            label = "CMMD" if kind == "cmmd" else {"mx_o": "M-x_o"}.get(kind, kind.upper())
            self.client.create_registered_model(name, description=f"{label} on {dataset}: observed {observed}")
        except MlflowException:  # it exists already: a new version of it
            self.client.get_registered_model(name)
        source = f"{self.client.get_run(run_id).info.artifact_uri}/model"
        version = str(self.client.create_model_version(name, source, run_id=run_id, description=description).version)
        for key, value in {"dataset": dataset, "scenario": scenario or spec.default_scenario, "run_id": run_id,
                           "model_kind": kind,
                           **{f"metric.{k}": v for k, v in numeric(metrics).items()}, **(tags or {})}.items():
            self.client.set_model_version_tag(name, version, key, str(value))
        self.client.set_registered_model_alias(name, CHAMPION, version)
        return f"models:/{name}@{CHAMPION}"

    def model_version(self, name: str, alias: str = CHAMPION):
        """The registered version behind ``name@alias``; a clear error for an unknown name or alias."""
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(name)
        except MlflowException as err:
            known = sorted(m.name for m in self.client.search_registered_models())
            raise TrackingError(f"no registered model {name!r} in {self.uri}; known: {known}") from err
        if alias not in model.aliases:
            raise TrackingError(f"registered model {name!r} has no alias {alias!r}; aliases: {sorted(model.aliases)}")
        return self.client.get_model_version_by_alias(name, alias)

    def download(self, name: str, alias: str = CHAMPION, dst: str | Path | None = None) -> Path:
        """The pyfunc model folder of ``name@alias`` (MLmodel, artifacts/model.pt, spec.json, metrics.json)."""
        import mlflow.artifacts

        mv = self.model_version(name, alias)
        dst = Path(dst or tempfile.mkdtemp(prefix="cmmd-model-"))
        dst.mkdir(parents=True, exist_ok=True)
        # the version's own artifact URI: a models:/ URI would resolve against the global registry URI
        source = self.client.get_model_version_download_uri(name, mv.version)
        got = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst), tracking_uri=self.uri)
        return Path(got)
