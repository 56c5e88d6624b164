"""The comparison's arithmetic and spaces: intervals over seeds, the collapsed fraction, the M-x_o verdict, and each
kind's search space (its model fixed, what it does not read dropped, its own values added)."""

import math

import pytest
from scipy import stats

from cmmd_dist.tune.compare import beats_mx_o, ci95, collapsed_at, kind_space, markdown_table, summarise_seeds, verdict
from cmmd_dist.config import RunConfig
from cmmd_dist.errors import UserError
from cmmd_dist.tune.search_space import apply_params, load_search_space


def test_ci95_is_the_t_interval_of_the_mean():
    lo, hi = ci95([0.02, 0.03, 0.04])
    half = stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3)  # sd of (2, 3, 4)% is 1%
    assert lo == pytest.approx(0.03 - half) and hi == pytest.approx(0.03 + half)
    assert ci95([0.5]) is None and ci95([0.1, float("nan")]) is None
    assert ci95([0.9, 1.0], (0.0, 1.0))[1] == 1.0 and ci95([0.9, 1.0])[1] > 1.0  # a fraction's stays in [0, 1]


def test_collapsed_fraction_at_one_nat_reads_the_curve():
    test = {"collapse_eps": [0.0, 0.5, 1.5], "collapse": [0.0, 0.2, 0.6]}
    assert collapsed_at(test) == pytest.approx(0.4)  # halfway between 0.5 and 1.5 nats
    assert collapsed_at({"error": 0.1}) is None


def _test(err, rmse, collapse):
    return {"error": err, "metric": err, "rmse": rmse, "collapse_eps": [0.0, 1.0], "collapse": [0.0, collapse]}


def test_summary_over_seeds_and_the_verdict():
    models = {
        "cmmd": summarise_seeds({0: _test(0.020, 0.30, 0.1), 1: _test(0.0202, 0.31, 0.3)}),
        "mx_o": summarise_seeds({0: {"error": 0.030, "rmse": float("nan")}, 1: {"error": 0.0302, "rmse": float("nan")}}),
        "vcca": summarise_seeds({0: _test(0.040, 0.35, 0.0), 1: _test(0.045, 0.36, 0.0)}),
    }
    c = models["cmmd"]
    assert c["seeds"] == [0, 1] and [r["test_error"] for r in c["per_seed"]] == [0.020, 0.0202]
    assert c["test_error_mean"] == pytest.approx(0.0201) and c["rmse_mean"] == pytest.approx(0.305)
    assert c["collapsed_1nat_mean"] == pytest.approx(0.2) and c["collapse_mean"] == [0.0, 0.2]
    assert c["test_error_ci95"] == ci95([0.020, 0.0202]) and c["rmse_ci95"] == ci95([0.30, 0.31])
    assert "rmse_mean" not in models["mx_o"] and "collapse_mean" not in models["mx_o"]  # M-x_o generates nothing
    assert beats_mx_o(models) == {"cmmd": {"beats": True, "clear": True}, "vcca": {"beats": False, "clear": False}}
    assert verdict(models).startswith("\"Only CMMD beats M-x_o\" holds here")
    models["vcca"] = summarise_seeds({0: _test(0.010, 0.35, 0.0), 1: _test(0.011, 0.36, 0.0)})
    assert "does not hold here" in verdict(models)
    close = {**models, "cmmd": summarise_seeds({0: _test(0.020, 0.30, 0.1), 1: _test(0.036, 0.31, 0.3)}),
             "vcca": summarise_seeds({0: _test(0.040, 0.35, 0.0), 1: _test(0.045, 0.36, 0.0)})}
    assert beats_mx_o(close)["cmmd"] == {"beats": True, "clear": False}  # better mean, intervals overlapping
    assert verdict(close).startswith("\"Only CMMD beats M-x_o\" holds in the means only")
    models["vcca"] = summarise_seeds({0: _test(0.020, 0.35, 0.0), 1: _test(0.040, 0.36, 0.0)})  # better mean, wide
    assert beats_mx_o(models)["vcca"] == {"beats": True, "clear": False}
    table = markdown_table(models)
    assert "| cmmd | 2 | 2.01 [" in table and "| mx_o | 2 | 3.01 [" in table and table.count("\n") == 4


def test_each_kind_gets_its_own_space():
    space = load_search_space("digits2v").with_preset("smoke")
    vcca = kind_space(space, "vcca")
    assert vcca.fixed["model"]["kind"] == "vcca" and "model.beta" in vcca.params
    assert "loss.lam" not in vcca.params and not any(k.startswith("model.prior_") for k in vcca.params)
    mx_o = kind_space(space, "mx_o")
    assert set(mx_o.params) == {"model.zdim", "model.prior_width", "model.prior_depth", "train.lr"}
    iwae = kind_space(space, "mmvae_iwae")
    run = RunConfig.model_validate(apply_params(iwae.fixed, {k: d.bounds()[0] for k, d in iwae.params.items()}))
    assert (run.model.kind, run.model.mmvae_objective, run.model.mmvae_k) == ("mmvae", "iwae", 10)
    assert kind_space(space, "cmmd").params == space.params  # CMMD's space is the dataset's
    with pytest.raises(UserError, match="unknown model 'dcca'"):
        kind_space(space, "dcca")
    with pytest.raises(UserError, match="grid searches only"):
        kind_space(load_search_space("digits2v").with_preset("paper"), "vcca")
