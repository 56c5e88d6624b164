"""Per-trial start-up cost of a sweep, and the README's main job end to end; writes benchmarks/results/trial_overhead.json.

Run: .venv/bin/python benchmarks/trial_overhead.py --label after
     PYTHONPATH=/path/to/old/checkout .venv/bin/python benchmarks/trial_overhead.py --label before --repo /path/to/old/checkout

It runs the README's main job, ``cmmd-dist tune --dataset digits2v --preset quick`` (8 trials, 2-fold CV, 15
epochs, 1 worker per trial; retrain and registration included), as a fresh process with its own local Ray
and an embedded MLflow store in a temporary folder, and times:

- ``quickstart_sweep_s``: the whole command, from the interpreter's start to its exit (what a user waits
  for after the install);
- per trial, ``overhead = trial wall time - time inside its epochs``. Trial wall time runs from the moment
  the sweep driver asks Ray for the trial's actor (``TuneController._schedule_trial_actor``) to Tune's
  ``on_trial_complete`` (or ``on_trial_error``) for it; the time inside its epochs is the sum of the
  ``train_seconds`` its reports carry (each epoch's training time of all its fold models; the few
  milliseconds of each epoch's validation count as overhead, before and after alike). Both clocks are read in
  the driver: the measuring process wraps those two methods before it calls the sweep's entry point.

The figures are the median and 90th percentile of the overhead over the sweep's trials. The machine is
shared: the load average before and after each run goes into the file with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "trial_overhead.json"
JOB = ["--dataset", "digits2v", "--preset", "quick"]


def child(out: str, argv: list[str]) -> int:
    """Run the sweep entry point in this process with the driver-side clocks attached; write them to ``out``."""
    import ray.tune
    from ray.tune.execution.tune_controller import TuneController

    try:
        from cmmd_dist.tune import __main__ as entry
    except ImportError:  # an old checkout: cmmd_dist/tune.py, where main() lives in the module itself
        entry = None
    import cmmd_dist.tune as tune_mod

    clocks: dict[str, dict] = {}
    schedule = TuneController._schedule_trial_actor

    def timed_schedule(self, trial):
        clocks.setdefault(trial.trial_id, {"scheduled": time.time(), "seconds": 0.0, "epochs": 0})
        return schedule(self, trial)

    class Clock(ray.tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            c = clocks.setdefault(trial.trial_id, {"scheduled": None, "seconds": 0.0, "epochs": 0})
            c["seconds"] += float(result.get("train_seconds", 0.0))
            c["epochs"] += 1

        def on_trial_complete(self, iteration, trials, trial, **info):
            clocks.setdefault(trial.trial_id, {})["ended"] = time.time()

        on_trial_error = on_trial_complete

    TuneController._schedule_trial_actor = timed_schedule
    real_run_config = ray.tune.RunConfig

    class RunConfig(real_run_config):  # the sweep's own callbacks plus the clock
        def __init__(self, *args, callbacks=None, **kwargs):
            super().__init__(*args, callbacks=[*(callbacks or []), Clock()], **kwargs)

    ray.tune.RunConfig = RunConfig
    try:
        main = entry.main if entry is not None and hasattr(entry, "main") else tune_mod.main
        rc = main(argv)
    finally:
        Path(out).write_text(json.dumps(clocks))
    return rc


def measure(label: str, repo: Path) -> dict:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="trial-overhead-") as tmp:
        clocks_file = Path(tmp) / "clocks.json"
        argv = [*JOB, "--out", str(Path(tmp) / "runs"), "--mlflow", f"sqlite:///{tmp}/mlruns.db"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH")) if p)}
        env.pop("RAY_ADDRESS", None)
        t0 = time.time()
        out = subprocess.run([sys.executable, __file__, "--child", str(clocks_file), "--", *argv], cwd=repo, env=env,
                             capture_output=True, text=True)
        wall = time.time() - t0
        if out.returncode != 0:
            raise SystemExit(f"the sweep failed ({out.returncode}):\n{out.stderr[-4000:]}")
        clocks = json.loads(clocks_file.read_text())
        summary = json.loads(next((Path(tmp) / "runs").glob("*-summary.json")).read_text())
    trials = {t: c for t, c in clocks.items() if c.get("scheduled") and c.get("ended")}
    overhead = sorted(c["ended"] - c["scheduled"] - c["seconds"] for c in trials.values())
    p90 = overhead[min(len(overhead) - 1, int(round(0.9 * (len(overhead) - 1))))]
    return {
        "label": label, "command": "cmmd-dist tune " + " ".join(JOB), "quickstart_sweep_s": round(wall, 2),
        "median_overhead_s": round(statistics.median(overhead), 3), "p90_overhead_s": round(p90, 3),
        "search_s": round(summary["search_seconds"], 2), "trials": len(trials), "overhead_s": [round(o, 3) for o in overhead],
        "epoch_seconds_s": [round(c["seconds"], 3) for c in trials.values()],
        "trial_wall_s": [round(c["ended"] - c["scheduled"], 3) for c in trials.values()],
        "epochs_reported": [c["epochs"] for c in trials.values()],
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> int:
    if "--child" in sys.argv:
        i = sys.argv.index("--child")
        return child(sys.argv[i + 1], sys.argv[sys.argv.index("--") + 1:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--label", required=True, choices=["before", "after"])
    p.add_argument("--repo", default=str(ROOT), help="checkout whose cmmd_dist runs (default: this one)")
    args = p.parse_args()
    figures = measure(args.label, Path(args.repo).resolve())
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[args.label] = figures
    results["targets"] = {"median_overhead_s": 3.0, "quickstart_sweep_s": 60.0}
    if "after" in results:
        a = results["after"]
        results["target_met"] = {"median_overhead_s": a["median_overhead_s"] <= 3.0,
                                 "quickstart_sweep_s": a["quickstart_sweep_s"] <= 60.0}
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: figures[k] for k in ("median_overhead_s", "p90_overhead_s", "quickstart_sweep_s", "trials")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
