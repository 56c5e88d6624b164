"""Dataset registry: name -> spec and loader. ``load_bundle`` is what training calls.

A dataset comes from one of three places:

- a prepared dataset (Parquet shards + manifest): ``DataConfig.dataset`` or ``DataConfig.source`` is
  a local folder or ``s3://bucket/prefix`` holding a manifest. The spec is read from the manifest, so
  a manifest someone else produced for a new dataset works without code changes;
- the in-memory recipes for digits2v and mnist2v (no prepare step needed);
- a converter over the original files (mnist-svhn, mnist3, mst, xrmb, flickr) given ``source``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cmmd_dist.config import DataConfig
from cmmd_dist.datasets.converters import CONVERTER_SPECS, CONVERTERS
from cmmd_dist.datasets.converters.mnist import find_mnist
from cmmd_dist.datasets.loaders import load_digits2v, load_mnist2v
from cmmd_dist.datasets.spec import DatasetBundle, DatasetSpec
from cmmd_dist.storage import find_manifest, is_s3_uri, read_manifest

__all__ = ["SPECS", "LOADERS", "get_spec", "load_bundle", "prepared_uri", "looks_like_uri"]

SPECS: dict[str, DatasetSpec] = dict(CONVERTER_SPECS)

LOADERS: dict[str, Callable[[DataConfig], DatasetBundle]] = {
    "digits2v": lambda c: load_digits2v(seed=c.seed),
    "mnist2v": lambda c: load_mnist2v(source=find_mnist(c.source), seed=c.seed, limit=c.limit),
    **{
        name: (lambda c, name=name: CONVERTERS[name](c.source, c.seed, c.limit).bundle)
        for name in CONVERTERS
        if name not in ("digits2v", "mnist2v")
    },
}


def looks_like_uri(value: str | None) -> bool:
    """True for an ``s3://`` URI or a filesystem path (not a bare dataset name)."""
    return bool(value) and (is_s3_uri(value) or "/" in value or value.startswith("."))


def prepared_uri(cfg: DataConfig) -> str | None:
    """The prepared dataset named by ``cfg`` (dataset or source), or None for a recipe/converter.

    An ``s3://`` URI always counts (a missing manifest is then an error); a local path counts when
    it holds a manifest."""
    for value in (cfg.dataset, cfg.source):
        if not looks_like_uri(value):
            continue
        if is_s3_uri(value) or find_manifest(value) is not None:
            return value
        if value == cfg.dataset:  # a path given as the dataset must be a prepared one
            return value
    return None


def get_spec(name: str) -> DatasetSpec:
    """The spec of a registered dataset, or of the prepared dataset at a path / s3:// URI."""
    if looks_like_uri(name):
        from cmmd_dist.datasets.shards import manifest_spec

        return manifest_spec(read_manifest(name))
    if name not in SPECS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(SPECS)} (or a prepared dataset's path / s3:// URI)")
    return SPECS[name]


def _apply_limit(bundle: DatasetBundle, limit: int | None) -> DatasetBundle:
    if limit is None:
        return bundle
    for name, split in bundle.splits().items():
        if len(split) > limit:
            trimmed = split.take(np.arange(limit))
            if name in ("train", "val", "test"):
                setattr(bundle, name, trimmed)
            else:
                bundle.extra[name] = trimmed
    return bundle


def load_bundle(cfg: DataConfig) -> DatasetBundle:
    """The dataset of ``cfg`` as in-memory splits (``limit`` applied to every split)."""
    uri = prepared_uri(cfg)
    if uri is not None:
        from cmmd_dist.datasets.shards import load_prepared

        bundle = load_prepared(uri)
        if not looks_like_uri(cfg.dataset) and cfg.dataset != bundle.spec.name:
            raise ValueError(f"{uri} holds dataset {bundle.spec.name!r}, but data.dataset is {cfg.dataset!r}")
        return _apply_limit(bundle, cfg.limit)
    if cfg.dataset not in LOADERS:
        raise KeyError(f"unknown dataset {cfg.dataset!r}; known: {sorted(LOADERS)} (or a prepared dataset's path / s3:// URI)")
    return _apply_limit(LOADERS[cfg.dataset](cfg), cfg.limit)
