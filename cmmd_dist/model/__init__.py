"""Pure-torch CMMD: networks, likelihood heads, the module, its loss and the (gatherable) MMD; the baselines.

Imports torch only: no Ray, no MLflow, no file IO.
"""

from cmmd_dist.model.baselines import BASELINE_KINDS, BaselineConfig, MxO
from cmmd_dist.model.cmmd import CMMD, CMMDConfig, ModalityDef
from cmmd_dist.model.likelihoods import (
    BernoulliLikelihood,
    CategoricalLikelihood,
    GaussianLikelihood,
    make_likelihood,
)
from cmmd_dist.model.loss import CMMDOutput, LossWeights, classification_loss, cmmd_loss, gaussian_kl
from cmmd_dist.model.factory import make_model
from cmmd_dist.model.mmd import gaussian_kernel, mmd
from cmmd_dist.model.mmvae import MMVAE
from cmmd_dist.model.mvae import MVAE
from cmmd_dist.model.vcca import VCCA

__all__ = [
    "CMMD", "CMMDConfig", "CMMDOutput", "ModalityDef",
    "BernoulliLikelihood", "CategoricalLikelihood", "GaussianLikelihood", "make_likelihood",
    "LossWeights", "classification_loss", "cmmd_loss", "gaussian_kl", "gaussian_kernel", "mmd",
    "BASELINE_KINDS", "BaselineConfig", "MxO", "VCCA", "MVAE", "MMVAE", "make_model",
]
