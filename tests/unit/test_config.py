"""Typed settings: bad values raise ValidationError naming the field; every shipped YAML loads."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from cmmd_dist.config import DataConfig, LossConfig, ModelConfig, RunConfig, load_run_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "make,field",
    [
        (lambda: LossConfig(lam=-0.1), "lam"),
        (lambda: LossConfig(lam=1.5), "lam"),
        (lambda: ModelConfig(zdim=0), "zdim"),
        (lambda: ModelConfig(dropout=1.0), "dropout"),
        (lambda: ModelConfig(encoder_hidden=[16, 0]), "encoder_hidden"),
        (lambda: DataConfig(likelihoods={"view2": "poisson"}), "likelihoods.view2"),
        (lambda: LossConfig(n_samples=0), "n_samples"),
        (lambda: RunConfig.model_validate({"train": {"epohcs": 3}}), "train.epohcs"),
        (lambda: RunConfig.model_validate({"model": {"gaussian_variance": "guessed"}}), "model.gaussian_variance"),
    ],
)
def test_bad_settings_name_the_field(make, field):
    with pytest.raises(ValidationError) as e:
        make()
    locs = [".".join(str(p) for p in err["loc"]) for err in e.value.errors()]
    assert any(field == loc or loc.startswith(field) or field in str(e.value) for loc in locs), (field, locs)
    assert field.split(".")[-1] in str(e.value)


def test_yaml_typo_is_an_error_naming_the_key(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("loss:\n  lamda: 0.3\n")
    with pytest.raises(ValidationError, match="lamda"):
        load_run_config(p)


def test_overrides_merge_into_yaml(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text("train:\n  epochs: 7\n  lr: 0.01\n")
    run = load_run_config(p, {"train": {"epochs": 3}})
    assert run.train.epochs == 3 and run.train.lr == 0.01


def test_every_shipped_yaml_loads():
    import yaml

    files = sorted((ROOT / "cmmd_dist" / "configs").glob("*.yaml"))
    assert files
    for f in files:
        load_run_config(f)
    for folder in ("search_spaces", "cluster", "dashboards"):
        for f in sorted((ROOT / folder).rglob("*.y*ml")):
            assert list(yaml.safe_load_all(f.read_text())) is not None, f
