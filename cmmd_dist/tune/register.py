"""The champion: the best trial that finished its CV, retrained on train+val with Ray Train and tested once
(and M-x_o under the same budget), then registered in MLflow; the sweep's summary written as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from cmmd_dist.config import RunConfig
from cmmd_dist.tune.results import format_table
from cmmd_dist.tune.search_space import apply_params

if TYPE_CHECKING:
    from cmmd_dist.tune.plan import SweepPlan

__all__ = ["champion_row", "register_champion", "write_summary"]


def champion_row(rows: list[dict]) -> dict | None:
    """The best trial that finished its cross-validation (not pruned, not failed), or None."""
    done = [r for r in rows if not r["stopped_early"] and r["error"] is None and r["best_cv_metric"] is not None]
    return done[0] if done else None


def register_champion(plan, best: dict, summary: dict, recorder, log, workers: int) -> None:
    """Retrain and register ``best`` (``--retrain``, the default), else just end the sweep's MLflow run."""
    from cmmd_dist.tune.sweep_tracking import finish_sweep

    if plan.settings.retrain:
        summary.update(_retrain_best(plan, best, log, workers))
        summary["model_uri"] = finish_sweep(recorder, summary, summary.pop("_retrain"), summary.pop("_bundle"),
                                            summary["best_run_config"])
    else:
        recorder.drain()
        recorder.tracker.end_run(recorder.parent)


def write_summary(plan, summary: dict, rows: list[dict], recorder, log) -> None:
    """Log the trial table and the registered model, and write ``<out>/<sweep>-summary.json``."""
    settings = plan.settings
    summary["tracking_points_lost"] = recorder.lost
    log(format_table(rows, summary.get("test"), summary.get("mx_o_test")))
    if recorder.lost:
        log(f"MLflow {recorder.tracker.uri} was away: {recorder.lost} tracking writes are lost")
    if "model_uri" in summary:
        from cmmd_dist.tracking.store import ui_command

        log(f"registered {summary['model_uri']}\nbrowse the sweep: {ui_command(settings.mlflow)}")
    out = Path(settings.output_dir) / f"{plan.name}-summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({k: v for k, v in summary.items() if not k.startswith("_")}, indent=2, default=str))
    summary["summary_path"] = str(out)
    log(f"summary: {out}")


def _retrain_best(plan: SweepPlan, best: dict, log, workers: int) -> dict:
    """The champion retrained on Ray Train with the trials' workers and GPU setting: its pretraining, then the
    supervised epochs CV chose, on train+val; tested once. Checkpointed under ``<storage>/<sweep>-train/
    retrain-<trial>``: a sweep resumed after its driver died during the retrain continues it there."""
    from cmmd_dist.datasets.registry import load_bundle
    from cmmd_dist.train.distributed import retrain_distributed

    run = RunConfig.model_validate(apply_params(plan.base, best["params"]))
    epochs = max(1, int(best["best_epoch"] or run.train.epochs))
    dist = {"workers": workers, "use_gpu": plan.settings.use_gpu, "name": f"retrain-{best['trial_id']}-e{epochs}",
            "storage": f"{plan.storage.rstrip('/')}/{plan.name}-train"}
    run = run.model_copy(update={"distributed": run.distributed.model_copy(update=dist)})
    log(f"retraining trial {best['trial_id']} on train+val: {run.train.pretrain_epochs} pretraining + {epochs} "
        f"supervised epochs on {workers} Ray Train workers{' (GPU)' if plan.settings.use_gpu else ''}")
    res = retrain_distributed(run, epochs, log=log)  # its test figures include latent_accuracy (multi-class data)
    bundle = load_bundle(run.data)
    out = {"best": best, "best_run_config": run.model_dump(mode="json"), "retrain_epochs": epochs,
           "retrain_pretrain_epochs": run.train.pretrain_epochs, "retrain_workers": res["workers"],
           "retrain_device": res["device"], "retrain_checkpoint": res["checkpoint"],
           "test": res["test"], "_retrain": res, "_bundle": bundle}
    if run.model.kind != "mx_o":
        out["mx_o_test"] = _retrain_mx_o(run, epochs, log)
    return out


def _retrain_mx_o(run: RunConfig, epochs: int, log) -> dict:
    """M-x_o (the champion's prior network and classifier on x_o alone, ``model.kind=mx_o``) under the champion's
    budget: the same train+val rows, supervised epochs, batch size, learning rate, seed and workers; tested once.
    No pretraining: without labels M-x_o has nothing to learn."""
    from cmmd_dist.train.distributed import retrain_distributed

    mx = run.model_copy(update={
        "model": run.model.model_copy(update={"kind": "mx_o"}),
        "train": run.train.model_copy(update={"pretrain_epochs": 0}),
        "distributed": run.distributed.model_copy(update={"name": f"{run.distributed.name}-mx_o"})})
    log(f"retraining M-x_o (x_o alone) on the same rows for {epochs} epochs")
    return retrain_distributed(mx, epochs, log=log)["test"]
