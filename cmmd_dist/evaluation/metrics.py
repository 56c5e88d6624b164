"""Metrics of DESIGN.md section 1: error / mAP, RMSE of generated modalities, posterior collapse,
latent classification with logistic regression and coherence (``cmmd_dist.evaluation.coherence``), for CMMD and every
baseline (``model.baselines``)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from cmmd_dist.evaluation.coherence import Judges
from cmmd_dist.model import gaussian_kl
from cmmd_dist.datasets.tensors import SplitTensors

__all__ = [
    "COLLAPSE_EPS",
    "predict",
    "classification_metrics",
    "collapse_curve",
    "latent_classification",
    "evaluate_model",
    "coherence_figures",
    "run_coherence",
    "evaluate_chunks",
]

COLLAPSE_EPS = np.round(np.linspace(0.0, 6.0, 25), 3)


@torch.no_grad()
def predict(core: torch.nn.Module, data: SplitTensors, batch_size: int = 1024) -> dict[str, np.ndarray]:
    """Test-time outputs from x_o alone (eval mode), plus the posterior on the full rows and the prior for
    collapse (keys mu_q, logvar_q, mu_p, logvar_p; absent for M-x_o, which has no posterior). ``core`` is
    CMMD or a baseline of ``cmmd_dist.model.baselines``."""
    core.eval()
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(data), batch_size):
        b = data.rows(slice(start, start + batch_size))
        pred = core.predict(b["obs"])
        row = {"z": pred["z"], "logvar_p": pred["logvar"], "probs": pred["probs"]}
        params = core.collapse_params(b)  # every model's interface; None for M-x_o (no posterior)
        if params is not None:
            row.update(zip(("mu_q", "logvar_q", "mu_p", "logvar_p"), params))
        for name, gen in pred["generated"].items():
            row[f"gen:{name}"] = gen
        for k, v in row.items():
            parts.setdefault(k, []).append(v.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def classification_metrics(probs: np.ndarray, y: np.ndarray, multilabel: bool) -> dict[str, float]:
    """Multi-class: {'error'}; multi-label: {'map', 'micro_ap'}. Always a lower-is-better 'metric'."""
    if not multilabel:
        err = float(np.mean(probs.argmax(1) != y))
        return {"error": err, "metric": err}
    from sklearn.metrics import average_precision_score

    has_pos = y.sum(0) > 0
    per_class = [average_precision_score(y[:, j], probs[:, j]) for j in np.flatnonzero(has_pos)]
    m_ap = float(np.mean(per_class)) if per_class else 0.0
    micro = float(average_precision_score(y[:, has_pos], probs[:, has_pos], average="micro")) if per_class else 0.0
    return {"map": m_ap, "micro_ap": micro, "metric": 1.0 - m_ap}


def collapse_curve(mu_q, logvar_q, mu_p, logvar_p, eps_grid=COLLAPSE_EPS, share: float = 0.99) -> list[float]:
    """Fraction of latent dims whose 1-D KL(q||p) is below eps for at least ``share`` of the rows, per eps."""
    kl = gaussian_kl(*(torch.as_tensor(a, dtype=torch.float64) for a in (mu_q, logvar_q, mu_p, logvar_p))).numpy()
    out = []
    for eps in eps_grid:
        below = (kl < eps).mean(axis=0)  # per dim: share of rows within eps
        out.append(float(np.mean(below >= share)))
    return out


def latent_classification(z_train, y_train, z_test, y_test, n_fit: int = 500, seed: int = 0) -> float:
    """Accuracy of scikit-learn's default LogisticRegression fit on ``n_fit`` random training latents."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(z_train), size=min(n_fit, len(z_train)), replace=False)
    with warnings.catch_warnings():  # the protocol's defaults (100 lbfgs iterations) often stop short: expected
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression().fit(z_train[idx], y_train[idx])
    return float(clf.score(z_test, y_test))


def evaluate_model(core: torch.nn.Module, data: SplitTensors, with_collapse: bool = True,
                   latent_train: SplitTensors | None = None, latent_seed: int = 0,
                   coherence: Judges | None = None) -> dict:
    """Classification metric, RMSE per generated modality (and their mean), optional collapse curve (where
    the model has a posterior) and, given ``latent_train`` rows of a multi-class dataset, ``latent_accuracy``:
    logistic regression fit on 500 of their latents, scored on ``data``'s (the MNIST-SVHN-Text protocol).
    Given the dataset's ``coherence`` judges (``coherence.coherence_judges``), the coherence figures of the
    modalities the model generates: ``coherence``, ``coherence_<m>``, ``coherence_ceiling_<m>``.

    ``evaluate_chunks`` over one chunk, ``data``."""
    return evaluate_chunks(core, [data], with_collapse, latent_train, latent_seed, coherence)


def _coherence(core: torch.nn.Module, p: dict[str, np.ndarray], mis: dict, y: np.ndarray,
               judges: Judges) -> dict[str, float]:
    generated = {m.name: p[f"gen:{m.name}"] for m in core.cfg.missing if f"gen:{m.name}" in p}  # M-x_o: none
    return judges.figures(generated, mis, y)


def coherence_figures(core: torch.nn.Module, data: SplitTensors, judges: Judges) -> dict[str, float]:
    """The coherence figures alone (as ``evaluate_model`` reports them) of ``core``'s generations of ``data``."""
    return _coherence(core, predict(core, data), data.mis, data.y.cpu().numpy(), judges)


def run_coherence(core: torch.nn.Module, run, spec, bundle=None):
    """(coherence figures of a trained ``core`` on the test split of ``run``'s dataset, the judges' cache file), or
    ({}, None) where the dataset asks for none. For the paths whose workers do not return rows (Ray Train: ``cmmd-dist
    train --workers N``, a sweep's retrains, compare's seeds): the driver loads the dataset (``bundle``, else
    ``registry.load_bundle``); the judges train once on the TRAIN split, cached under ``run.output_dir``."""
    from cmmd_dist.evaluation.coherence import coherence_judges, coherence_nets

    if not coherence_nets(spec):
        return {}, None
    if bundle is None:
        from cmmd_dist.datasets.registry import load_bundle

        bundle = load_bundle(run.data)
    obs, mis = bundle.spec.scenario_names(run.data.scenario)
    judges = coherence_judges(bundle.spec, SplitTensors.from_split(bundle.train, obs, mis), run.output_dir)
    if judges is None:
        return {}, None
    return coherence_figures(core.cpu().eval(), SplitTensors.from_split(bundle.test, obs, mis), judges), judges.path


def evaluate_chunks(core: torch.nn.Module, chunks: Iterable[SplitTensors], with_collapse: bool = True,
                    latent_train: SplitTensors | None = None, latent_seed: int = 0,
                    coherence: Judges | None = None) -> dict:
    """``evaluate_model``'s figures of rows that come in chunks (streamed evaluation): the inputs are held one
    chunk at a time; the class probabilities (and the latents, for the collapse curve and ``latent_accuracy``)
    are kept for every row, and with ``coherence`` the generated and true missing modalities too.
    ``latent_train``: a few hundred rows, held whole."""
    latent = latent_train is not None and not core.cfg.multilabel
    keep = ["probs"] + (["mu_q", "logvar_q", "mu_p", "logvar_p"] if with_collapse else []) + (["z"] if latent else [])
    kept: dict[str, list[np.ndarray]] = {}
    ys, sq, count, truths = [], {}, 0, []
    for chunk in chunks:
        p = predict(core, chunk)
        y = chunk.y.cpu().numpy()
        for k in keep + ([k for k in p if k.startswith("gen:")] if coherence is not None else []):
            if k in p:
                kept.setdefault(k, []).append(p[k])
        ys.append(y)
        if coherence is not None:
            truths.append(chunk.mis)
        for m in core.cfg.missing:
            if f"gen:{m.name}" in p:
                truth = chunk.mis[m.name].cpu().numpy().reshape(len(y), -1).astype(np.float64)
                err = float(np.sum((p[f"gen:{m.name}"].reshape(len(y), -1) - truth) ** 2))
                sq[m.name] = sq.get(m.name, 0.0) + err / truth.shape[1]
        count += len(y)
    p = {k: np.concatenate(v) for k, v in kept.items()}
    y = np.concatenate(ys)
    out: dict = classification_metrics(p["probs"], y, core.cfg.multilabel)
    rmses = {name: float(np.sqrt(total / max(count, 1))) for name, total in sq.items()}
    out["rmse_by_modality"] = rmses
    out["rmse"] = float(np.mean(list(rmses.values()))) if rmses else float("nan")
    if with_collapse and "mu_q" in p:
        out["collapse_eps"] = [float(e) for e in COLLAPSE_EPS]
        out["collapse"] = collapse_curve(p["mu_q"], p["logvar_q"], p["mu_p"], p["logvar_p"])
    if latent:
        z_train = predict(core, latent_train)["z"]
        out["latent_accuracy"] = latent_classification(z_train, latent_train.y.cpu().numpy(), p["z"], y,
                                                       seed=latent_seed)
    if coherence is not None:
        mis = {k: torch.cat([t[k].cpu() for t in truths]) for k in truths[0]} if len(truths) > 1 else truths[0]
        out.update(_coherence(core, p, mis, y, coherence))
    return out
