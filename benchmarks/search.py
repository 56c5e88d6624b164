"""TPE + ASHA against the paper's lambda grid, same CV, on digits2v; writes benchmarks/results/search.json.

Run: .venv/bin/python benchmarks/search.py [--epochs 15] [--trials 12]
Both searches use the `paper` preset of search_spaces/digits2v.yaml (architecture fixed, 3-fold stratified
CV over train+val). The grid runs lambda = 0, 0.1, ..., 1 to the end; TPE (seeded) samples lambda from
U[0, 1] and ASHA prunes on the fold-mean error. Compute is counted in trial-epochs (one epoch of all
folds of one trial). "To best" = trial-epochs spent, in order of trial completion, until the search
first held its final best CV figure. Each search's best configuration is retrained on train+val and
tested once on the test split.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import yaml

from cmmd_dist.config import SweepConfig
from cmmd_dist.search_space import load_search_space
from cmmd_dist.tune import run_sweep

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "search.json"


def space_file(tmp: Path, searcher: str, epochs: int) -> Path:
    space = load_search_space(ROOT / "search_spaces" / "digits2v.yaml").with_preset("paper")
    raw = space.model_dump(exclude_none=True)
    raw["fixed"].setdefault("train", {}).update(epochs=epochs, patience=epochs)
    if searcher == "optuna":
        raw["params"] = {"loss.lam": {"dist": "uniform", "low": 0.0, "high": 1.0}}
    raw["searcher"] = searcher
    p = tmp / f"{searcher}.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def to_best(summary: dict) -> int:
    """Trial-epochs spent (trials in completion order) until the final best CV figure was first reached."""
    trials = sorted(summary["trials"], key=lambda t: t["finished_at"] or 0)
    best = min(t["best_cv_metric"] for t in trials)
    spent = 0
    for t in trials:
        spent += t["epochs_run"]
        if t["best_cv_metric"] <= best:
            return spent
    return spent


def run(searcher: str, epochs: int, trials: int, tmp: Path, grace: int, rf: float) -> dict:
    settings = SweepConfig(dataset="digits2v", space=str(space_file(tmp, searcher, epochs)), searcher=searcher,
                           num_trials=trials, asha=searcher == "optuna", workers_per_trial=1, seed=0,
                           grace_period=grace, reduction_factor=rf,
                           output_dir=str(tmp / searcher), name=f"bench-{searcher}")
    s = run_sweep(settings)
    return {
        "best_cv": min(t["best_cv_metric"] for t in s["trials"]),
        "best_lam": s["best"]["params"]["loss.lam"],
        "trial_epochs_to_best": to_best(s),
        "trial_epochs_total": s["trial_epochs_total"],
        "trials": len(s["trials"]),
        "pruned": sum(t["stopped_early"] for t in s["trials"]),
        "test": s["test"]["error"],
        "search_seconds": s["search_seconds"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--trials", type=int, default=12, help="TPE trials (the grid has 11)")
    ap.add_argument("--grace", type=int, default=5, help="ASHA grace period (epochs): early epochs sit at chance")
    ap.add_argument("--rf", type=float, default=3.0, help="ASHA reduction factor")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        grid = run("grid", args.epochs, 11, tmp, args.grace, args.rf)
        tpe = run("optuna", args.epochs, args.trials, tmp, args.grace, args.rf)
    out = {"dataset": "digits2v", "epochs": args.epochs, "folds": 3, "asha": {"grace": args.grace, "rf": args.rf},
           "grid": grid, "tpe_asha": tpe,
           "cv_gap": tpe["best_cv"] - grid["best_cv"],
           "compute_ratio_to_best": tpe["trial_epochs_to_best"] / grid["trial_epochs_to_best"],
           "compute_ratio_total": tpe["trial_epochs_total"] / grid["trial_epochs_total"]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
