"""CMMD, M-x_o, VCCA, MVAE and MMVAE (ELBO, IWAE) on two-view MNIST over several seeds: the paper's comparison.

Writes benchmarks/results/mnist2v_models.json and .md and a Fig.-2-like PNG (mnist2v_models_collapse.png).

    .venv/bin/python benchmarks/mnist2v_models.py --budget small --no-search           # minutes on a CPU, untuned
    .venv/bin/python benchmarks/mnist2v_models.py --preset compare                     # each model tuned by a sweep
    .venv/bin/python benchmarks/mnist2v_models.py --budget large --no-search --device cuda

Two modes, the same budget for every model:
- default: ``cmmd_dist.tune.compare.run_compare`` - one platform sweep per model (Ray Tune, Optuna, ASHA, k-fold CV,
  MLflow) at the same trial budget, each champion retrained on train+val with ``--seeds`` seeds, tested once each.
- ``--no-search``: no Ray, no Optuna, no MLflow. Each model trains with FIXED hyperparameters (:data:`FIXED`,
  untuned: CMMD's lambda is the paper's CV choice 0.4, beta = 1, the IWAE's K = 10) in one process
  (``train.single.fit``: early stopping on the validation split, tested once), per seed. ``--device cuda``
  trains on a GPU.

The searched mode's rows, nets, epochs, folds and trials are the search space's preset (``--preset``; ``compare``
in cmmd_dist/search_spaces/mnist2v.yaml is the 2-core CPU budget: 4000 rows per split, 256-wide nets, 15 epochs, 2 folds,
6 trials searching the learning rate and the model's own weight). ``--no-search`` budgets (:data:`BUDGETS`): ``small`` keeps the first rows of each split and small nets (a few CPU minutes with
--no-search); ``large`` is the whole dataset with the mnist2v-cpu widths. Output JSON shape:
``{"models": {"cmmd": {...}, "mx_o": ..., "vcca": ..., "mvae": ..., "mmvae_elbo": ..., "mmvae_iwae": ...}}``, each
with ``seeds``, ``per_seed`` figures, ``<figure>_mean``, ``test_error_ci95`` / ``rmse_ci95`` ([low, high]),
``collapsed_1nat_mean`` and the paper's figure (``paper``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from cmmd_dist.tune.compare import KINDS, beats_mx_o, collapse_figure, markdown_table, summarise_seeds, verdict

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("cmmd", "mx_o", "vcca", "mvae", "mmvae_elbo", "mmvae_iwae")
# --no-search: each model's own values, untuned (the networks come from the budget)
FIXED = {"cmmd": {"loss": {"lam": 0.4}}, "mx_o": {}, "vcca": {"model": {"beta": 1.0}},
         "mvae": {"model": {"beta": 1.0}}, "mmvae_elbo": {}, "mmvae_iwae": {}}
BUDGETS = {
    "small": {"data": {"limit": 3000},
              "model": {"zdim": 20, "encoder_hidden": [256, 256], "prior_hidden": [256, 256],
                        "decoder_hidden": [256, 256], "classifier_hidden": [50, 50]},
              "train": {"epochs": 8, "patience": 8, "batch_size": 128, "lr": 0.001},
              "preset": "smoke"},
    "large": {"data": {"limit": None},
              "model": {"zdim": 50, "encoder_hidden": [1024, 1024], "prior_hidden": [1024, 1024],
                        "decoder_hidden": [512, 512], "classifier_hidden": [50, 50]},
              "train": {"epochs": 60, "patience": 10, "batch_size": 128, "lr": 0.001},
              "preset": None},
}
# what the paper's text gives for these models (Table 2: MNIST two-view error; Fig. 2: collapse, on XRMB)
PAPER = {
    "cmmd": {"test_error": 0.024, "text": "2.4% (Table 2); no dim collapsed within 6 nats (Fig. 2, XRMB)"},
    "mx_o": {"test_error": None, "text": "in Table 2, figure lost in our copy of the text; beaten only by CMMD (XRMB)"},
    "vcca": {"test_error": None, "text": "no dim collapsed within 6 nats (Fig. 2, XRMB); VCCA-private 2.4% (Table 2)"},
    "mvae": {"test_error": None, "text": "no MNIST figure; needs > 5 nats before dims collapse (Fig. 2, XRMB)"},
    "mmvae_elbo": {"test_error": None, "text": "no MNIST figure; most dims collapsed near 0 nats (Fig. 2, XRMB)"},
    "mmvae_iwae": {"test_error": None, "text": "no MNIST figure; most dims collapsed near 0 nats (Fig. 2, XRMB)"},
}


SMALL_NOTE = ("\n\nThe small budget is a check that the script runs end to end in minutes: no model is near its "
              "converged figure after a few epochs on a few thousand rows, so these figures say nothing about the "
              "paper's claims; `--budget large` is the comparison.")


def run_config(name: str, budget: str, seed: int, device: str, threads: int | None):
    """The RunConfig of model ``name`` (a compare.KINDS name) at ``budget``, seed ``seed``: fixed, untuned values."""
    from cmmd_dist.config import RunConfig

    b = BUDGETS[budget]
    cfg = {"data": {"dataset": "mnist2v", **b["data"]},
           "model": {**b["model"], "dropout": 0.2, **KINDS[name][0], **FIXED[name].get("model", {})},
           "loss": {"lam": 0.4, **FIXED[name].get("loss", {})},
           "train": {**b["train"], "seed": seed, "device": device, "threads": threads, "baseline": False,
                     "progress": False}}
    return RunConfig.model_validate(cfg)


_BUNDLES: dict = {}


def fit_one(name: str, budget: str, seed: int, device: str, threads: int | None) -> dict:
    """One model, one seed, in this process: early-stopped on validation, tested once."""
    from cmmd_dist.datasets.registry import load_bundle
    from cmmd_dist.train.single import fit

    run = run_config(name, budget, seed, device, threads)
    key = (run.data.limit, run.data.seed)
    if key not in _BUNDLES:  # the dataset is the same for every model and seed (data.seed fixed)
        _BUNDLES[key] = load_bundle(run.data)
    t0 = time.time()
    res = fit(run, _BUNDLES[key], log=lambda *a: None)
    return {**res["test"], "best_epoch": res["best_epoch"], "epochs_run": res["epochs_run"],
            "seconds": time.time() - t0}


def no_search(args) -> dict:
    """Every model and seed with fixed hyperparameters; no Ray, no Optuna, no MLflow."""
    models = {}
    for name in args.models:
        tests = {}
        for seed in range(args.seeds):
            tests[seed] = fit_one(name, args.budget, seed, args.device, args.threads)
            t = tests[seed]
            print(f"{name} seed {seed}: error {100 * t['error']:.2f}%, rmse {t['rmse']:.4f}, "
                  f"{t['epochs_run']} epochs, {t['seconds']:.0f} s", flush=True)
        models[name] = summarise_seeds(tests)
        models[name]["seconds"] = [tests[s]["seconds"] for s in sorted(tests)]
        models[name]["best_epoch"] = [tests[s]["best_epoch"] for s in sorted(tests)]
    return models


def search(args) -> dict:
    """Each model tuned by its own platform sweep (same folds, trials, searcher), then ``--seeds`` retrains."""
    from cmmd_dist.tune.compare import run_compare
    from cmmd_dist.config import SweepConfig

    preset = args.preset or BUDGETS[args.budget]["preset"]
    space = None
    if args.epochs:  # the preset's epochs overridden: a copy of the space, beside the sweeps' summaries
        space = _space_copy(preset, args.epochs, Path(args.out))
    settings = SweepConfig(dataset="mnist2v", space=space, preset=preset, num_trials=args.num_trials,
                           output_dir=args.out, use_gpu=args.device.startswith("cuda"), mlflow=args.mlflow)
    result = run_compare(settings, list(args.models), args.seeds)
    return _with_search(result)


def _space(preset: str, epochs: int | None = None):
    """The mnist2v search space; with ``epochs``, ``preset``'s epochs set to it (its patience scaled alike)."""
    from cmmd_dist.tune.search_space import load_search_space

    space = load_search_space("mnist2v")
    if epochs:
        train = space.presets[preset].fixed.setdefault("train", {})
        old = train.get("epochs") or space.fixed.get("train", {}).get("epochs")
        train["patience"] = max(1, round((train.get("patience") or epochs) * epochs / old))
        train["epochs"] = epochs
    return space


def _space_copy(preset: str, epochs: int, folder: Path) -> str:
    """``_space(preset, epochs)`` written to ``folder`` (the sweeps read their space from a file)."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"mnist2v-{preset}-e{epochs}.yaml"
    path.write_text(yaml.safe_dump(_space(preset, epochs).model_dump(mode="json", exclude_none=True), sort_keys=False))
    return str(path.resolve())


def _with_search(result: dict) -> dict:
    """A comparison's models, each with what its sweep chose (``search``: best params, CV figure, retrain epochs)."""
    keep = ("best_params", "best_cv_metric", "retrain_epochs", "trial_epochs", "search_seconds", "sweep")
    out = {}
    for k, m in result["models"].items():
        sweep = dict(result.get("sweeps", {}).get(k) or {})
        if sweep and sweep.get("trial_epochs") is None and Path(sweep.get("summary") or "").is_file():
            summary = json.loads(Path(sweep["summary"]).read_text())  # a compare.json written before they were kept
            sweep.update(trial_epochs=summary.get("trial_epochs_total"), search_seconds=summary.get("search_seconds"))
        out[k] = {**m, "search": {f: sweep.get(f) for f in keep}} if sweep else m
    return out


def _preset_budget(preset: str, epochs: int | None = None) -> tuple[dict, dict]:
    """The rows, nets and epochs (BUDGETS' shape) of the mnist2v space's ``preset`` (``epochs``: as ``_space``), and
    the search's settings."""
    space = _space(preset, epochs).with_preset(preset)
    f = space.fixed
    budget = {"data": {"limit": f.get("data", {}).get("limit")},
              "model": {k: f["model"].get(k) for k in ("zdim", "encoder_hidden", "prior_hidden", "decoder_hidden",
                                                       "classifier_hidden")},
              "train": {k: f["train"].get(k) for k in ("epochs", "patience", "batch_size", "lr")}}
    setting = {"preset": preset, "budget": budget, "searcher": space.searcher, "num_trials": space.num_trials,
               "folds": space.folds.model_dump(), "asha": space.asha.model_dump(), "searched": sorted(space.params),
               "space": space.model_dump(mode="json", exclude_none=True)}
    return budget, setting


def _chosen_table(models: dict) -> str:
    """What each model's sweep chose (searched mode), as markdown; empty without searches."""
    rows = []
    for name, m in models.items():
        if "search" in m:
            chosen = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in sorted((m["search"]["best_params"] or {}).items()))
            rows.append(f"| {name} | {chosen} | {m['search']['best_cv_metric']:.4f} | {m['search']['trial_epochs']} | "
                        f"{m['search']['retrain_epochs']} |")
    if not rows:
        return ""
    return ("\nWhat each sweep chose (CV error of the champion; trial-epochs the search spent, ASHA stopping trials "
            "early; epochs of the champion's retrain):\n\n"
            "| model | chosen | CV error | trial-epochs | retrain epochs |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def write(models: dict, args, wall_s: float) -> None:
    from cmmd_dist.tracking.plots import save_png

    for name, m in models.items():
        m["paper"] = PAPER.get(name)
    untuned = args.no_search
    preset = args.preset or BUDGETS[args.budget]["preset"]
    if untuned:
        how = "UNTUNED: fixed hyperparameters per model (no search), early stopping on the validation split"
        b = BUDGETS[args.budget]
        setting = {"budget": b, "fixed": FIXED}
    else:
        b, setting = _preset_budget(preset, args.epochs)
        how = (f"TUNED: each model by its own platform sweep (preset `{preset}`: {setting['searcher']} searcher with "
               f"ASHA, {setting['num_trials']} trials, {setting['folds']['k']}-fold CV on train+val, searching "
               f"{', '.join(setting['searched'])} and beta for VCCA / MVAE), the champion retrained on train+val per "
               "seed and tested once")
    result = {"budget": args.budget, "mode": "no-search (untuned)" if untuned else "search", "seeds": args.seeds,
              "device": args.device, "machine": f"{platform.machine()}, torch {torch.__version__}",
              "wall_s": wall_s, "settings": setting,
              "models": models, "beats_mx_o": beats_mx_o(models), "verdict": verdict(models)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    fig_path = save_png(collapse_figure(models), RESULTS / f"{args.name}_collapse.png")
    text = f"""# Two-view MNIST: CMMD and the paper's baselines, {args.seeds} seeds

Produced by `benchmarks/mnist2v_models.py {'--budget ' + args.budget + ' --no-search' if untuned else '--preset ' + preset}{f' --epochs {args.epochs}' if args.epochs else ''}` in
{wall_s / 60:.1f} min on {args.device} ({result['machine']}).

**{how}.** The same for every model: rows per split {b['data']['limit'] or 'all'}, latent
{b['model']['zdim']}, encoder {b['model']['encoder_hidden']}, prior {b['model']['prior_hidden']}, decoder
{b['model']['decoder_hidden']}, classifier {b['model']['classifier_hidden']}; up to {b['train']['epochs']} epochs
(patience {b['train']['patience']}), batch {b['train']['batch_size']}, Adam lr {b['train']['lr'] or 'searched'}.
{'CMMD lambda 0.4; VCCA / MVAE beta 1; ' if untuned else ''}MMVAE ELBO K 1, IWAE K 10.{SMALL_NOTE if untuned and args.budget == 'small' else ''}
Intervals: 95% t-intervals over seeds. Collapsed: fraction of latent dims whose KL to the prior stays below
1 nat for 99% of test rows (M-x_o has no posterior). The baselines' classifier reads their latent mean
(trained alongside, on the detached latent); latent accuracy is logistic regression on 500 training latents.

{markdown_table(models, PAPER)}

{result['verdict']}
{_chosen_table(models)}
The paper's figures: Table 2 gives CMMD 2.4% on this dataset; the baselines' MNIST figures are not in the copy
of the paper we have, and the collapse pattern it reports (Fig. 2) is on XRMB. Figure: `{fig_path.name}`
(mean collapse curve over seeds per model, shaped like the paper's Fig. 2, left).
"""
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    p.add_argument("--no-search", action="store_true", help="fixed hyperparameters per model: no Ray/Optuna/MLflow")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--device", default="cpu", help="torch device (cuda: a GPU)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (--no-search)")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, among {', '.join(MODELS)}")
    p.add_argument("--preset", help="search: the mnist2v space's preset (default: smoke for small, none for large)")
    p.add_argument("--num-trials", type=int, help="search: trials per sweep (default: the preset's)")
    p.add_argument("--mlflow", help="search: tracking URI")
    p.add_argument("--out", default="runs", help="search: folder for sweep summaries")
    p.add_argument("--epochs", type=int, help="override the budget's (or the preset's) epochs, the same for every "
                                              "model; the preset's patience scales alike")
    p.add_argument("--name", default="mnist2v_models", help="file stem of the results (.json, .md, _collapse.png)")
    p.add_argument("--part", help="write only this process's models (JSON) to this path: models run in parallel "
                                  "processes (e.g. one per model on one GPU), joined by --merge")
    p.add_argument("--merge", help="comma-separated --part files (or a sweep's compare.json): join them and write "
                                   "the results")
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    if args.seeds < 2:
        p.error("--seeds: at least 2 for an interval (3 for the issue's table)")
    if args.epochs:
        BUDGETS[args.budget]["train"]["epochs"] = args.epochs
    if args.merge:
        parts = [json.loads(Path(f).read_text()) for f in args.merge.split(",")]
        models = {k: v for part in parts for k, v in _with_search(part).items()}  # a part, or a compare.json
        args.models = [m for m in MODELS if m in models]
        write({m: models[m] for m in args.models}, args, max(part["wall_s"] for part in parts))
        return 0
    t0 = time.time()
    models = no_search(args) if args.no_search else search(args)
    if args.part:
        Path(args.part).write_text(json.dumps({"models": models, "wall_s": time.time() - t0}, indent=2))
        return 0
    write(models, args, time.time() - t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
