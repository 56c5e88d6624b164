"""Per-epoch training metrics exported as Ray metrics (``ray.util.metrics`` Gauges) for the dashboards.

Prometheus names ``cmmd_train_<term>`` (Ray prefixes ``ray_``), tagged with the run name and dataset:
rec, kl, mmd, ce, loss, val_metric, samples_per_s, epoch. Create inside a Ray process (a Train worker).
"""

from __future__ import annotations

from ray.util.metrics import Gauge

__all__ = ["GAUGES", "EpochGauges"]

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


class EpochGauges:
    """One Gauge per term; ``record`` sets those present in an epoch's metric row (train_* keys accepted)."""

    def __init__(self, run_name: str, dataset: str):
        self.gauges = {}
        for key, text in GAUGES.items():
            g = Gauge(f"cmmd_train_{key}", description=text, tag_keys=("run", "dataset"))
            g.set_default_tags({"run": run_name, "dataset": dataset})
            self.gauges[key] = g

    def record(self, row: dict) -> None:
        for key, gauge in self.gauges.items():
            value = row.get(key, row.get(f"train_{key}"))
            if value is not None:
                gauge.set(float(value))
