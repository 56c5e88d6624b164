"""The noise-aware search benchmark: does the platform's search give a model at least as good as the paper's
protocol for less compute, and does TPE help beyond random search? Writes benchmarks/results/search.json and
benchmarks/results/search_curves.png.

Run: .venv/bin/python benchmarks/search.py --dataset digits2v --seeds 0,1,2,3,4
     .venv/bin/python benchmarks/search.py --dataset mnist2v --seeds 0,1,2,3,4      # reduced budget
     .venv/bin/python benchmarks/search.py --dataset digits2v --seeds 0 --epochs 4 --out /tmp/s.json   # a dry run

Four searches per seed, over the same folds (the dataset's ``paper`` or ``reproduce`` preset: its architecture,
its k-fold CV over train+val):
- ``grid``: the paper's protocol, lambda in {0, 0.1, ..., 1}, every trial to the end (no pruning);
- ``random_asha``: lambda ~ U[0, 1], random samples, ASHA;
- ``tpe_asha``: lambda ~ U[0, 1], TPE, ASHA;
- ``tpe_asha_full``: the full space of cmmd_dist/search_spaces/<dataset>.yaml (lambda, latent size, depths and widths, lr),
  TPE + ASHA.
The ASHA searches run as many trials as 30% (lambda only) or 50% (full space) of the grid's trial-epochs pay
for when each ASHA rung keeps 1/rf of its trials (``asha_spend``); the spend actually paid is reported and
checked against those shares in ``target_met``.
The seed sets the searcher, the initial weights and the batch order of every trial (the folds stay the same).
Compute is counted in trial-epochs (one epoch of all the folds of one trial). For each search: the best CV
figure so far (``best_cv_metric`` of the trials that finished their CV) against the cumulative trial-epochs,
trials in completion order (mean and standard error over seeds, on the grid of multiples of one trial's epochs),
the trial-epochs spent, and the test error of its champion retrained on train+val (mean, standard error, per seed).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from cmmd_dist.config import SweepConfig
from cmmd_dist.tune import run_sweep
from cmmd_dist.tune.search_space import load_search_space, packaged_spaces

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "search.json"
GRID = [round(0.1 * i, 1) for i in range(11)]
SEARCHES = ("grid", "random_asha", "tpe_asha", "tpe_asha_full")

# per dataset: the preset the lambda-only searches start from, what the budget changes in it, and epochs / lr
SETUPS = {
    "digits2v": {"preset": "paper", "fixed": {}, "epochs": 30, "lr": 3e-3},
    # reduced budget: 3000 rows of each split, 256-wide nets
    "mnist2v": {"preset": "reproduce", "epochs": 20, "lr": 3e-3, "fixed": {
        "data": {"limit": 3000},
        "model": {"encoder_hidden": [256, 256], "prior_hidden": [256, 256], "decoder_hidden": [256, 256]}}},
}


def space_file(tmp: Path, dataset: str, search: str, epochs: int, lr: float) -> Path:
    """The search space of one search, as a YAML the sweep reads (``--space``)."""
    setup = SETUPS[dataset]
    full = load_search_space(packaged_spaces() / f"{dataset}.yaml")
    paper = full.with_preset(setup["preset"])
    raw = paper.model_dump(exclude_none=True)
    for section, values in setup["fixed"].items():
        raw["fixed"].setdefault(section, {}).update(values)
    raw["fixed"].setdefault("train", {}).update(epochs=epochs, patience=epochs, lr=lr)
    if search == "grid":
        raw.update(searcher="grid", params={"loss.lam": {"dist": "grid", "values": GRID}})
    elif search == "tpe_asha_full":
        # the searched values override the preset's fixed ones (architecture, lr) trial by trial
        raw.update(searcher="optuna", params={k: v.model_dump(exclude_none=True) for k, v in full.params.items()})
    else:
        raw.update(searcher="random" if search == "random_asha" else "optuna",
                   params={"loss.lam": {"dist": "uniform", "low": 0.0, "high": 1.0}})
    p = tmp / f"{dataset}-{search}.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def curve(rows: list[dict], step: int, points: int) -> list[float | None]:
    """Best CV so far of the finished trials, at each multiple of ``step`` trial-epochs (completion order); None
    before the first finished trial and past what the search spent."""
    out, spent, best, i = [], 0, math.inf, 0
    ordered = sorted(rows, key=lambda r: r["finished_at"] or 0)
    total = sum(r["epochs_run"] or 0 for r in rows)
    for x in range(1, points + 1):
        if (x - 1) * step >= total:
            out.append(None)
            continue
        while i < len(ordered) and spent + (ordered[i]["epochs_run"] or 0) <= x * step:
            spent += ordered[i]["epochs_run"] or 0
            if not ordered[i]["stopped_early"] and ordered[i]["best_cv_metric"] is not None:
                best = min(best, ordered[i]["best_cv_metric"])
            i += 1
        out.append(None if math.isinf(best) else best)
    return out


def asha_spend(epochs: int, grace: int, rf: float) -> float:
    """Expected trial-epochs of one trial under ASHA when each rung keeps 1/rf of the trials reaching it."""
    rungs, r = [], grace
    while r < epochs:
        rungs.append(r)
        r = int(r * rf)
    spend, last, alive = 0.0, 0, 1.0
    for r in rungs + [epochs]:
        spend += alive * (r - last)
        last, alive = r, alive / rf
    return spend


def run_search(dataset: str, search: str, seed: int, args, tmp: Path, mlflow: str) -> dict:
    epochs, grid_spend = args.epochs, len(GRID) * args.epochs
    asha = search != "grid"
    share = {"grid": None, "random_asha": 0.3, "tpe_asha": 0.3, "tpe_asha_full": 0.5}[search]
    trials = len(GRID) if share is None else max(2, round(share * grid_spend / asha_spend(epochs, args.grace, args.rf)))
    settings = SweepConfig(dataset=dataset, space=str(space_file(tmp, dataset, search, epochs, args.lr)),
                           num_trials=trials, asha=asha, workers_per_trial=1, seed=seed, grace_period=args.grace,
                           reduction_factor=args.rf, mlflow=mlflow, output_dir=str(tmp / f"{search}-{seed}"),
                           storage=str(tmp / "sweeps"), name=f"{dataset}-{search}-{seed}")
    t0 = time.time()
    s = run_sweep(settings, log=lambda *_: None)
    rows = s["trials"]
    return {"seed": seed, "trials": len(rows), "pruned": sum(r["stopped_early"] for r in rows),
            "trial_epochs": s["trial_epochs_total"], "best_cv": s["best"]["best_cv_metric"],
            "test_error": s["test"]["error"], "champion": s["best"]["params"], "seconds": round(time.time() - t0, 1),
            "curve": curve(rows, epochs, len(GRID) * 2)}


def mean_se(values: list[float]) -> dict:
    m = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return {"mean": m, "se": se}


def summarise(runs: list[dict], epochs: int) -> dict:
    points = len(runs[0]["curve"])
    xs, mean, se = [], [], []
    for j in range(points):
        vals = [r["curve"][j] for r in runs]
        if all(v is not None for v in vals):
            xs.append((j + 1) * epochs)
            ms = mean_se(vals)
            mean.append(ms["mean"])
            se.append(ms["se"])
    return {"curve": {"trial_epochs": xs, "best_cv_mean": mean, "best_cv_se": se},
            "trial_epochs": mean_se([r["trial_epochs"] for r in runs]),
            "test_error": {**mean_se([r["test_error"] for r in runs]), "per_seed": [r["test_error"] for r in runs]},
            "best_cv": mean_se([r["best_cv"] for r in runs]), "per_seed": runs}


def area_between(a: dict, b: dict) -> float | None:
    """Area between two mean curves (b - a) over the trial-epochs both cover, per trial-epoch."""
    xa, xb = dict(zip(a["trial_epochs"], a["best_cv_mean"])), dict(zip(b["trial_epochs"], b["best_cv_mean"]))
    common = sorted(set(xa) & set(xb))
    return statistics.fmean(xb[x] - xa[x] for x in common) if common else None


def targets(s: dict, grid_spend: float) -> dict:
    grid, tpe, rnd, full = (s[k] for k in SEARCHES[:1] + ("tpe_asha", "random_asha", "tpe_asha_full"))
    g = grid["test_error"]
    area = area_between(tpe["curve"], rnd["curve"])
    return {
        "tpe_asha_within_1se_of_grid_at_30pct": tpe["test_error"]["mean"] <= g["mean"] + g["se"]
        and tpe["trial_epochs"]["mean"] <= 0.3 * grid_spend,
        "tpe_asha_curve_at_or_below_random_asha": area is not None and area >= 0,
        "tpe_asha_full_beats_grid_by_1se_at_50pct": full["test_error"]["mean"] < g["mean"] - g["se"]
        and full["trial_epochs"]["mean"] <= 0.5 * grid_spend,
        "_area_random_minus_tpe_per_trial_epoch": area,
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in results if d in SETUPS]
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
    for ax, d in zip(axes[0], datasets):
        for name, s in results[d]["searches"].items():
            c = s["curve"]
            lo = [m - e if e == e else m for m, e in zip(c["best_cv_mean"], c["best_cv_se"])]
            hi = [m + e if e == e else m for m, e in zip(c["best_cv_mean"], c["best_cv_se"])]
            ax.plot(c["trial_epochs"], c["best_cv_mean"], label=name)
            ax.fill_between(c["trial_epochs"], lo, hi, alpha=0.2)
        ax.set(title=f"{d}: best CV so far ({len(results[d]['seeds'])} seeds, mean +- SE)", xlabel="trial-epochs",
               ylabel="best fold-mean CV error")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=sorted(SETUPS), default="digits2v")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="every search once per seed (at least 5 for the figures)")
    ap.add_argument("--epochs", type=int, help="epochs per trial (default: the dataset's setup)")
    ap.add_argument("--lr", type=float, help="Adam lr of the lambda-only searches (default: the dataset's setup)")
    ap.add_argument("--grace", type=int, default=5, help="ASHA grace period (epochs)")
    ap.add_argument("--rf", type=float, default=3.0, help="ASHA reduction factor")
    ap.add_argument("--searches", default=",".join(SEARCHES))
    ap.add_argument("--out", default=str(RESULTS), help="JSON to update (the dataset's key); the PNG goes beside it")
    args = ap.parse_args()
    setup = SETUPS[args.dataset]
    args.epochs, args.lr = args.epochs or setup["epochs"], args.lr or setup["lr"]
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.time()
    runs: dict[str, list[dict]] = {s: [] for s in args.searches.split(",")}
    with tempfile.TemporaryDirectory() as d:
        tmp, mlflow = Path(d), f"sqlite:///{d}/mlruns.db"
        for seed in seeds:
            for search in runs:
                runs[search].append(run_search(args.dataset, search, seed, args, tmp, mlflow))
                print(json.dumps({k: v for k, v in runs[search][-1].items() if k != "curve"}), flush=True)
    grid_spend = len(GRID) * args.epochs
    section = {"seeds": seeds, "setup": setup, "epochs": args.epochs, "lr": args.lr,
               "asha": {"grace": args.grace, "rf": args.rf}, "grid_trial_epochs": grid_spend,
               "searches": {k: summarise(v, args.epochs) for k, v in runs.items()},
               "wall_minutes": round((time.time() - t0) / 60, 1)}
    if set(SEARCHES) <= set(runs):
        section["target_met"] = targets(section["searches"], grid_spend)
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.exists() else {}
    results = {k: v for k, v in previous.items() if k in SETUPS and isinstance(v, dict) and "searches" in v}
    results[args.dataset] = section
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    plot(results, out.with_name("search_curves.png"))
    print(json.dumps({k: section.get(k) for k in ("target_met", "wall_minutes")}, indent=2))


if __name__ == "__main__":
    main()
