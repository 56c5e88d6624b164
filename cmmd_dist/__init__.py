"""cmmd_dist: train CMMD (conditional-prior multimodal model) at cluster scale and search its hyperparameters."""

__version__ = "0.1.0"
__all__ = ["__version__"]
