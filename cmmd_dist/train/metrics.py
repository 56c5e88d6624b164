"""Training and sweep metrics exported as Ray metrics (``ray.util.metrics``) for the Grafana dashboards.

Ray prefixes every name with ``ray_`` and gives a Counter the suffix ``_total`` in Prometheus:

- ``cmmd_train_<term>`` Gauges (rec, kl, mmd, ce, loss, val_metric, samples_per_s, epoch), tags run, dataset:
  the epoch row of rank 0 of a Ray Train worker group.
- ``cmmd_train_worker_samples_per_s`` Gauge, tags run, dataset, rank: each rank's own throughput.
- ``cmmd_train_checkpoints`` / ``cmmd_train_restarts`` Counters, tags run, dataset: checkpoints reported,
  and worker groups started from a restored checkpoint (one per recovery or resume).
- ``cmmd_sweep_trials`` Gauge, tags sweep, dataset, state (running, finished, pruned, errored), and
  ``cmmd_sweep_best_cv_metric`` Gauge, tags sweep, dataset: set by the Tune driver's callback.

Create these inside a Ray process (a Train worker, or a driver after ``ray.init``).
"""

from __future__ import annotations

import math

from collections.abc import Iterable

from ray.util.metrics import Counter, Gauge

__all__ = ["GAUGES", "SWEEP_STATES", "EpochGauges", "WorkerMetrics", "SweepGauges", "prometheus_names"]

GAUGES: dict[str, str] = {
    "rec": "reconstruction term -log p(x_m|z,x_o), mean over rows, last epoch",
    "kl": "KL(q(z|x)||p(z|x_o)), mean over rows, last epoch",
    "mmd": "squared MMD between posterior and prior samples of the global batch, last epoch",
    "ce": "classification term (batch sum or mean, as configured), last epoch",
    "loss": "total CMMD loss, last epoch",
    "val_metric": "validation metric (error, or 1 - mAP), lower is better",
    "samples_per_s": "training throughput of the whole worker group, rows per second",
    "epoch": "completed epochs",
}

SWEEP_STATES = ("running", "finished", "pruned", "errored")

WORKER_SAMPLES, CHECKPOINTS, RESTARTS = "cmmd_train_worker_samples_per_s", "cmmd_train_checkpoints", "cmmd_train_restarts"
SWEEP_TRIALS, SWEEP_BEST = "cmmd_sweep_trials", "cmmd_sweep_best_cv_metric"

_RUN_TAGS = ("run", "dataset")


def prometheus_names() -> set[str]:
    """Every name this module exports, as Prometheus shows it (``ray_`` prefix, ``_total`` on counters)."""
    gauges = [f"cmmd_train_{key}" for key in GAUGES] + [WORKER_SAMPLES, SWEEP_TRIALS, SWEEP_BEST]
    return {f"ray_{n}" for n in gauges} | {f"ray_{n}_total" for n in (CHECKPOINTS, RESTARTS)}


class EpochGauges:
    """One Gauge per term; ``record`` sets those present in an epoch's metric row (train_* keys accepted)."""

    def __init__(self, run_name: str, dataset: str):
        self.gauges: dict[str, Gauge] = {}
        for key, text in GAUGES.items():
            g = Gauge(f"cmmd_train_{key}", description=text, tag_keys=_RUN_TAGS)
            g.set_default_tags({"run": run_name, "dataset": dataset})
            self.gauges[key] = g

    def record(self, row: dict) -> None:
        for key, gauge in self.gauges.items():
            value = row.get(key, row.get(f"train_{key}"))
            if value is not None:
                gauge.set(float(value))


class WorkerMetrics:
    """What one Ray Train worker exports: its own samples/s on every rank; on rank 0 also the epoch gauges
    and the run's checkpoint and restart counters (one worker group counts once, not once per rank)."""

    def __init__(self, run_name: str, dataset: str, rank: int):
        tags = {"run": run_name, "dataset": dataset}
        self.samples = Gauge(WORKER_SAMPLES, tag_keys=(*_RUN_TAGS, "rank"),
                             description="training rows per second of one Ray Train worker (its own shard)")
        self.samples.set_default_tags({**tags, "rank": str(rank)})
        self.lead = rank == 0
        if self.lead:
            self.epoch = EpochGauges(run_name, dataset)
            self.checkpoints = Counter(CHECKPOINTS, tag_keys=_RUN_TAGS,
                                       description="checkpoints reported to Ray Train (one per epoch)")
            self.restarts = Counter(RESTARTS, tag_keys=_RUN_TAGS,
                                    description="worker groups started from a restored checkpoint")
            self.checkpoints.set_default_tags(tags)
            self.restarts.set_default_tags(tags)

    def record_epoch(self, row: dict, worker_samples_per_s: float) -> None:
        self.samples.set(float(worker_samples_per_s))
        if self.lead:
            self.epoch.record(row)

    def checkpoint_saved(self) -> None:
        if self.lead:
            self.checkpoints.inc()

    def restored(self) -> None:
        if self.lead:
            self.restarts.inc()


class SweepGauges:
    """Trial counts per state and the best CV metric so far (lower is better) of one sweep, from its driver."""

    def __init__(self, sweep: str, dataset: str):
        tags = {"sweep": sweep, "dataset": dataset}
        self.trials = Gauge(SWEEP_TRIALS, tag_keys=("sweep", "dataset", "state"),
                            description="trials of the sweep per state: running, finished, pruned, errored")
        self.best = Gauge(SWEEP_BEST, tag_keys=("sweep", "dataset"),
                          description="best (lowest) fold-mean validation metric over the sweep's trials so far")
        self.trials.set_default_tags(tags)
        self.best.set_default_tags(tags)
        self.best_value: float | None = None

    def set_states(self, states: Iterable[str]) -> dict[str, int]:
        """Set the count of every state from the current state of each trial (None: pending, not counted)."""
        counts = dict.fromkeys(SWEEP_STATES, 0)
        for state in states:
            if state in counts:
                counts[state] += 1
        for state, n in counts.items():
            self.trials.set(n, tags={"state": state})
        return counts

    def offer(self, value: float | None) -> None:
        """A trial's CV metric: kept when lower than the best so far."""
        if value is not None and math.isfinite(value) and (self.best_value is None or value < self.best_value):
            self.best_value = float(value)
            self.best.set(self.best_value)
