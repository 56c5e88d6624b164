"""The sweep's trial table: one row per trial from Tune's results, and the table printed at the end."""

from __future__ import annotations

from cmmd_dist.tune.search_space import SearchSpace

__all__ = ["trials_table", "format_table"]


def trials_table(result_grid, space: SearchSpace) -> list[dict]:
    """One row per trial that reported, best first by the space's figure (``best_cv_metric``; rows keep that key)."""
    from cmmd_dist.tune.workarounds import COMPLETED_KEY

    rows = []
    for r in result_grid:
        m = r.metrics or {}
        if not m:
            continue
        rows.append({
            "trial_id": m.get("trial_id"), "params": {k: r.config.get(k) for k in space.params},
            "best_cv_metric": m.get(space.figure), "cv_metric": m.get(space.metric), "cv_std": m.get("cv_std"),
            "best_cv_rmse": m.get("best_cv_rmse"), "best_epoch": m.get("best_epoch"), "epochs_run": m.get("epoch"),
            "stopped_early": not m.get(COMPLETED_KEY, 0),
            "error": str(r.error) if r.error else None, "finished_at": m.get("timestamp"),
        })
    sign = 1 if space.mode == "min" else -1
    return sorted(rows, key=lambda row: (row["best_cv_metric"] is None, sign * (row["best_cv_metric"] or 0)))


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _test_figure(test: dict) -> str:
    return f"error {100 * test['error']:.2f}%" if "error" in test else f"mAP {test['map']:.4f}"


def format_table(rows: list[dict], test: dict | None, mx_o_test: dict | None = None, top: int = 10) -> str:
    """The best ``top`` trials, then the champion's test figures and M-x_o's under the same budget."""
    keys = sorted({k for r in rows for k in r["params"]})
    head = ["trial", *[k.split(".")[-1] for k in keys], "cv mean", "+-", "epoch", "ran", "pruned"]
    lines = [" | ".join(head)]
    for r in rows[:top]:
        vals = [f"{r['params'][k]:.4g}" if isinstance(r["params"][k], float) else str(r["params"][k]) for k in keys]
        lines.append(" | ".join([str(r["trial_id"]), *vals, _fmt(r["best_cv_metric"]), _fmt(r["cv_std"]),
                                 str(r["best_epoch"]), str(r["epochs_run"]), "yes" if r["stopped_early"] else "no"]))
    if test:
        lines.append(f"best configuration retrained on train+val, tested once: {_test_figure(test)}, "
                     f"rmse {test['rmse']:.4f}")
    if mx_o_test:
        lines.append(f"M-x_o (classifier on x_o alone), same rows and epochs, tested once: {_test_figure(mx_o_test)}")
    return "\n".join(lines)
