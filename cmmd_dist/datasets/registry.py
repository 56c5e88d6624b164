"""Dataset registry: name -> spec and loader. ``load_bundle`` is what training calls."""

from __future__ import annotations

from collections.abc import Callable

from cmmd_dist.config import DataConfig
from cmmd_dist.datasets.loaders import DIGITS2V_SPEC, MNIST2V_SPEC, load_digits2v, load_mnist2v
from cmmd_dist.datasets.spec import DatasetBundle, DatasetSpec

__all__ = ["SPECS", "LOADERS", "get_spec", "load_bundle"]

SPECS: dict[str, DatasetSpec] = {"digits2v": DIGITS2V_SPEC, "mnist2v": MNIST2V_SPEC}

LOADERS: dict[str, Callable[[DataConfig], DatasetBundle]] = {
    "digits2v": lambda c: load_digits2v(seed=c.seed),
    "mnist2v": lambda c: load_mnist2v(source=c.source, seed=c.seed, limit=c.limit),
}


def get_spec(name: str) -> DatasetSpec:
    if name not in SPECS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(SPECS)}")
    return SPECS[name]


def load_bundle(cfg: DataConfig) -> DatasetBundle:
    """The dataset named by ``cfg.dataset`` as in-memory splits (``limit`` applied to every split)."""
    if cfg.dataset not in LOADERS:
        raise KeyError(f"unknown dataset {cfg.dataset!r}; known: {sorted(LOADERS)}")
    bundle = LOADERS[cfg.dataset](cfg)
    if cfg.limit is not None:
        import numpy as np

        for name, split in bundle.splits().items():
            if len(split) > cfg.limit:
                trimmed = split.take(np.arange(cfg.limit))
                if name in ("train", "val", "test"):
                    setattr(bundle, name, trimmed)
                else:
                    bundle.extra[name] = trimmed
    return bundle
