"""PNG figures a person would rather look at than read (matplotlib Figure objects: no display, no pyplot).

Each function returns a ``matplotlib.figure.Figure``; ``save_png(fig, path)`` writes it and
``Tracker.log_final(run, metrics, {"name.png": fig})`` logs it. ``report_figures`` makes every
figure that fits a trained model and its test split in one call:

    figs = report_figures(core, test, history=results["history"], trials=trial_rows,
                    collapse={"best": (eps, curve), "lambda=1": (eps, curve1)})
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global backend, no figure registry to leak into

__all__ = [
    "learning_curves",
    "collapse_curves",
    "lambda_scatter",
    "latent_embedding",
    "generation_grid",
    "top_tags",
    "report_figures",
    "save_png",
]

_LOSS_TERMS = ("train_loss", "train_rec", "train_kl", "train_mmd", "train_ce")


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


_SUPERVISED = ("supervised", "train", "retrain")  # the last two: histories written before the stages were named


def learning_curves(history: list[dict]) -> Figure:
    """Loss terms per epoch, one curve per term and stage (pretraining dashed, on a shaded band; ``epoch``
    counts on across the stages), and the validation metric of the supervised epochs (a CV-chosen model's
    retrain on train+val has loss terms but no validation figure)."""
    stages = {"supervised": [r for r in history if r.get("stage", "supervised") in _SUPERVISED],
              "pretrain": [r for r in history if r.get("stage") == "pretrain"]}
    terms = [k for k in _LOSS_TERMS if any(k in r for rows in stages.values() for r in rows)]
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for i, k in enumerate(terms):
        for stage, style in (("supervised", "-"), ("pretrain", "--")):
            rows = stages[stage]
            if not any(k in r for r in rows):
                continue
            name = k.removeprefix("train_")
            axes[0].plot([r["epoch"] for r in rows], [r.get(k, np.nan) for r in rows], style, marker=".", color=f"C{i}",
                         label=name if stage == "supervised" else f"{name} (pretrain)")
    axes[0].set(xlabel="epoch", ylabel="train loss term", title="loss terms", yscale="symlog")
    rows = stages["supervised"]
    shown = [k for k in ("val_metric", "cv_mean") if any(k in r for r in rows)]
    for k in shown:
        axes[1].plot([r["epoch"] for r in rows], [r.get(k, np.nan) for r in rows], marker=".", label=k)
    axes[1].set(xlabel="epoch", ylabel="lower is better", title="validation")
    if not shown:
        axes[1].text(0.5, 0.5, "no validation rows:\nretrained on train+val", ha="center", va="center",
                     transform=axes[1].transAxes)
    if stages["pretrain"]:
        first, last = (f(r["epoch"] for r in stages["pretrain"]) for f in (min, max))
        for ax in axes:
            ax.axvspan(first - 0.5, last + 0.5, color="0.9", zorder=0, label="pretrain (no label)")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def collapse_curves(curves: dict[str, tuple]) -> Figure:
    """Fraction of collapsed latent dims vs eps (nats), one line per model (the paper's Fig. 2)."""
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    for label, (eps, frac) in curves.items():
        ax.plot(eps, frac, marker=".", label=label)
    ax.set(xlabel="eps (nats)", ylabel="fraction of collapsed dims", ylim=(-0.02, 1.02), title="posterior collapse")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def lambda_scatter(trials: list[dict], metric: str = "cv_mean", lam: str = "lam") -> Figure:
    """lambda against the cross-validated metric, one point per trial (error bars from ``cv_std`` if given).

    A trial with ``pruned`` true (ASHA stopped it) is drawn hollow at the figure of the rung where it stopped:
    it is not comparable with a trial that ran to the end, and only finished trials can be the best."""
    pts = [t for t in trials if t.get(lam) is not None and t.get(metric) is not None]
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    done = [t for t in pts if not t.get("pruned")]
    for group, style, label in ((done, {"fmt": "o", "color": "C0"}, "ran to the end"),
                                ([t for t in pts if t.get("pruned")],
                                 {"fmt": "o", "color": "C1", "mfc": "none"}, "pruned (at its last rung)")):
        if not group:
            continue
        x = np.array([float(t[lam]) for t in group])
        y = np.array([float(t[metric]) for t in group])
        err = np.array([float(t.get("cv_std") or 0.0) for t in group])
        ax.errorbar(x, y, yerr=err if err.any() else None, capsize=3, label=label, **style)
    if done:
        best = min(done, key=lambda t: float(t[metric]))
        ax.plot(float(best[lam]), float(best[metric]), "r*", markersize=14, label=f"best lambda={float(best[lam]):.2f}")
    if pts:
        ax.legend(fontsize=8)
    ax.set(xlabel="lambda", ylabel="CV error, or 1 - mAP (lower is better)", xlim=(-0.05, 1.05),
           title="lambda vs cross-validated metric")
    fig.tight_layout()
    return fig


def _pca2(z: np.ndarray) -> np.ndarray:
    z = z - z.mean(0)
    if z.shape[1] < 2:
        return np.hstack([z, np.zeros((len(z), 1))])
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    return z @ vt[:2].T


def latent_embedding(z: np.ndarray, labels: np.ndarray) -> Figure:
    """2-D PCA of latents coloured by class (multi-hot labels: by their first positive class)."""
    labels = np.asarray(labels)
    cls = labels.argmax(1) if labels.ndim == 2 else labels
    xy = _pca2(np.asarray(z, dtype=np.float64))
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=cls, cmap="tab10" if cls.max() < 10 else "tab20", s=8)
    fig.colorbar(sc, ax=ax, label="class")
    ax.set(xlabel="PC 1", ylabel="PC 2", title="test latents mu_p(x_o)")
    fig.tight_layout()
    return fig


def _as_image(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    img = np.asarray(x, dtype=np.float64).reshape(shape)
    if img.ndim == 3:  # channels first -> last
        img = np.moveaxis(img, 0, -1)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def generation_grid(truth: np.ndarray, generated: np.ndarray, shape: tuple[int, ...], n: int = 8,
                    title: str = "") -> Figure:
    """Top row: the true missing modality; bottom row: generated from x_o alone."""
    n = min(n, len(truth))
    fig = Figure(figsize=(1.3 * n, 2.9))
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        for row, (data, name) in enumerate(((truth, "truth"), (generated, "generated"))):
            ax = axes[row, i]
            ax.imshow(_as_image(data[i], shape), cmap="gray")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(name)
    fig.suptitle(title or "missing modality")
    fig.tight_layout()
    return fig


def top_tags(probs: np.ndarray, truth: np.ndarray, vocab: list[str] | None = None, n: int = 6, k: int = 5) -> Figure:
    """Per example: the k most probable generated tags (bold: in the true tags)."""
    n = min(n, len(probs))
    vocab = vocab or [f"tag{j}" for j in range(probs.shape[1])]
    fig = Figure(figsize=(8, 0.6 + 0.45 * n))
    ax = fig.subplots()
    ax.axis("off")
    for i in range(n):
        top = np.argsort(-probs[i])[:k]
        words = [f"{vocab[j]} ({probs[i, j]:.2f})" + ("*" if truth[i, j] > 0.5 else "") for j in top]
        ax.text(0.0, 1 - (i + 0.5) / n, f"example {i}: " + ", ".join(words), fontsize=9, va="center",
                transform=ax.transAxes)
    ax.set_title("top generated tags (* = true tag)")
    return fig


def report_figures(core, test, history: list[dict] | None = None, trials: list[dict] | None = None,
                   collapse: dict[str, tuple] | None = None, n_points: int = 1000) -> dict[str, Figure]:
    """Every figure that fits: learning curves, collapse, lambda scatter, embedding, images or tags.

    ``test``: SplitTensors of the test split; ``collapse`` extra curves name -> (eps, fractions)
    (the model's own curve is added as "this model")."""
    from cmmd_dist.evaluation.metrics import COLLAPSE_EPS, collapse_curve, predict
    from cmmd_dist.datasets.tensors import SplitTensors

    sub = test.rows(slice(0, n_points))
    p = predict(core, SplitTensors(obs=sub["obs"], mis=sub["mis"], y=sub["y"]))
    y = sub["y"].cpu().numpy()
    figs: dict[str, Figure] = {}
    if history:
        figs["learning_curves.png"] = learning_curves(history)
    own = {"this model": (COLLAPSE_EPS, collapse_curve(p["mu_q"], p["logvar_q"], p["mu_p"], p["logvar_p"]))} if "mu_q" in p else {}
    curves = {**own, **(collapse or {})}  # M-x_o has no posterior
    if curves:
        figs["posterior_collapse.png"] = collapse_curves(curves)
    if trials:
        figs["lambda_vs_cv.png"] = lambda_scatter(trials)
    figs["latent_embedding.png"] = latent_embedding(p["z"], y)
    for m in core.cfg.missing:
        truth = sub["mis"][m.name].cpu().numpy()
        gen = p.get(f"gen:{m.name}")
        if gen is None:  # a model that generates nothing (M-x_o)
            continue
        if m.likelihood != "categorical" and len(m.shape) >= 2:
            figs[f"generated_{m.name}.png"] = generation_grid(truth, gen, m.shape, title=f"{m.name}: truth vs generated")
        elif m.likelihood == "bernoulli":
            figs[f"top_tags_{m.name}.png"] = top_tags(gen.reshape(len(gen), -1), truth.reshape(len(truth), -1))
    return figs
