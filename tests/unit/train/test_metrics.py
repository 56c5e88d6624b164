"""The metric classes' own logic, without a Ray cluster (``ray.util.metrics`` records nothing before
``ray.init``); tests/integration/test_metrics_scrape.py checks what reaches Prometheus.
"""

from __future__ import annotations

import pickle
from types import SimpleNamespace

from cmmd_dist.tune.sweep_tracking import MlflowTrials, trial_state
from cmmd_dist.train.metrics import SWEEP_STATES, SweepGauges, WorkerMetrics, prometheus_names


def trial(status: str, completed: int | None = None, name: str = "sweep-a"):
    last = None if completed is None else {"cv_completed": completed}
    return SimpleNamespace(status=status, last_result=last, experiment_dir_name=name)


def test_trial_states_follow_status_and_cv_completed():
    assert [trial_state(t) for t in (trial("PENDING"), trial("RUNNING"), trial("ERROR"), trial("PAUSED"),
                                      trial("TERMINATED", 1), trial("TERMINATED", 0), trial("TERMINATED"))] == \
        [None, "running", "errored", None, "finished", "pruned", "pruned"]


def test_sweep_gauges_count_every_state_and_keep_the_lowest_metric():
    g = SweepGauges("sweep-a", "digits2v")
    assert g.set_states(["running", None, "finished", "running", "errored"]) == \
        {"running": 2, "finished": 1, "pruned": 0, "errored": 1}
    assert set(SWEEP_STATES) == {"running", "finished", "pruned", "errored"}
    for value in (0.4, None, 0.2, 0.3):
        g.offer(value)
    assert g.best_value == 0.2


def test_callback_counts_the_event_state_before_tune_updates_status():
    cb = MlflowTrials(SimpleNamespace(dataset="digits2v"))
    done, running, pending = trial("RUNNING", 1), trial("RUNNING"), trial("PENDING")
    # Tune calls on_trial_complete while the trial's status still says RUNNING
    assert cb._count([done, running, pending], done, "finished") == {"running": 1, "finished": 1, "pruned": 0, "errored": 0}
    assert cb._gauges is not None and cb._gauges.best_value is None


def test_callback_pickles_without_its_gauges():
    cb = MlflowTrials(SimpleNamespace(dataset="digits2v"))
    cb._count([trial("RUNNING")], trial("RUNNING"), "running")
    assert cb._gauges is not None
    copy = pickle.loads(pickle.dumps(cb))
    assert copy._gauges is None and copy.recorder.dataset == "digits2v" and copy.metric == "cv_metric"


def test_only_rank_zero_counts_checkpoints_and_restarts():
    lead, other = WorkerMetrics("run-a", "digits2v", 0), WorkerMetrics("run-a", "digits2v", 1)
    assert lead.lead and not other.lead
    assert not hasattr(other, "checkpoints") and not hasattr(other, "epoch")
    other.checkpoint_saved(), other.restored(), other.record_epoch({"train_rec": 1.0}, 10.0)  # no-ops on rank 1


def test_prometheus_names_carry_rays_prefix_and_counter_suffix():
    names = prometheus_names()
    assert {"ray_cmmd_train_rec", "ray_cmmd_train_worker_samples_per_s", "ray_cmmd_train_checkpoints_total",
            "ray_cmmd_train_restarts_total", "ray_cmmd_sweep_trials", "ray_cmmd_sweep_best_cv_metric"} <= names
    assert len(names) == 13 and all(n.startswith("ray_cmmd_") for n in names)
