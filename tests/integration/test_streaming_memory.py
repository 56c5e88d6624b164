"""A worker's memory does not grow with the dataset: 2-worker runs streaming from the SeaweedFS S3 server.

A wide dataset shaped like MIR Flickr's rows (3857 + 2000 float32 columns, about 23 kB a row) is
written to S3 at N = 2,200 and 8N = 17,600 training rows (8N: over 400 MB of Parquet, which a worker
loading it whole would hold at least once more than at N). Each size trains one epoch on 2 Ray Train
workers (gloo) with the rows streamed (``data.stream: always``); every worker reports its peak RSS
(``ru_maxrss``). The peaks at 8N stay within 10% of those at N. Validation and test splits are the
same size in both.
"""

from __future__ import annotations

import numpy as np
import pytest

from cmmd_dist.storage.yaml_files import load_run_config
from cmmd_dist.datasets.shards import write_stream
from cmmd_dist.datasets.spec import DatasetSpec, DatasetStream, ModalitySpec, Split
from cmmd_dist.storage import create_bucket
from tiny import TINY

pytestmark = pytest.mark.integration

BUCKET = "cmmd-stream-memory"
N = 2_200
SPEC = DatasetSpec(name="wide", modalities=(ModalitySpec("image", (3857,), "gaussian"), ModalitySpec("tags", (2000,), "gaussian")),
                   label_kind="classes", num_classes=4, scenarios={"image": ("image",)}, default_scenario="image")


def _blocks(rows: int, seed: int, block: int = 1000):
    rng = np.random.default_rng(seed)
    for start in range(0, rows, block):
        n = min(block, rows - start)
        yield Split(arrays={"image": rng.standard_normal((n, 3857), dtype=np.float32),
                            "tags": rng.standard_normal((n, 2000), dtype=np.float32)},
                    labels=rng.integers(0, 4, n))


def write_wide(uri: str, train_rows: int, settings) -> dict:
    stream = DatasetStream(SPEC, splits={"train": lambda: _blocks(train_rows, 1), "val": lambda: _blocks(300, 2),
                                         "test": lambda: _blocks(300, 3)})
    return write_stream(stream, uri, rows_per_file=500, settings=settings, validate=False)


def run_streamed(uri: str, out, settings) -> dict:
    from cmmd_dist.train.distributed import run_distributed

    run = load_run_config(None, {
        "data": {"dataset": uri, "stream": "always", "shuffle_buffer": 512, "prefetch": 2}, "model": TINY,
        "train": {"epochs": 1, "batch_size": 256, "progress": False, "baseline": False},
        "distributed": {"workers": 2, "storage": str(out / "ray")}, "output_dir": str(out),
    })
    results, _ = run_distributed(run, settings, log=lambda *a: None)
    return results


def test_peak_memory_per_worker_does_not_grow_with_the_rows(ray_session, s3_server, tmp_path, monkeypatch):
    for k, v in s3_server.env().items():  # the driver reads the manifest as a node would: credentials from its env
        monkeypatch.setenv(k, v)
    settings = s3_server.settings
    create_bucket(BUCKET, settings)
    peaks, sizes = {}, {}
    for label, rows in (("N", N), ("8N", 8 * N)):
        uri = f"s3://{BUCKET}/wide-{label}"
        manifest = write_wide(uri, rows, settings)
        sizes[label] = sum(f["bytes"] for f in manifest["files"])
        results = run_streamed(uri, tmp_path / label, settings)
        assert results["streamed"] and results["workers"] == 2
        peaks[label] = results["peak_rss_per_worker_bytes"]
    assert sizes["8N"] >= 400e6, sizes  # big enough that loading it whole would show
    ratio = max(peaks["8N"]) / max(peaks["N"])
    print(f"parquet {sizes}; peak RSS per worker N {peaks['N']} 8N {peaks['8N']}: ratio {ratio:.3f}")
    assert ratio <= 1.10, f"peak RSS per worker grew {ratio:.2f}x from N to 8N rows: {peaks}"
