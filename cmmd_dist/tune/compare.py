"""``cmmd-dist compare``: CMMD against the paper's baselines on one dataset, each model tuned by its own sweep
under the same folds, trial budget and searcher, its champion then retrained and tested with several seeds.

    cmmd-dist compare --dataset digits2v --kinds cmmd,mx_o,vcca,mvae,mmvae --seeds 3 [--preset smoke]

Every ``cmmd-dist tune`` option applies to each sweep alike. Per kind, the dataset's search space (preset
applied) gets the kind as fixed values (``model.kind`` and the baseline's own settings, :data:`KINDS`), loses
the searched values the model does not read (lambda for a baseline, the prior net for VCCA, MVAE and MMVAE, the
encoder and decoder for M-x_o) and gains its own (beta for VCCA and MVAE); that space is written beside the
results (``spaces/<kind>.yaml``) and swept like any space (``tune.run_sweep``: CV trials, ASHA, the champion
retrained on train+val, registered as ``<kind>-<dataset>``). The sweep's retrain is the first seed (``--seed``);
each further seed retrains the same configuration for the same epochs on the same workers (Ray Train).

The table: per kind, the mean and 95% t-interval over seeds of the test error (or mAP) and of the RMSE of the
generated modality, the collapsed fraction of latent dims at 1 nat (Fig. 2) and the latent accuracy; written to
``<out>/<name>/compare.json``, ``compare.md`` and ``collapse.png`` and logged as a parent MLflow run (tag
``kind=compare``) in the dataset's experiment, with the kinds' sweep runs nested under it.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from cmmd_dist.errors import UserError

__all__ = ["KINDS", "COLLAPSE_AT", "ci95", "collapsed_at", "summarise_seeds", "beats_mx_o", "verdict",
           "markdown_table", "kind_space", "run_compare"]

COLLAPSE_AT = 1.0  # nats: the collapsed fraction the table reports
_BETA = {"dist": "loguniform", "low": 0.25, "high": 4.0}
# --kinds name -> (model.* values it fixes, its own searched values)
KINDS: dict[str, tuple[dict, dict]] = {
    "cmmd": ({"kind": "cmmd"}, {}),
    "mx_o": ({"kind": "mx_o"}, {}),
    "vcca": ({"kind": "vcca"}, {"model.beta": _BETA}),
    "mvae": ({"kind": "mvae"}, {"model.beta": _BETA}),
    "mmvae": ({"kind": "mmvae", "mmvae_objective": "elbo", "mmvae_k": 1}, {}),
    "mmvae_elbo": ({"kind": "mmvae", "mmvae_objective": "elbo", "mmvae_k": 1}, {}),
    "mmvae_iwae": ({"kind": "mmvae", "mmvae_objective": "iwae", "mmvae_k": 10}, {}),
}
# searched values a model does not read (prefixes of the dotted paths)
_UNREAD = {"cmmd": (), "mx_o": ("loss.", "model.encoder_", "model.decoder_"),
           "vcca": ("loss.", "model.prior_"), "mvae": ("loss.", "model.prior_"), "mmvae": ("loss.", "model.prior_")}
_FIGURES = ("error", "map", "rmse", "latent_accuracy")


# -- the table's statistics ------------------------------------------------------------------------------------
def ci95(values, bounds: tuple[float, float] | None = None) -> list[float] | None:
    """The 95% t-interval [low, high] of the mean of ``values`` (clipped to ``bounds``: a fraction's interval
    stays within [0, 1]); None below two values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) < 2:
        return None
    from scipy import stats

    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    lo, hi = float(v.mean() - half), float(v.mean() + half)
    return [max(lo, bounds[0]), min(hi, bounds[1])] if bounds else [lo, hi]


def collapsed_at(test: dict, eps: float = COLLAPSE_AT) -> float | None:
    """Fraction of latent dims collapsed at ``eps`` nats (the collapse curve, interpolated); None without a curve."""
    if not test.get("collapse"):
        return None
    return float(np.interp(eps, test["collapse_eps"], test["collapse"]))


def summarise_seeds(tests: dict[int, dict]) -> dict:
    """seed -> test figures (``evaluate.evaluate_model``'s) as one model's entry: ``seeds``, ``per_seed``, and per
    figure (``test_error`` or ``test_map``, ``rmse``, ``latent_accuracy``, ``collapsed_1nat``) ``<f>_mean`` and
    ``<f>_ci95``; the mean collapse curve as ``collapse_eps`` / ``collapse_mean``."""
    per_seed = []
    for seed, test in sorted(tests.items()):
        row = {"seed": seed}
        for k in _FIGURES:
            v = test.get(k)
            if v is not None and math.isfinite(v):
                row[k if k in ("rmse", "latent_accuracy") else f"test_{k}"] = float(v)
        if collapsed_at(test) is not None:
            row["collapsed_1nat"] = collapsed_at(test)
        per_seed.append(row)
    out: dict = {"seeds": [r["seed"] for r in per_seed], "per_seed": per_seed}
    for key in sorted({k for r in per_seed for k in r} - {"seed"}):
        vals = [r[key] for r in per_seed if key in r]
        out[f"{key}_mean"] = float(np.mean(vals))
        out[f"{key}_ci95"] = ci95(vals, None if key == "rmse" else (0.0, 1.0))  # the others are fractions
    curves = [t["collapse"] for t in tests.values() if t.get("collapse")]
    if curves:
        out["collapse_eps"] = next(t["collapse_eps"] for t in tests.values() if t.get("collapse"))
        out["collapse_mean"] = [float(x) for x in np.mean(curves, axis=0)]
    return out


def _headline(entry: dict) -> str:
    return "test_error" if "test_error_mean" in entry else "test_map"


def beats_mx_o(models: dict[str, dict]) -> dict[str, dict]:
    """Per model (not M-x_o): whether its mean test figure beats M-x_o's, and whether the two 95% intervals are
    apart (``clear``). Empty without an ``mx_o`` entry."""
    if "mx_o" not in models:
        return {}
    ref = models["mx_o"]
    key = _headline(ref)
    lower_better = key == "test_error"
    out = {}
    for name, m in models.items():
        if name == "mx_o" or f"{key}_mean" not in m:
            continue
        better = m[f"{key}_mean"] < ref[f"{key}_mean"] if lower_better else m[f"{key}_mean"] > ref[f"{key}_mean"]
        a, b = m.get(f"{key}_ci95"), ref.get(f"{key}_ci95")
        clear = bool(a and b and (a[1] < b[0] if lower_better else a[0] > b[1])) and better
        out[name] = {"beats": bool(better), "clear": clear}
    return out


def verdict(models: dict[str, dict]) -> str:
    """One sentence on the paper's claim "only CMMD beats M-x_o" for these figures."""
    b = beats_mx_o(models)
    if not b:
        return "No M-x_o figures: the claim \"only CMMD beats M-x_o\" is not checked."
    winners = sorted(k for k, v in b.items() if v["beats"])
    clear = sorted(k for k, v in b.items() if v["clear"])
    if winners != ["cmmd"]:
        head = "does not hold here"
    elif clear == ["cmmd"]:
        head = "holds here"
    else:  # the means agree with the claim, the intervals do not separate CMMD from M-x_o
        head = "holds in the means only (CMMD's 95% interval overlaps M-x_o's)"
    head += f": models with a better mean than M-x_o: {winners or 'none'}"
    return (f"\"Only CMMD beats M-x_o\" {head}; with 95% intervals apart from M-x_o's: {clear or 'none'} "
            f"({len(models['mx_o']['seeds'])} seeds).")


def _fmt(entry: dict, key: str, scale: float = 1.0, digits: int = 2) -> str:
    if f"{key}_mean" not in entry:
        return "-"
    text = f"{scale * entry[f'{key}_mean']:.{digits}f}"
    ci = entry.get(f"{key}_ci95")
    return text + (f" [{scale * ci[0]:.{digits}f}, {scale * ci[1]:.{digits}f}]" if ci else "")


def markdown_table(models: dict[str, dict], paper: dict[str, dict] | None = None) -> str:
    """The comparison as a Markdown table (error in %, 95% intervals in brackets); ``paper``: model -> figures."""
    multilabel = any("test_map_mean" in m for m in models.values())
    head = "test mAP" if multilabel else "test error %"
    cols = ["model", "seeds", f"{head} [95% CI]", "RMSE [95% CI]", "collapsed at 1 nat", "latent acc."]
    if paper is not None:
        cols.append("paper")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, m in models.items():
        row = [name, str(len(m["seeds"])),
               _fmt(m, "test_map", 1.0, 4) if multilabel else _fmt(m, "test_error", 100.0, 2),
               _fmt(m, "rmse", 1.0, 4), _fmt(m, "collapsed_1nat", 1.0, 2), _fmt(m, "latent_accuracy", 1.0, 3)]
        if paper is not None:
            row.append((paper.get(name) or {}).get("text", "-"))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def collapse_figure(models: dict[str, dict]):
    """The paper's Fig. 2 from these runs: the mean collapse curve over seeds, one line per model."""
    from cmmd_dist.tracking.plots import collapse_curves

    return collapse_curves({k: (m["collapse_eps"], m["collapse_mean"]) for k, m in models.items() if "collapse_mean" in m})


# -- the sweeps ---------------------------------------------------------------------------------------------------
def kind_space(space, name: str):
    """``space`` (a ``SearchSpace``, preset applied) for the --kinds name ``name``: its model values fixed, the values
    it does not read dropped, its own added. A grid left with nothing to search is a UserError."""
    from cmmd_dist.tune.search_space import Distribution

    if name not in KINDS:
        raise UserError(f"--kinds: unknown model {name!r}; known: {', '.join(KINDS)}")
    fixed_model, own = KINDS[name]
    unread = _UNREAD[fixed_model["kind"]]
    fixed = {s: dict(v) for s, v in space.fixed.items()}
    fixed["model"] = {**fixed.get("model", {}), **fixed_model}
    params = {k: v for k, v in space.params.items() if not k.startswith(unread)}
    if space.searcher == "grid":
        if not params:
            raise UserError(f"--kinds {name}: the space's grid searches only {sorted(space.params)}, which {name} "
                            "does not read; pick a preset with a random or optuna searcher")
    else:
        params.update({k: Distribution(**v) for k, v in own.items()})
    return space.model_copy(update={"fixed": fixed, "params": params, "presets": {}})


def _write_space(space, path: Path) -> Path:
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(space.model_dump(mode="json", exclude_none=True), sort_keys=False))
    return path


def _extra_seed(summary: dict, seed: int, log) -> dict:
    """The sweep's champion retrained with another seed: same configuration, epochs, rows and workers; tested once."""
    from cmmd_dist.config import RunConfig
    from cmmd_dist.train.distributed import retrain_distributed

    run = RunConfig.model_validate(summary["best_run_config"])
    dist = run.distributed.model_copy(update={"name": f"{run.distributed.name}-seed{seed}"})
    run = run.model_copy(update={"train": run.train.model_copy(update={"seed": seed}), "distributed": dist})
    return retrain_distributed(run, summary["retrain_epochs"], log=log)["test"]  # latent_accuracy included


def _nest(tracker, sweep_id: str, parent: str) -> str | None:
    """Put the sweep's MLflow run (tag sweep_id) under the compare run; returns its run id."""
    found = tracker.find_sweep_run(tracker.experiment_of(parent), sweep_id)
    if found is not None:
        tracker.nest_under(found, parent)
    return found


def run_compare(settings, kinds: list[str], seeds: int, log=print, paper: dict | None = None) -> dict:
    """One sweep per kind (``settings``: a ``SweepConfig`` shared by all), ``seeds`` retrains of each champion, the
    table written and logged. Returns the comparison (also ``compare.json``)."""
    from cmmd_dist.tracking.schema import registered_name
    from cmmd_dist.tracking.store import Tracker
    from cmmd_dist.tune.search_space import load_search_space
    from cmmd_dist.tune.sweep import run_sweep

    if seeds < 1:
        raise UserError("--seeds must be at least 1")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds or len(set(kinds)) != len(kinds):
        raise UserError(f"--kinds: give distinct names among {', '.join(KINDS)}; got {kinds}")
    dataset = settings.dataset or "digits2v"
    try:
        base = load_search_space(settings.space or dataset).with_preset(settings.preset)
        spaces = {k: kind_space(base, k) for k in kinds}
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise UserError(err.args[0] if err.args else str(err)) from None
    name = settings.name or f"compare-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = Path(settings.output_dir) / name
    tracker = Tracker(settings.mlflow)
    exp = tracker.experiment(registered_name(dataset, settings.scenario))
    parent = tracker.start_run(exp, name, tags={
        "kind": "compare", "dataset": dataset, "preset": settings.preset or "none", "kinds": ",".join(kinds),
        "seeds": str(seeds)})
    t0 = time.time()
    models, sweeps = {}, {}
    try:
        for kind in kinds:
            path = _write_space(spaces[kind], folder / "spaces" / f"{kind}.yaml")
            kind_settings = settings.model_copy(update={"dataset": dataset, "space": str(path), "preset": None,
                                                        "name": f"{name}-{kind}", "retrain": True})
            log(f"compare: sweep of {kind} ({path})")
            summary = run_sweep(kind_settings, log=log)
            tests = {settings.seed: summary["test"]}
            for s in range(settings.seed + 1, settings.seed + seeds):
                tests[s] = _extra_seed(summary, s, log)
            models[kind] = summarise_seeds(tests)
            sweeps[kind] = {"sweep": summary["sweep"], "summary": summary["summary_path"],
                            "model_uri": summary.get("model_uri"), "best_params": summary["best"]["params"],
                            "best_cv_metric": summary["best"]["best_cv_metric"],
                            "retrain_epochs": summary["retrain_epochs"],
                            "trial_epochs": summary.get("trial_epochs_total"),
                            "search_seconds": summary.get("search_seconds"),
                            "run_id": _nest(tracker, summary["sweep"], parent)}
    except BaseException:
        tracker.end_run(parent, "FAILED")
        raise
    result = {"dataset": dataset, "preset": settings.preset, "kinds": kinds, "seeds": seeds,
              "searcher": base.searcher, "num_trials": settings.num_trials or base.num_trials,
              "folds": base.folds.model_dump(), "wall_s": time.time() - t0, "models": models,
              "beats_mx_o": beats_mx_o(models), "verdict": verdict(models), "sweeps": sweeps}
    _write_and_log(result, folder, tracker, parent, paper)
    result["folder"] = str(folder)
    result["run_id"] = parent
    log(markdown_table(models) + "\n" + result["verdict"] + f"\ncomparison: {folder / 'compare.md'}")
    return result


def _write_and_log(result: dict, folder: Path, tracker, parent: str, paper: dict | None) -> None:
    from cmmd_dist.tracking.plots import save_png

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "compare.json").write_text(json.dumps(result, indent=2, default=str))
    text = (f"# {result['dataset']}: CMMD and the baselines, each tuned by its own sweep\n\n"
            f"Preset {result['preset'] or 'none'}, searcher {result['searcher']}, {result['num_trials']} trials per "
            f"sweep, folds {result['folds']}; each champion retrained on train+val with {result['seeds']} seeds and "
            f"tested once per seed ({result['wall_s'] / 60:.1f} min).\n\n{markdown_table(result['models'], paper)}\n\n"
            f"{result['verdict']}\n")
    (folder / "compare.md").write_text(text)
    artifacts = {"compare.json": folder / "compare.json", "compare.md": folder / "compare.md"}
    if any("collapse_mean" in m for m in result["models"].values()):
        artifacts["collapse.png"] = save_png(collapse_figure(result["models"]), folder / "collapse.png")
    metrics = {f"{kind}.{k}": v for kind, m in result["models"].items() for k, v in m.items()
               if k.endswith("_mean") and isinstance(v, float)}
    tracker.log_final(parent, metrics, artifacts)
    tracker.end_run(parent)
