"""Declarative search spaces (``cmmd_dist/search_spaces/<dataset>.yaml``, package data) parsed into typed objects.

A space names distributions over dotted run-config paths (``loss.lam``, ``train.lr``, ``model.zdim``)
plus two derived kinds per network, ``model.<net>_depth`` and ``model.<net>_width``, which become
``model.<net>_hidden = [width] * depth``. ``fixed`` holds run-config values shared by every trial;
``presets`` (e.g. ``paper``, ``smoke``) override parts of the space.

Loading checks every value a trial could get against ``RunConfig``: each choice / grid value and both bounds
of every range, with the space's (or the preset's) fixed values, so that a ``zdim: 0`` or a ``dropout: .nan``
is refused when the space is read, not in every trial of a sweep.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cmmd_dist.config import Folds, RunConfig

__all__ = ["Distribution", "SearchSpace", "Preset", "load_search_space", "packaged_spaces", "apply_params", "NETS"]

NETS = ("encoder", "prior", "decoder", "classifier")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Distribution(_Strict):
    """One searched value: uniform / loguniform / int (inclusive bounds) / choice / grid."""

    dist: Literal["uniform", "loguniform", "int", "choice", "grid"] = Field(description="distribution kind")
    low: float | None = Field(None, description="lower bound (uniform, loguniform, int)")
    high: float | None = Field(None, description="upper bound (uniform, loguniform, int), inclusive for int")
    values: list[Any] | None = Field(None, description="options (choice, grid)")

    @model_validator(mode="after")
    def _check(self) -> "Distribution":
        if self.dist in ("choice", "grid"):
            if not self.values:
                raise ValueError(f"{self.dist}: 'values' must be a non-empty list")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"{self.dist}: needs both 'low' and 'high'")
            if self.low > self.high or (self.low == self.high and self.dist != "int"):
                raise ValueError(f"{self.dist}: low ({self.low}) must be below high ({self.high})")
            if self.dist == "loguniform" and self.low <= 0:
                raise ValueError(f"loguniform: low must be > 0, got {self.low}")
        return self

    def bounds(self) -> list[float]:
        return list(self.values) if self.dist in ("choice", "grid") else [self.low, self.high]  # type: ignore[list-item]


class Asha(_Strict):
    """ASHA's rungs: a trial may be stopped after ``grace_period`` epochs, then at every ``reduction_factor``-fold rung."""

    grace_period: int = Field(1, ge=1, description="epochs before a trial may be stopped (past the early plateau)")
    reduction_factor: float = Field(2.0, gt=1, description="keep the best 1/reduction_factor of the trials at each rung")


class Preset(_Strict):
    """Overrides of a named preset: its own fixed values, params (replacing same-named ones), folds, searcher."""

    description: str = ""
    fixed: dict[str, dict[str, Any]] = Field(default_factory=dict)
    params: dict[str, Distribution] = Field(default_factory=dict)
    replace_params: bool = Field(False, description="params replace the space's params instead of updating them")
    folds: Folds | None = None
    searcher: Literal["optuna", "random", "grid"] | None = None
    num_trials: int | None = Field(None, ge=1)
    workers_per_trial: int | None = Field(None, ge=1)
    asha: Asha | None = None


class SearchSpace(_Strict):
    """What a sweep searches for one dataset."""

    dataset: str = Field(description="dataset name (registry) this space is for")
    metric: Literal["cv_metric"] = Field(
        "cv_metric", description="the fold-mean validation figure each epoch reports (error, or 1 - mAP); every "
        "trial is judged by its best value so far (best_cv_metric): the searcher, ASHA and the final selection alike")
    mode: Literal["min"] = Field("min", description="the CV metric is lower-is-better (error, 1 - mAP)")
    folds: Folds = Field(default_factory=Folds)
    fixed: dict[str, dict[str, Any]] = Field(default_factory=dict, description="run-config values shared by every trial")
    params: dict[str, Distribution] = Field(default_factory=dict, description="dotted run-config path -> distribution")
    presets: dict[str, Preset] = Field(default_factory=dict)
    num_trials: int = Field(20, ge=1)
    workers_per_trial: int = Field(1, ge=1)
    searcher: Literal["optuna", "random", "grid"] = Field(
        "optuna", description="optuna: TPE; random: uniform samples (told to Optuna alike); grid: the grid values")
    asha: Asha = Field(default_factory=Asha, description="the pruning schedule (sweep options override it)")

    @model_validator(mode="after")
    def _check(self) -> "SearchSpace":
        for name, p in [("params", self.params)] + [(f"presets.{k}.params", v.params) for k, v in self.presets.items()]:
            for key, dist in p.items():
                _check_param(f"{name}.{key}", key, dist)
        for key, section in [("fixed", self.fixed)] + [(f"presets.{k}.fixed", v.fixed) for k, v in self.presets.items()]:
            _check_fixed(key, section)
        _check_values("params", self.params, self.fixed)
        for k in self.presets:
            preset = self.with_preset(k)
            _check_values(f"presets.{k}.params", {n: preset.params[n] for n in self.presets[k].params}, preset.fixed)
            _check_values("params", {n: d for n, d in preset.params.items() if n not in self.presets[k].params},
                          preset.fixed, f" (with preset {k!r})")
        return self

    def with_preset(self, name: str | None) -> "SearchSpace":
        """The space with a preset applied (or itself for None)."""
        if name is None:
            return self
        if name not in self.presets:
            raise KeyError(f"search space for {self.dataset!r} has no preset {name!r}; it has {sorted(self.presets)}")
        p = self.presets[name]
        fixed = {s: dict(v) for s, v in self.fixed.items()}
        for section, values in p.fixed.items():
            fixed.setdefault(section, {}).update(values)
        params = dict(p.params) if p.replace_params else {**self.params, **p.params}
        return self.model_copy(update={
            "fixed": fixed, "params": params, "folds": p.folds or self.folds, "presets": {},
            "searcher": p.searcher or self.searcher, "num_trials": p.num_trials or self.num_trials,
            "workers_per_trial": p.workers_per_trial or self.workers_per_trial, "asha": p.asha or self.asha,
        })

    @property
    def figure(self) -> str:
        """The per-trial figure that ranks trials: the best fold-mean CV metric so far (with its ``best_epoch``)."""
        return f"best_{self.metric}"


def _check_param(where: str, key: str, dist: Distribution) -> None:
    section, _, field = key.partition(".")
    if section not in ("data", "model", "loss", "train") or not field:
        raise ValueError(f"{where}: not a run-config path (use model.*, loss.*, train.*)")
    derived = section == "model" and any(field in (f"{n}_depth", f"{n}_width") for n in NETS)
    model_cls = RunConfig.model_fields[section].annotation
    if not derived and field not in model_cls.model_fields:  # type: ignore[union-attr]
        raise ValueError(f"{where}: {section} has no field {field!r}")
    if key == "loss.lam" and any(isinstance(v, (int, float)) and not 0 <= v <= 1 for v in dist.bounds()):
        raise ValueError(f"{where}: lambda must lie in [0, 1], got {dist.bounds()}")


def _check_fixed(where: str, fixed: dict[str, dict[str, Any]]) -> None:
    try:
        RunConfig.model_validate({s: v for s, v in fixed.items()})
    except ValidationError as e:
        raise ValueError(f"{where}: {e}") from None


def _check_values(where: str, params: dict[str, Distribution], fixed: dict, context: str = "") -> None:
    """Every choice / grid value and both bounds of every range, one at a time over ``fixed``, as RunConfig takes
    them: the first refused one is a ValueError naming the param, the value and the reason."""
    from cmmd_dist.errors import describe_validation

    for key, dist in params.items():
        values = dist.bounds() if dist.dist != "int" else [int(dist.low), int(dist.high)]  # type: ignore[arg-type]
        for value in values:
            try:
                RunConfig.model_validate(apply_params(fixed, {key: value}))
            except (TypeError, ValueError) as e:  # ValidationError is a ValueError; int("big") of a depth too
                reason = describe_validation(e) if isinstance(e, ValidationError) else str(e)
                raise ValueError(f"{where}.{key}: value {value!r} is refused{context}: {reason}") from None


def apply_params(base: dict, params: dict[str, Any]) -> dict:
    """Nested run-config overrides from flat sampled params (derived depth/width folded into *_hidden)."""
    out = {s: dict(v) for s, v in base.items()}
    nets: dict[str, dict[str, int]] = {}
    for key, value in params.items():
        section, _, field = key.partition(".")
        for n in NETS:
            if field in (f"{n}_depth", f"{n}_width"):
                nets.setdefault(n, {})[field.rsplit("_", 1)[1]] = int(value)
                break
        else:
            out.setdefault(section, {})[field] = value
    for n, dw in nets.items():
        current = out.get("model", {}).get(f"{n}_hidden") or [64]
        depth, width = dw.get("depth", len(current)), dw.get("width", current[0] if current else 64)
        out.setdefault("model", {})[f"{n}_hidden"] = [width] * depth
    return out


def packaged_spaces() -> Path:
    """The folder of the search spaces that ship inside the package (``cmmd_dist/search_spaces``)."""
    from importlib import resources

    return Path(str(resources.files("cmmd_dist") / "search_spaces"))


def load_search_space(path_or_dataset: str | Path) -> SearchSpace:
    """A SearchSpace from a YAML path, or the packaged ``cmmd_dist/search_spaces/<dataset>.yaml``
    given a dataset name (no suffix)."""
    from cmmd_dist.storage.yaml_files import read_yaml_mapping

    p = Path(path_or_dataset)
    if not p.suffix and not p.is_dir():
        p = packaged_spaces() / f"{path_or_dataset}.yaml"
    if not p.exists():
        known = sorted(f.stem for f in packaged_spaces().glob("*.yaml"))
        what = f"dataset {path_or_dataset!r}" if not Path(path_or_dataset).suffix else "search space"
        raise FileNotFoundError(f"unknown {what}: no search space {p}; the spaces here are for: {', '.join(known)}")
    raw = read_yaml_mapping(str(p), "search space")  # a one-line UserError naming the file
    try:
        return SearchSpace.model_validate(raw)
    except ValidationError as e:
        reasons = "; ".join(f"{'.'.join(map(str, err['loc'])) + ': ' if err['loc'] else ''}"
                            f"{err['msg'].removeprefix('Value error, ')}" for err in e.errors())
        raise ValueError(f"{p}: invalid search space: {reasons}") from None
