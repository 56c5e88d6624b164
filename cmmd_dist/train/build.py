"""From typed run settings and a dataset spec to the model's own config and the loss weights."""

from __future__ import annotations

from cmmd_dist.config import RunConfig
from cmmd_dist.datasets.spec import DatasetSpec
from cmmd_dist.model import BaselineConfig, CMMDConfig, LossWeights, ModalityDef, make_model

__all__ = ["model_config", "baseline_config", "build_model", "loss_weights"]


def model_config(run: RunConfig, spec: DatasetSpec) -> CMMDConfig:
    """CMMDConfig for the run's scenario; likelihood overrides and net kinds are checked against the spec."""
    observed, missing = spec.split_modalities(run.data.scenario)
    names = {m.name for m in spec.modalities}
    for section, mapping in (("data.likelihoods", run.data.likelihoods), ("model.feature_nets", run.model.feature_nets),
                             ("model.decoder_nets", run.model.decoder_nets)):
        unknown = sorted(set(mapping) - names)
        if unknown:
            raise ValueError(f"{section}: unknown modality {unknown} for dataset {spec.name!r} (has {sorted(names)})")
    m = run.model
    return CMMDConfig(
        observed=tuple(ModalityDef(o.name, o.shape, o.likelihood) for o in observed),
        missing=tuple(ModalityDef(x.name, x.shape, run.data.likelihoods.get(x.name, x.likelihood)) for x in missing),
        num_classes=spec.num_classes,
        multilabel=spec.label_kind == "multilabel",
        zdim=m.zdim,
        encoder_hidden=tuple(m.encoder_hidden),
        prior_hidden=tuple(m.prior_hidden),
        decoder_hidden=tuple(m.decoder_hidden),
        classifier_hidden=tuple(m.classifier_hidden),
        dropout=m.dropout,
        decoder_uses_xo=m.decoder_uses_xo,
        learned_variance=m.gaussian_variance == "learned",
        fixed_variance=m.fixed_variance,
        feature_nets=tuple(sorted(m.feature_nets.items())),
        decoder_nets=tuple(sorted(m.decoder_nets.items())),
    )


def baseline_config(run: RunConfig) -> BaselineConfig | None:
    """The baseline's own hyperparameters for ``model.kind``; None for CMMD."""
    m = run.model
    if m.kind == "cmmd":
        return None
    return BaselineConfig(kind=m.kind, beta=m.beta, mvae_subsets=m.mvae_subsets,
                          mmvae_objective=m.mmvae_objective, mmvae_k=m.mmvae_k)


def build_model(run: RunConfig, spec: DatasetSpec):
    """The module of ``model.kind`` (CMMD, VCCA, MVAE, MMVAE or M-x_o) for the run's scenario, on the CPU."""
    return make_model(model_config(run, spec), baseline_config(run))


def loss_weights(run: RunConfig) -> LossWeights:
    l = run.loss
    return LossWeights(lam=l.lam, mmd_weight=l.mmd_weight, cls_weight=l.cls_weight,
                       ce_reduction=l.ce_reduction, n_samples=l.n_samples)
