"""Dataset registry: name -> spec and loader. ``load_bundle`` is what training calls.

A dataset comes from exactly one of three places, never a silent substitute for another:

- a prepared dataset (Parquet shards + manifest): ``DataConfig.prepared`` (``--data``), or
  ``DataConfig.dataset`` given as a local folder or ``s3://bucket/prefix``. Its manifest must exist (a
  folder without one is an error naming it), and its spec is read from the manifest, so a manifest someone
  else produced for a new dataset works without code changes. ``dataset``, when a name, must match it;
- the in-memory recipes for digits2v and mnist2v (no prepare step needed);
- a converter over the original files (mnist-svhn, mnist3, mst, xrmb, flickr) given ``source``. A given
  source that does not exist (or holds no such files) is an error; only no source means the default.

:func:`dataset_name` is the dataset's name wherever a run, experiment or model is named.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cmmd_dist.config import DataConfig
from cmmd_dist.datasets.converters import CONVERTER_SPECS, CONVERTERS
from cmmd_dist.datasets.converters.mnist import find_mnist, refuse_source
from cmmd_dist.datasets.loaders import load_digits2v, load_mnist2v
from cmmd_dist.datasets.spec import DatasetBundle, DatasetSpec
from cmmd_dist.errors import UserError
from cmmd_dist.storage import S3Settings, is_s3_uri, read_manifest

__all__ = ["SPECS", "LOADERS", "get_spec", "load_bundle", "prepared_uri", "looks_like_uri", "dataset_name",
           "checked_manifest"]

SPECS: dict[str, DatasetSpec] = dict(CONVERTER_SPECS)


def _digits2v(c: DataConfig) -> DatasetBundle:
    refuse_source(c.source, "digits2v")
    return load_digits2v(seed=c.seed)


LOADERS: dict[str, Callable[[DataConfig], DatasetBundle]] = {
    "digits2v": _digits2v,
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
    """The prepared dataset of ``cfg`` (``prepared``, or ``dataset`` given as a path / URI), or None for a
    recipe or converter. Whatever it names must hold a manifest: loading it fails otherwise."""
    if cfg.prepared:
        return cfg.prepared
    if looks_like_uri(cfg.dataset):
        return cfg.dataset
    return None


def dataset_name(cfg: DataConfig, settings: S3Settings | None = None) -> str:
    """The dataset's name: its manifest's spec name for a prepared dataset (a bring-your-own dataset is
    named by its manifest), else the registered name. Reads the manifest, not the shards."""
    uri = prepared_uri(cfg)
    if uri is None:
        return cfg.dataset
    from cmmd_dist.datasets.shards import manifest_spec

    return manifest_spec(read_manifest(uri, settings)).name


def checked_manifest(cfg: DataConfig, settings: S3Settings | None = None) -> tuple[dict, DatasetSpec]:
    """(manifest, spec) of ``cfg``'s prepared dataset, whose name must be ``cfg.dataset`` when that is a name."""
    from cmmd_dist.datasets.shards import manifest_spec

    uri = prepared_uri(cfg)
    manifest = read_manifest(uri, settings)
    spec = manifest_spec(manifest)
    if not looks_like_uri(cfg.dataset) and cfg.dataset != spec.name:
        raise UserError(f"{uri} holds dataset {spec.name!r}, but --dataset / data.dataset is {cfg.dataset!r}")
    return manifest, spec


def get_spec(name: str) -> DatasetSpec:
    """The spec of a registered dataset, or of the prepared dataset at a path / s3:// URI."""
    if looks_like_uri(name):
        from cmmd_dist.datasets.shards import manifest_spec

        return manifest_spec(read_manifest(name))
    if name not in SPECS:
        raise UserError(f"unknown dataset {name!r}; known: {sorted(SPECS)} (or a prepared dataset's path / s3:// URI)")
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
            raise UserError(f"{uri} holds dataset {bundle.spec.name!r}, but data.dataset is {cfg.dataset!r}")
        return _apply_limit(bundle, cfg.limit)
    if cfg.dataset not in LOADERS:
        raise UserError(f"unknown dataset {cfg.dataset!r}; known: {sorted(LOADERS)} "
                        "(or a prepared dataset: --data / data.prepared)")
    return _apply_limit(LOADERS[cfg.dataset](cfg), cfg.limit)
