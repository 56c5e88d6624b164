"""Latent accuracy on the distributed path's own test evaluation, without Ray: rank 0's latent-fit rows (a
random sample of the supervised rows in memory; the first shuffled batch of their stream when streamed) and the
streamed evaluation's latent classification, which must equal the in-memory one on the same rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cmmd_dist.storage.yaml_files import load_run_config
from cmmd_dist.datasets.prepare import prepare
from cmmd_dist.datasets.registry import load_bundle
from cmmd_dist.evaluation.metrics import evaluate_model
from cmmd_dist.datasets.row_ids import SPLIT_CODES
from cmmd_dist.train.folds import development_split
from cmmd_dist.datasets.tensors import SplitTensors
from cmmd_dist.train.build import build_model
from cmmd_dist.train.worker_rows import rank_rows, streamed_rank_rows
from cmmd_dist.train.single import seed_everything
from cmmd_dist.train.sources import LATENT_FIT_ROWS, StreamedRows, evaluate_rows, streams
from tiny import TINY



@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("latent-rows") / "d2v"
    prepare("digits2v", None, str(out), rows_per_file=150)
    return str(out)


def run_config(data: str, stream: str, seed: int = 3):
    return load_run_config(None, {"data": {"dataset": data, "stream": stream, "shuffle_buffer": 64}, "model": TINY,
                                  "train": {"seed": seed, "progress": False, "baseline": False}})


def concat(chunks: list[SplitTensors]) -> SplitTensors:
    return SplitTensors(obs={k: torch.cat([c.obs[k] for c in chunks]) for k in chunks[0].obs},
                        mis={k: torch.cat([c.mis[k] for c in chunks]) for k in chunks[0].mis},
                        y=torch.cat([c.y for c in chunks]), ids=torch.cat([c.ids for c in chunks]))


def test_streamed_evaluation_reports_the_latent_accuracy_of_the_same_rows_in_memory(prepared):
    run = run_config(prepared, "always")
    uri, manifest = streams(run.data)
    spec, rows = streamed_rank_rows(run, uri, manifest, rank=0, world=1, retrain=False, device="cpu")
    assert isinstance(rows.test, StreamedRows) and isinstance(rows.latent, StreamedRows)
    rows.test.stream.batch_size = 128  # several chunks: the latents of every chunk are kept, in order
    seed_everything(0)
    core = build_model(run, spec)
    streamed = evaluate_rows(core, rows.test, latent=rows.latent, latent_seed=run.train.seed)

    fit = next(iter(rows.latent))  # the sample: the first shuffled batch of the training stream, labels kept
    assert len(fit) == LATENT_FIT_ROWS and len(np.unique(fit.y.numpy())) == 10
    assert (fit.ids.numpy() // 10**12 == SPLIT_CODES["train"]).all()  # training rows only
    in_memory = evaluate_model(core, concat(list(rows.test)), latent_train=fit, latent_seed=run.train.seed)
    assert streamed["latent_accuracy"] == in_memory["latent_accuracy"]
    assert streamed["error"] == in_memory["error"]
    assert 0.15 <= streamed["latent_accuracy"] <= 1  # 10 classes: even an untrained prior's latents beat chance
    assert "latent_accuracy" not in evaluate_rows(core, rows.test)


def test_rank_zero_holds_a_random_sample_of_the_supervised_rows_in_memory(prepared):
    run = run_config(prepared, "never")
    bundle = load_bundle(run.data)
    for retrain, source in ((False, bundle.train), (True, development_split(bundle))):
        lead = rank_rows(bundle, run, rank=0, world=2, retrain=retrain, device="cpu")
        assert len(lead.latent) == LATENT_FIT_ROWS < len(source)
        rows = {r.astype(np.float32).tobytes(): int(y) for r, y in zip(source.arrays["view1"], source.labels)}
        picked = [r.tobytes() for r in lead.latent.obs["view1"].numpy()]
        assert all(rows[p] == int(y) for p, y in zip(picked, lead.latent.y.numpy()))  # rows with their own labels
        assert rank_rows(bundle, run, rank=1, world=2, retrain=retrain, device="cpu").latent is None
    seed_everything(0)
    core = build_model(run, bundle.spec)
    test = evaluate_rows(core, lead.test, latent=lead.latent, latent_seed=run.train.seed)
    assert test == evaluate_model(core, lead.test, latent_train=lead.latent, latent_seed=run.train.seed)
    assert 0.15 <= test["latent_accuracy"] <= 1
