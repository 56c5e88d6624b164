"""A sweep's plan: every check it can make before it starts, and what its trials share (:func:`plan_sweep`).

Nothing is written to make a plan and no run is started; the identity checks of a resume are
``cmmd_dist.tune.identity``'s, the checks before Ray ``cmmd_dist.tune.preflight``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cmmd_dist.config import RunConfig, SweepConfig
from cmmd_dist.errors import UserError
from cmmd_dist.tune.paths import sweep_paths
from cmmd_dist.tune.preflight import check_before_ray
from cmmd_dist.tune.search_space import SearchSpace, load_search_space

__all__ = ["plan_sweep", "SweepPlan", "SweepFailed", "sweep_base", "sweep_paths"]


def sweep_base(settings: SweepConfig, space: SearchSpace, dataset: str | None = None) -> dict:
    """The run-config values shared by every trial: the space's fixed values plus the sweep's settings."""
    base = {s: dict(v) for s, v in space.fixed.items()}
    data = base.setdefault("data", {})
    data["dataset"] = settings.data or dataset or space.dataset
    _pin_local_source(data)
    if settings.scenario:
        data["scenario"] = settings.scenario
    base.setdefault("train", {}).update(seed=settings.seed, progress=False, baseline=False)
    if settings.bf16:
        base.setdefault("distributed", {})["bf16"] = True
    RunConfig.model_validate(base)  # fail before any trial starts
    return base


def _pin_local_source(data: dict) -> None:
    """Give trials an absolute data source: Tune runs each trial in its own directory, where a relative
    path (or the relative default ``../shared/data/mnist.pkl.gz`` of mnist2v) names nothing."""
    from cmmd_dist.datasets.registry import looks_like_uri
    from cmmd_dist.storage import is_s3_uri

    source = data.get("source")
    if source is None and data["dataset"] == "mnist2v":
        from cmmd_dist.datasets.converters.mnist import find_mnist

        found = find_mnist(None)
        source = str(found) if found.exists() else None
    if source and not is_s3_uri(source):
        data["source"] = str(Path(source).resolve())
    if looks_like_uri(data["dataset"]) and not is_s3_uri(data["dataset"]):
        data["dataset"] = str(Path(data["dataset"]).resolve())



class SweepFailed(UserError):
    """The sweep ran but produced nothing to register (every trial failed, or none finished its CV)."""


@dataclass(frozen=True)
class SweepPlan:
    """Everything a sweep needs that can be checked before it starts: nothing is written to make one."""

    settings: SweepConfig
    space: SearchSpace
    dataset: str  # the name its experiment, summary and registered model carry
    base: dict
    storage: str
    name: str
    root: str  # storage path inside ``fs`` (the storage URI itself for a local folder)
    fs: object  # pyarrow filesystem for s3:// storage (keyless), else None

    @property
    def exp_path(self) -> str:
        return f"{self.root.rstrip('/')}/{self.name}"


def _prepared_name(uri: str) -> str:
    """The dataset name a prepared dataset's manifest gives (a bring-your-own dataset is named by it)."""
    from cmmd_dist.datasets.shards import manifest_spec
    from cmmd_dist.storage import read_manifest

    return manifest_spec(read_manifest(uri)).name


def _space_for(settings: SweepConfig, dataset: str | None) -> SearchSpace:
    if settings.space:
        space = load_search_space(settings.space)
    else:
        try:
            space = load_search_space(dataset or "digits2v")
        except FileNotFoundError as err:
            if settings.data:
                raise UserError(f"no search space for dataset {dataset!r} (named by the manifest of --data "
                                f"{settings.data}): write one and pass --space FILE.yaml (cmmd_dist/search_spaces/digits2v.yaml "
                                "is a template)") from None
            raise UserError(err.args[0]) from None
    return space.with_preset(settings.preset)


def plan_sweep(settings: SweepConfig) -> SweepPlan:
    """Every check a sweep can make before it starts (dataset, search space, preset, storage, resume or
    name clash), as one-line :class:`UserError`; nothing is written, no run is started."""
    from cmmd_dist.storage import check_bucket, is_s3_uri, resolve_without_keys
    from cmmd_dist.tune.identity import check_resumed, resume_identity

    settings = resume_identity(settings)  # a resume keeps its sweep's dataset, data, space, preset, tracking
    try:
        named = _prepared_name(settings.data) if settings.data else None
        if named and settings.dataset and settings.dataset != named:
            raise UserError(f"--data {settings.data} holds dataset {named!r}, but --dataset is {settings.dataset!r}")
        space = _space_for(settings, named or settings.dataset)
        dataset = named or settings.dataset or space.dataset
        base = sweep_base(settings, space, dataset)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise UserError(err.args[0] if err.args else str(err)) from None
    from cmmd_dist.tune.budget import check_budget

    check_budget(settings.max_trial_epochs, settings.workers_per_trial or space.workers_per_trial)
    check_before_ray(settings, space, base)
    storage, name = sweep_paths(settings, dataset)
    if is_s3_uri(storage):
        check_bucket(storage)
    # Tune pickles this filesystem into tuner.pkl and the trials: keyless, each node brings its own credentials
    fs, root = resolve_without_keys(storage) if is_s3_uri(storage) else (None, storage)
    plan = SweepPlan(settings, space, dataset, base, storage, name, root, fs)
    from ray import tune

    exists = tune.Tuner.can_restore(plan.exp_path, storage_filesystem=fs)
    if settings.resume and not exists:
        raise UserError(f"--resume: {plan.exp_path} holds no sweep to resume")
    if not settings.resume and settings.name and exists:
        raise UserError(f"sweep {plan.exp_path} exists: add --resume to continue it, or pick another --name")
    return check_resumed(plan, plan_sweep) if settings.resume else plan
