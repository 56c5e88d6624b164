"""A tracking store's experiments and runs: sweep (parent) runs, trial and retrain (child) runs, their params,
metrics and artifacts; the model registry comes in from :class:`~cmmd_dist.tracking.registry.ModelRegistry`.

    tracker = Tracker()                      # --mlflow URI > MLFLOW_TRACKING_URI > sqlite:///<cwd>/mlruns.db
    parent = tracker.start_sweep("digits2v", None, search_space, tags={"ray_job_id": ...}, sweep_id=exp_path)
    run = tracker.trial_run(parent, "trial-0003", flat_config)   # a restarted trial gets its own run back
    tracker.log_epoch(run, epoch, {"cv_mean": ..., "fold0/val_metric": ...})
    tracker.end_run(run, pruned=stopped_early)
    final = tracker.retrain_run(parent, best_config)
    tracker.log_final(final, test_metrics, {"learning_curves.png": fig, "summary.json": summary})
    uri = tracker.register_best(final, core, spec, test_metrics, "digits2v", None, example_rows)
    core, spec = pull("cmmd-digits2v")       # torch model (eval mode) + DatasetSpec

Code outside this package goes through these methods, never ``tracker.client``. A Tracker pickles as its URI
(it travels inside Tune callbacks and Ray actors). The embedded default keeps runs in ``<cwd>/mlruns.db`` and
artifacts in ``<cwd>/mlartifacts``; a shared ``mlflow server`` (SQL backend, ``--artifacts-destination s3://...``)
is selected by URI. The URI functions of :mod:`.uri` are re-exported here for their importers.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from cmmd_dist.tracking.registry import ModelRegistry
from cmmd_dist.tracking.schema import CHAMPION, EXPERIMENT_TAGS, default_scenario, flatten, numeric, param_text
from cmmd_dist.tracking.schema import registered_name
from cmmd_dist.tracking.uri import (  # noqa: F401  (re-exported: imported from here by tune and cli)
    TrackingError, artifact_root, check_reachable, check_tracking_uri, resolve_tracking_uri, take_credentials,
    ui_command,
)

__all__ = ["Tracker", "pull", "TrackingError", "resolve_tracking_uri", "check_tracking_uri", "take_credentials",
           "ui_command"]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _is_file(text: str) -> bool:
    """Whether a string names an existing file (a long text is not a path)."""
    try:
        return Path(text).is_file()
    except OSError:
        return False


class Tracker(ModelRegistry):
    """One tracking store: sweep (parent) runs, trial and retrain (child) runs, metrics, artifacts, registry."""

    def __init__(self, uri: str | None = None):
        from mlflow.tracking import MlflowClient

        self.uri = resolve_tracking_uri(uri)
        check_reachable(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    # picklable by URI (a Tune callback holding a recorder is pickled with the Tuner's state)
    def __getstate__(self) -> dict:
        return {"uri": self.uri}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["uri"])

    # -- experiments and runs --------------------------------------------------------------------
    def experiment(self, name: str) -> str:
        """The id of experiment ``name``, created when absent (safe when several processes race)."""
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            for key, value in EXPERIMENT_TAGS.items():
                if exp.tags.get(key) != value:
                    self.client.set_experiment_tag(exp.experiment_id, key, value)
            return exp.experiment_id
        root = artifact_root(self.uri)
        try:
            return self.client.create_experiment(name, artifact_location=f"{root}/{name}" if root else None,
                                                 tags=dict(EXPERIMENT_TAGS))
        except MlflowException:
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    def experiment_of(self, run_id: str) -> str:
        """The id of the experiment that run ``run_id`` belongs to."""
        return self.client.get_run(run_id).info.experiment_id

    def _find(self, experiment_id: str, filters: str):
        runs = self.client.search_runs([experiment_id], filter_string=filters, max_results=1,
                                       order_by=["attributes.start_time ASC"])
        return runs[0] if runs else None

    def find_sweep_run(self, experiment_id: str, sweep_id: str) -> str | None:
        """The run id of the sweep (parent) run tagged ``sweep_id`` in the experiment (the first started), or None."""
        found = self._find(experiment_id, f"tags.kind = 'sweep' and tags.sweep_id = '{sweep_id}'")
        return None if found is None else found.info.run_id

    def start_run(self, experiment_id: str, name: str, tags: dict | None = None) -> str:
        """A new RUNNING run named ``name`` in the experiment, each tag's value as text; returns its run id."""
        run = self.client.create_run(experiment_id, tags={k: str(v) for k, v in (tags or {}).items()}, run_name=name)
        return run.info.run_id

    def nest_under(self, run_id: str, parent_run_id: str) -> None:
        """Make run ``run_id`` a child of ``parent_run_id`` (tag ``mlflow.parentRunId``: the UI nests it)."""
        self.client.set_tag(run_id, "mlflow.parentRunId", parent_run_id)

    def start_sweep(self, dataset: str, scenario: str | None, search_space: dict, tags: dict | None = None,
                    sweep_id: str | None = None, experiment: str | None = None) -> str:
        """The parent run of a sweep; with ``sweep_id`` an interrupted sweep gets its parent run back."""
        exp = self.experiment(experiment or registered_name(dataset, scenario, default_scenario(dataset)))
        found = self.find_sweep_run(exp, sweep_id) if sweep_id else None
        if found is not None:
            self.client.update_run(found, status="RUNNING")
            return found
        all_tags = {"kind": "sweep", "dataset": dataset, "scenario": scenario or "default", **(tags or {})}
        if sweep_id:
            all_tags["sweep_id"] = sweep_id
        commit = _git_commit()
        if commit:
            all_tags.setdefault("git_commit", commit)
            all_tags.setdefault("mlflow.source.git.commit", commit)
        # named by the sweep's folder (sweep-<dataset>-<time> or --name); its full path is the sweep_id tag
        run_name = Path(sweep_id).name if sweep_id else f"sweep-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
        run_id = self.start_run(exp, run_name, all_tags)
        self.log_params(run_id, {f"space.{k}": v for k, v in flatten(search_space).items()})
        self.client.log_dict(run_id, search_space, "search_space.json")
        return run_id

    def trial_run(self, parent_run_id: str, trial_id: str, params: dict, kind: str = "trial") -> str:
        """The child run of trial ``trial_id`` under the sweep; an existing one is reused (restarted trial)."""
        parent = self.client.get_run(parent_run_id)
        exp = parent.info.experiment_id
        found = self._find(exp, f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.trial_id = '{trial_id}'")
        if found is not None:
            run_id = found.info.run_id
            self.client.update_run(run_id, status="RUNNING")
        else:
            tags = {"mlflow.parentRunId": parent_run_id, "trial_id": trial_id, "kind": kind,
                    **{k: v for k, v in parent.data.tags.items() if k in ("dataset", "scenario", "sweep_id", "git_commit")}}
            run_id = self.start_run(exp, trial_id, tags)
        self.log_params(run_id, flatten(params))
        return run_id

    def last_step(self, run_id: str) -> int:
        """The highest step of any metric the run holds (0 for none)."""
        metrics = self.client.get_run(run_id).data.metrics
        return max((m.step for key in metrics for m in self.client.get_metric_history(run_id, key)), default=0)

    def open_runs(self, parent_run_id: str, kind: str = "trial") -> list:
        """The child runs of ``kind`` under the parent that are still RUNNING."""
        return self.client.search_runs([self.experiment_of(parent_run_id)], max_results=10000, filter_string=(
            f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.kind = '{kind}' and attributes.status = 'RUNNING'"))

    def retrain_run(self, parent_run_id: str, params: dict) -> str:
        """The child run of the final retrain on train+val (reused on resume like a trial)."""
        return self.trial_run(parent_run_id, "retrain", params, kind="retrain")

    def end_run(self, run_id: str, status: str = "FINISHED", pruned: bool = False) -> None:
        """Close a run (FINISHED / FAILED / KILLED); ``pruned`` marks a trial the scheduler stopped early."""
        if pruned:
            self.client.set_tag(run_id, "pruned", "true")
        self.client.set_terminated(run_id, status=status)

    # -- params, metrics, artifacts --------------------------------------------------------------
    def log_params(self, run_id: str, params: dict) -> None:
        """Params not yet on the run (MLflow params are write-once; a resumed run keeps its first values)."""
        from mlflow.entities import Param

        have = self.client.get_run(run_id).data.params
        new = [Param(k, param_text(v)) for k, v in flatten(params).items() if k not in have]
        for i in range(0, len(new), 100):
            self.client.log_batch(run_id, params=new[i:i + 100])

    def log_epoch(self, run_id: str, epoch: int, metrics: dict) -> None:
        """One epoch's figures at step ``epoch`` (nested dicts flattened with '.'; non-finite values and lists skipped)."""
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = [Metric(k, v, ts, int(epoch)) for k, v in numeric(metrics).items() if k != "epoch"]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(run_id, metrics=batch[i:i + 1000])

    def log_final(self, run_id: str, metrics: dict, artifacts: dict | None = None) -> None:
        """Final figures (step 0) and artifacts: name -> file path, matplotlib Figure (PNG), dict (JSON/YAML), or text."""
        self.log_epoch(run_id, 0, metrics)
        for name, value in (artifacts or {}).items():
            self.log_artifact(run_id, name, value)

    def log_artifact(self, run_id: str, name: str, value) -> None:
        """A file is logged under its own file name, in the folder part of ``name`` (``coherence/x.pt``: ``coherence/``)."""
        if isinstance(value, Path) or (isinstance(value, str) and "\n" not in value and _is_file(value)):
            folder = str(Path(name).parent)
            self.client.log_artifact(run_id, str(value), None if folder == "." else folder)
        elif hasattr(value, "savefig"):
            self.client.log_figure(run_id, value, name)
        elif isinstance(value, (dict, list)):
            self.client.log_dict(run_id, value, name)
        else:
            self.client.log_text(run_id, str(value), name)


def pull(name: str, alias: str = CHAMPION, uri: str | None = None):
    """``(model in eval mode, DatasetSpec)`` of registered model ``name@alias``: CMMD, or the baseline it was
    registered as (``pyfunc_model.model_kind`` tells which)."""
    from cmmd_dist.tracking import pyfunc as pyfunc_model

    with tempfile.TemporaryDirectory() as tmp:
        folder = Tracker(uri).download(name, alias, tmp)
        core, spec, _ = pyfunc_model.load_files(folder / "artifacts")
    return core, spec
