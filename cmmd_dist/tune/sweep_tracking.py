"""The sweep's MLflow side, seen from the Tune driver: a Tune callback feeding ``tracking.SweepRecorder``,
and the final report (figures, summary, registered champion) after the retrain.
The sweep driver points the best-trial gauge at the sweep's figure (``best_cv_metric``), the one trials are ranked by.

Only the driver writes to MLflow: one parent run per sweep, one nested run per trial (a resumed or
restarted trial continues its own run, each epoch logged once), and a retrain run holding the test figures and
the model. At the end of the search, trial runs left RUNNING by a killed driver end KILLED.
The same callback sets the sweep's Ray metrics (``train.metrics.SweepGauges``: trials per state, best CV
metric) for the dashboards.
"""

from __future__ import annotations

import yaml
from ray import tune

from cmmd_dist.tracking.recorder import SweepRecorder
from cmmd_dist.train.metrics import SweepGauges

__all__ = ["MlflowTrials", "trial_state", "start_recorder", "finish_sweep", "sweep_figures"]


class MlflowTrials(tune.Callback):
    """Forwards Tune's trial events to the recorder (the recorder pickles by tracking URI) and sets the sweep
    gauges from the state of every trial after each event."""

    def __init__(self, recorder: SweepRecorder, metric: str = "cv_metric"):
        self.recorder = recorder
        self.metric = metric
        self._gauges: SweepGauges | None = None  # created on the driver at the first event, never pickled

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_gauges": None}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.recorder.trial_started(trial.trial_id, trial.config)
        self._count(trials, trial, "running")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.recorder.trial_result(trial.trial_id, result, trial.config)
        self._gauges_for(trial).offer(result.get(self.metric))

    def on_trial_complete(self, iteration, trials, trial, **info):
        pruned = not (trial.last_result or {}).get("cv_completed", 0)
        self.recorder.trial_finished(trial.trial_id, "FINISHED", pruned=pruned)
        self._count(trials, trial, "pruned" if pruned else "finished")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.recorder.trial_finished(trial.trial_id, "FAILED")
        self._count(trials, trial, "errored")

    def on_experiment_end(self, trials, **info):
        """Trial runs a killed driver left RUNNING, of trials the resumed sweep does not hold, end KILLED."""
        self.recorder.end_lost_trials()

    def _gauges_for(self, trial) -> SweepGauges:
        if self._gauges is None:
            self._gauges = SweepGauges(trial.experiment_dir_name, self.recorder.dataset)
        return self._gauges

    def _count(self, trials, trial, state: str) -> dict[str, int]:
        """Tune may not have set ``trial.status`` yet when it calls back: the event's own state wins."""
        states = [state if t is trial else trial_state(t) for t in trials]
        return self._gauges_for(trial).set_states(states)


def trial_state(trial) -> str | None:
    """running, finished, pruned (ended before its last epoch: ASHA), errored; None while pending or paused."""
    if trial.status == "RUNNING":
        return "running"
    if trial.status == "ERROR":
        return "errored"
    if trial.status == "TERMINATED":
        return "finished" if (trial.last_result or {}).get("cv_completed", 0) else "pruned"
    return None


def start_recorder(dataset: str, scenario: str | None, space: dict, sweep_id: str, uri: str | None,
                   searcher: str, preset: str | None) -> SweepRecorder:
    import ray

    # the git commit tag is added by Tracker.start_sweep itself
    tags = {"ray_job_id": ray.get_runtime_context().get_job_id(),
            "searcher": searcher, "preset": preset or "none"}
    return SweepRecorder(dataset, scenario, space, tags=tags, sweep_id=sweep_id, uri=uri)


def finish_sweep(recorder: SweepRecorder, summary: dict, retrain: dict, bundle, run_config: dict) -> str:
    """Figures, summary and config on the retrain run; the retrained model registered as champion.

    On a dataset that asks for coherence (mst) the retrain's test figures carry it (``evaluate.run_coherence``)
    and the judges' cache file (``retrain["coherence_judges"]``, under the run's ``output_dir``) is logged as the
    retrain run's artifact ``coherence/<file>``."""
    from cmmd_dist.tracking.plots import report_figures
    from cmmd_dist.datasets.tensors import SplitTensors

    spec = bundle.spec
    obs, mis = spec.scenario_names(run_config["data"].get("scenario"))
    test = SplitTensors.from_split(bundle.test, obs, mis)
    judges_file = retrain.get("coherence_judges")
    trials = [{"lam": t["params"].get("loss.lam"), "cv_mean": t["best_cv_metric"], "cv_std": t["cv_std"],
               "pruned": t["stopped_early"]}
              for t in summary["trials"] if t["params"].get("loss.lam") is not None]
    figs = report_figures(retrain["model"], test, history=retrain["history"], trials=trials or None)
    public = {k: v for k, v in summary.items() if not k.startswith("_")}
    artifacts = {**figs, "summary.json": public, "config.yaml": yaml.safe_dump(run_config, sort_keys=False)}
    if judges_file is not None:
        artifacts[f"coherence/{judges_file.name}"] = judges_file
    example = {n: bundle.test.arrays[n][:5] for n in obs}
    test = {**retrain["test"], **mx_o_figures(summary)}
    return recorder.finish(retrain["model"], spec, test, summary["best"]["params"], example, artifacts,
                           sweep_figures(summary))


def mx_o_figures(summary: dict) -> dict[str, float]:
    """M-x_o's test figures beside the champion's, as ``mx_o_test_<figure>`` (error or map, metric, accuracy)."""
    return {f"mx_o_test_{k}": float(v) for k, v in (summary.get("mx_o_test") or {}).items()
            if k in ("error", "map", "micro_ap", "metric")}


def sweep_figures(summary: dict) -> dict[str, float]:
    """The sweep's own figures, logged on its parent run so that the runs table compares sweeps side by side."""
    trials = summary["trials"]
    best = summary.get("best") or {}
    test = summary.get("test") or {}
    figures = {
        "best_cv_mean": best.get("best_cv_metric"), "best_cv_std": best.get("cv_std"),
        "trials_finished": sum(not t["stopped_early"] and t["error"] is None for t in trials),
        "trials_pruned": sum(t["stopped_early"] and t["error"] is None for t in trials),
        "trials_failed": summary.get("trials_failed", sum(t["error"] is not None for t in trials)),
        "trial_epochs": summary.get("trial_epochs_total"), "wall_s": summary.get("search_seconds"),
        **{f"test_{k}": v for k, v in test.items() if k in ("error", "map", "rmse", "latent_accuracy", "coherence")},
        **{k: v for k, v in mx_o_figures(summary).items() if k in ("mx_o_test_error", "mx_o_test_map")},
    }
    return {k: float(v) for k, v in figures.items() if v is not None}
