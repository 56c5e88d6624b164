"""A sweep on Ray's fake multi-node autoscaling provider: worker nodes come while trials are pending, go when idle."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fake_autoscaler import FakeAutoscalingCluster
from waiting import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def worker_nodes(cluster: FakeAutoscalingCluster) -> int | None:
    """Active worker nodes (fake type ``cpu2``) from ``ray status``; None when it could not say."""
    ray = str(Path(sys.executable).with_name("ray"))
    out = subprocess.run([ray, "status", "--address", cluster.address], capture_output=True, text=True, timeout=60,
                         env=cluster.client_env())
    if out.returncode != 0 or "Active:" not in out.stdout:
        return None
    active = out.stdout.split("Active:", 1)[1].split("Pending:", 1)[0]
    return sum(int(n) for n in re.findall(r"^\s*(\d+)\s+cpu2\b", active, flags=re.M))


def test_sweep_scales_workers_up_then_down(tmp_path):
    cluster = FakeAutoscalingCluster(tmp_path / "cluster", head_cpus=0, idle_timeout_minutes=0.1,
                                     worker_types={"cpu2": {"resources": {"CPU": 2}, "max_workers": 2}}).start()
    try:
        assert worker_nodes(cluster) == 0  # nothing runs: only the head, which has no CPU for trials
        env = cluster.client_env()
        cmd = [sys.executable, "-m", "cmmd_dist.tune", "--dataset", "digits2v", "--preset", "smoke", "--num-trials", "2",
               "--max-concurrent-trials", "2", "--no-retrain", "--out", str(tmp_path / "out"),
               "--storage", str(tmp_path / "sweeps"), "--mlflow", f"sqlite:///{tmp_path / 'mlflow.db'}"]
        log = open(tmp_path / "sweep.log", "w")
        sweep = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        seen: list[tuple[float, int | None]] = []
        t0 = time.monotonic()

        def sweep_ended() -> bool:  # samples the worker count while the sweep runs
            seen.append((time.monotonic() - t0, worker_nodes(cluster)))
            return sweep.poll() is not None

        try:
            wait_for(sweep_ended, 420, interval=2, what=lambda: f"the sweep to end (worker nodes seen: {seen}):\n"
                                                                 f"{(tmp_path / 'sweep.log').read_text()[-3000:]}")
        finally:
            if sweep.poll() is None:
                sweep.kill()
        assert sweep.wait() == 0, (tmp_path / "sweep.log").read_text()[-3000:]
        peak = max(n or 0 for _, n in seen)
        assert peak >= 1, f"no worker node was added while trials were pending: {seen}"
        summary = json.loads(next((tmp_path / "out").glob("*-summary.json")).read_text())
        assert len(summary["trials"]) == 2 and all(t["best_cv_metric"] is not None for t in summary["trials"])
        # idle nodes go after idle_timeout_minutes (6 s) plus the autoscaler's update interval
        wait_for(lambda: worker_nodes(cluster) == 0, 120, interval=2,
                 what=f"the idle worker nodes to be removed (peak {peak})")
    finally:
        cluster.shutdown()
