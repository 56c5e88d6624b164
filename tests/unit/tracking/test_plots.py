"""Every figure renders to a valid PNG on tiny inputs; report_figures picks the figures that fit the model."""

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from cmmd_dist.tracking import plots
from cmmd_dist.model import CMMD, CMMDConfig, ModalityDef
from cmmd_dist.datasets.tensors import SplitTensors

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def check_png(fig, path):
    plots.save_png(fig, path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    assert img[..., :3].std() > 0  # something was drawn


def test_each_figure_is_a_valid_png(tmp_path):
    rng = np.random.default_rng(0)
    history = [{"stage": "train", "epoch": e, "train_loss": 10.0 / e, "train_rec": 5.0 / e, "train_kl": 1.0,
                "train_mmd": 0.01, "train_ce": 2.0, "val_metric": 0.5 / e} for e in range(1, 5)]
    eps = np.linspace(0, 6, 25)
    figs = {
        "curves": plots.learning_curves([{"stage": "pretrain", "epoch": 1, "train_loss": 1.0}] + history),
        "collapse": plots.collapse_curves({"best": (eps, np.clip(eps / 6, 0, 1)), "lambda=1": (eps, np.ones(25))}),
        "lambda": plots.lambda_scatter([{"lam": 0.1 * i, "cv_mean": 0.2 + 0.01 * i, "cv_std": 0.01} for i in range(5)]),
        "embed": plots.latent_embedding(rng.normal(size=(60, 4)), rng.integers(0, 10, 60)),
        "embed_multilabel": plots.latent_embedding(rng.normal(size=(20, 3)), rng.integers(0, 2, (20, 5))),
        "grid": plots.generation_grid(rng.random((5, 64)), rng.random((5, 64)), (8, 8)),
        "grid_rgb": plots.generation_grid(rng.random((3, 3, 4, 4)), rng.random((3, 48)), (3, 4, 4)),
        "tags": plots.top_tags(rng.random((4, 30)), rng.integers(0, 2, (4, 30))),
    }
    for name, fig in figs.items():
        check_png(fig, tmp_path / f"{name}.png")


@pytest.mark.parametrize("missing, expected", [
    (ModalityDef("img", (4, 4)), "generated_img.png"),
    (ModalityDef("tags", (12,), "bernoulli"), "top_tags_tags.png"),
])
def test_report_figures_fit_the_missing_modality(tmp_path, missing, expected):
    torch.manual_seed(0)
    cfg = CMMDConfig(observed=(ModalityDef("x", (6,)),), missing=(missing,), num_classes=3, zdim=2,
                     encoder_hidden=(8,), prior_hidden=(8,), decoder_hidden=(8,), classifier_hidden=(4,))
    core = CMMD(cfg)
    n = 30
    test = SplitTensors(obs={"x": torch.randn(n, 6)}, mis={missing.name: torch.rand(n, *missing.shape).round()},
                        y=torch.randint(0, 3, (n,)))
    hist = [{"epoch": 1, "train_loss": 2.0, "val_metric": 0.5}]
    figs = plots.report_figures(core, test, history=hist, trials=[{"lam": 0.4, "cv_mean": 0.3}],
                                collapse={"lambda=1": ([0.0, 1.0], [0.0, 0.5])})
    assert set(figs) == {"learning_curves.png", "posterior_collapse.png", "lambda_vs_cv.png",
                         "latent_embedding.png", expected}
    check_png(figs[expected], tmp_path / expected)
    lines = figs["posterior_collapse.png"].axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["this model", "lambda=1"]


def test_learning_curves_of_a_sweep_retrain_draw_its_loss_terms():
    """A sweep's champion is retrained on train+val (stage 'retrain', no validation): its curves are not empty."""
    history = [{"stage": "retrain", "epoch": e, "train_loss": 10.0 / e, "train_rec": 5.0 / e} for e in range(1, 4)]
    fig = plots.learning_curves(history)
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["loss", "rec"]
    assert list(lines[0].get_xdata()) == [1, 2, 3]
    assert not fig.axes[1].get_lines() and "retrained on train+val" in fig.axes[1].texts[0].get_text()
