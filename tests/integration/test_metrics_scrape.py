"""Ray's Prometheus endpoint after a real run: every metric the Grafana dashboards query is there.

A 2-epoch Ray Train run of 2 workers in which one worker dies (recovery from the epoch-1 checkpoint), then a
3-trial Tune sweep through the real ``MlflowTrials`` callback (one trial finishes, one stops early, one
fails), while a thread scrapes the node's metrics endpoint (the port is ``MetricsExportPort`` of
``ray.nodes()``, served by the node's agent also with ``include_dashboard=False``). Series are merged over
the scrapes: Ray drops a dead worker's gauges ~20 s after its last export (2 x the 10 s export interval).
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from cmmd_dist.storage.yaml_files import load_run_config
from cmmd_dist.train.distributed import run_distributed
from crash_drill import CrashOnce
from tiny import TINY
from waiting import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GPU_ONLY = {"ray_node_gpus_utilization", "ray_node_gram_used", "ray_node_gpus_available"}  # exported with GPUs only
SERIES = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")


class Scraper(threading.Thread):
    """Scrapes ``url`` every ``every`` seconds; ``series`` keeps the last value of every series ever seen."""

    def __init__(self, url: str, every: float = 2.0):
        super().__init__(daemon=True)
        self.url, self.every = url, every
        self.series: dict[tuple[str, frozenset], float] = {}
        self.lock, self.done = threading.Lock(), threading.Event()

    def scrape(self) -> None:
        text = urllib.request.urlopen(self.url, timeout=10).read().decode()
        with self.lock:
            for line in text.splitlines():
                m = SERIES.match(line)
                if m and not line.startswith("#"):
                    labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m["labels"] or ""))
                    self.series[(m["name"], labels)] = float(m["value"])

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.scrape()
            except OSError:
                pass
            self.done.wait(self.every)

    def names(self) -> set[str]:
        with self.lock:
            return {name for name, _ in self.series}

    def values(self, name: str, **labels: str) -> dict[frozenset, float]:
        want = set(labels.items())
        with self.lock:
            return {lab: v for (n, lab), v in self.series.items() if n == name and want <= lab}


def tiny_run(tmp_path: Path, name: str):
    return load_run_config(None, {
        "data": {"dataset": "digits2v", "limit": 128},
        "model": TINY,
        "train": {"epochs": 2, "batch_size": 32, "lr": 1e-3, "progress": False, "baseline": False, "patience": 10},
        "distributed": {"workers": 2, "max_failures": 1, "keep_checkpoints": None, "name": name,
                        "storage": str(tmp_path / "ray")},
        "output_dir": str(tmp_path / "runs"),
    })


def run_tiny_sweep(tmp_path: Path, name: str) -> None:
    from ray import tune

    from cmmd_dist.tune.sweep_tracking import MlflowTrials
    from cmmd_dist.tracking.recorder import SweepRecorder

    def sweep_trial(config: dict) -> None:  # nested: pickled by value, workers cannot import this test module
        """Reports like cmmd_dist's CV trials: cv_metric per epoch, cv_completed=1 on a trial's natural end."""
        from ray import tune

        if config["x"] < 0:
            raise RuntimeError("planted trial failure")
        for epoch in (1, 2):
            tune.report({"epoch": epoch, "cv_metric": config["x"] * (3 - epoch),
                         "cv_completed": int(epoch == 2 and config["x"] > 0.2)})

    recorder = SweepRecorder("digits2v", None, {"x": [0.3, 0.1, -1.0]}, sweep_id=name,
                             uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    tuner = tune.Tuner(
        tune.with_resources(sweep_trial, {"cpu": 0.5}),
        param_space={"x": tune.grid_search([0.3, 0.1, -1.0])},
        run_config=tune.RunConfig(name=name, storage_path=str(tmp_path / "sweeps"), verbose=0,
                                  callbacks=[MlflowTrials(recorder)]),
    )
    tuner.fit()


def dashboard_metrics() -> set[str]:
    names = set()
    for path in (ROOT / "dashboards").glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                names |= set(re.findall(r"\bray_[a-zA-Z0-9_]+", target["expr"]))
    return names


@pytest.fixture(scope="module")
def scraped(ray_session, tmp_path_factory):
    node = next(n for n in ray_session.nodes() if n["Alive"])
    scraper = Scraper(f"http://127.0.0.1:{node['MetricsExportPort']}/metrics")
    try:
        scraper.scrape()
    except OSError:
        pytest.skip(f"no Ray metrics agent on this node (export port {node['MetricsExportPort']}); needs ray[default]")
    scraper.start()
    tmp = tmp_path_factory.mktemp("scrape")
    t0 = time.monotonic()
    results, _ = run_distributed(tiny_run(tmp, "scrape-train"),
                                 on_step=CrashOnce(str(tmp / "crashed"), epoch=2, rank=1, step=1))
    assert results["epochs_run"] == 2 and (tmp / "crashed").exists()
    wait_for(lambda: sum(scraper.values("ray_cmmd_train_checkpoints_total", run="scrape-train").values()) >= 2
             and len(scraper.values("ray_cmmd_train_worker_samples_per_s", run="scrape-train")) >= 2, 60, interval=1,
             what="two checkpoints and two workers' throughput in the scrapes")
    run_tiny_sweep(tmp, "scrape-sweep")
    ended = ("finished", "pruned", "errored")
    wait_for(lambda: all(1 in scraper.values("ray_cmmd_sweep_trials", sweep="scrape-sweep", state=s).values()
                         for s in ended) and scraper.values("ray_cmmd_sweep_best_cv_metric", sweep="scrape-sweep"), 60,
             interval=1, what=f"the sweep's {'/'.join(ended)} trial counts and best metric in the scrapes")
    scraper.done.set()
    print(f"run, sweep and scrapes: {time.monotonic() - t0:.0f} s")
    return scraper


def test_every_metric_the_dashboards_query_is_exported(scraped, ray_session):
    queried = dashboard_metrics()
    assert "ray_cmmd_train_worker_samples_per_s" in queried and "ray_node_cpu_utilization" in queried
    expected = queried if ray_session.cluster_resources().get("GPU", 0) else queried - GPU_ONLY
    missing = expected - scraped.names()
    assert not missing, f"queried by dashboards/ but not exported: {sorted(missing)}"


def test_training_counters_and_per_worker_throughput(scraped):
    checkpoints = scraped.values("ray_cmmd_train_checkpoints_total", run="scrape-train", dataset="digits2v")
    restarts = scraped.values("ray_cmmd_train_restarts_total", run="scrape-train")
    # epoch 1 in the first worker group, epoch 2 in the one restored from epoch 1's checkpoint
    assert sum(checkpoints.values()) == 2
    assert sum(restarts.values()) == 1
    ranks = {dict(lab)["rank"]: v for lab, v in scraped.values("ray_cmmd_train_worker_samples_per_s", run="scrape-train").items()}
    assert set(ranks) == {"0", "1"} and all(v > 0 for v in ranks.values())
    assert max(scraped.values("ray_cmmd_train_epoch", run="scrape-train").values()) == 2
    for term in ("rec", "kl", "mmd", "ce", "loss", "val_metric", "samples_per_s"):
        assert scraped.values(f"ray_cmmd_train_{term}", run="scrape-train"), term


def test_sweep_gauges_from_the_tune_driver(scraped):
    states = {dict(lab)["state"]: v for lab, v in scraped.values("ray_cmmd_sweep_trials", sweep="scrape-sweep",
                                                                  dataset="digits2v").items()}
    assert states == {"running": 0, "finished": 1, "pruned": 1, "errored": 1}
    best = scraped.values("ray_cmmd_sweep_best_cv_metric", sweep="scrape-sweep")
    assert list(best.values()) == [pytest.approx(0.1)]  # trial x=0.1 at its epoch 2: 0.1 * (3 - 2)
