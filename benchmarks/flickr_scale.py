"""Flickr at its real size through the platform: prepare to S3, then 2-worker streamed pretraining + training.

    .venv/bin/python benchmarks/flickr_scale.py [--unlabelled 1000000] [--small 100000] [--steps 30]
        [--workdir /work/tmp-flickr-scale] [--rows-per-file 2000]

Generated Flickr-shaped data (``cmmd-dist data synth --like flickr``: 25,000 labelled rows, 3,857 image
+ 2,000 tag columns, 38 labels; made-up rows, so no mAP from here is a Flickr result) at two sizes,
``--small`` and ``--unlabelled`` unlabelled rows, each prepared by ``cmmd-dist data prepare --dataset
flickr`` (a subprocess: its peak RSS is its own) into a SeaweedFS S3 server started for the run, then
trained by ``run_distributed`` on 2 Ray Train workers (1 CPU each, gloo) with the rows streamed
(``data.stream: always``) and the paper's architecture (appendix C: encoder 4x2048, prior and decoder
4x1024, latent 1024, classifier 2x1550), ``--steps`` steps per stage (one pretraining epoch, one
supervised epoch, ``train.steps_per_epoch``), validation and test in streamed chunks on rank 0.

Keys of ``benchmarks/results/flickr_scale.json``: ``rows``, ``parquet_bytes``, ``prepare_s``,
``prepare_peak_rss_bytes`` (of the big size), ``peak_rss_per_worker_bytes_1m`` and ``_100k`` (max over
the 2 workers) and their ratio (target <= 1.10), ``data_wait_fraction`` (time a worker waited for its
next batch / its epoch time, the worst epoch and rank mean; target <= 0.05), ``samples_per_s`` (both
workers, supervised epoch), ``reader_rows_per_s`` (a full ShardStream pass over the small size's
unlabelled split, shuffled, batches of 256) against ``pyarrow_rows_per_s`` (``pyarrow.dataset`` reading
the same files, same machine, interleaved, best of 2; target ratio >= 0.8) and ``ray_data_rows_per_s``
(``ray.data.read_parquet(...).iter_batches`` of the same files), plus the conditions.

Disk: the synthetic source of the big size (about 15.5 GB of image features as .npy plus the tags) is
deleted once prepared; the Parquet in SeaweedFS takes about 23.5 kB a row (25.5 GB at 1,025,000 rows,
2.6 GB at 125,000), so about 45 GB free are needed at the peak (source + shards). Everything is
removed at the end (``--keep`` keeps it). Time on a 2-core machine: most of it is generating and
preparing (see ``prepare_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUCKET = "flickr-scale"


def _prepare(src: Path, uri: str, rows_per_file: int, env: dict) -> tuple[float, int]:
    """(seconds, peak RSS bytes) of ``cmmd-dist data prepare --dataset flickr`` in a subprocess of its own."""
    code = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "rc = subprocess.call(sys.argv[1:]); "
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024); "
            "sys.exit(rc)")
    cmd = [sys.executable, "-c", code, sys.executable, "-m", "cmmd_dist.cli", "data", "prepare", "--dataset", "flickr",
           "--source", str(src), "--out", uri, "--rows-per-file", str(rows_per_file)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise SystemExit(f"prepare failed: {out.stderr[-2000:]}")
    seconds, rss = out.stdout.strip().splitlines()[-1].split()
    return float(seconds), int(rss)


def _train(uri: str, steps: int, out: Path) -> dict:
    from cmmd_dist.cli.app import default_config_path
    from cmmd_dist.storage.yaml_files import load_run_config
    from cmmd_dist.train.distributed import run_distributed

    run = load_run_config(default_config_path("flickr"), {
        "data": {"dataset": uri, "stream": "always"},
        "train": {"epochs": 1, "pretrain_epochs": 1, "steps_per_epoch": steps, "threads": 1, "progress": False,
                  "baseline": False},
        "distributed": {"workers": 2, "cpus_per_worker": 1, "storage": str(out / "ray")}, "output_dir": str(out),
    })
    t = time.perf_counter()
    results, _ = run_distributed(run, log=lambda *a: None)
    results["wall_s"] = time.perf_counter() - t
    return results


def _read_rates(uri: str, settings, repeats: int = 2) -> dict:
    import pyarrow.dataset as pads

    from cmmd_dist.datasets.streaming import ShardStream
    from cmmd_dist.storage import join_uri, read_manifest, resolve

    manifest = read_manifest(uri, settings)
    fs, base = resolve(uri, settings)
    paths = [join_uri(base, f["path"]) for f in manifest["files"] if f["split"] == "unlabeled"]
    ours, plain = [], []
    for _ in range(repeats):  # interleaved: both see the same cache and load
        t = time.perf_counter()
        n = sum(b.num_rows for b in pads.dataset(paths, filesystem=fs, format="parquet").to_batches())
        plain.append(n / (time.perf_counter() - t))
        t = time.perf_counter()
        n = sum(len(b["label"]) for b in ShardStream(uri, "unlabeled", 256, seed=0, settings=settings))
        ours.append(n / (time.perf_counter() - t))
    import ray.data

    from cmmd_dist.storage import resolve_without_keys

    rfs, rbase = resolve_without_keys(uri, settings)
    t = time.perf_counter()
    n = sum(b.num_rows for b in ray.data.read_parquet([join_uri(rbase, f["path"]) for f in manifest["files"]
                                                       if f["split"] == "unlabeled"], filesystem=rfs)
            .iter_batches(batch_size=256, batch_format="pyarrow"))
    ray_rate = n / (time.perf_counter() - t)
    return {"reader_rows_per_s": round(max(ours)), "pyarrow_rows_per_s": round(max(plain)),
            "reader_vs_pyarrow": round(max(ours) / max(plain), 3), "ray_data_rows_per_s": round(ray_rate),
            "read_rows": n}


def _size(unlabelled: int, label: str, args, server, env, work: Path) -> dict:
    from cmmd_dist.datasets.synth import synth_like_flickr
    from cmmd_dist.storage import read_manifest

    src = work / f"src-{label}"
    t = time.perf_counter()
    synth_like_flickr(src, 25_000, unlabelled, seed=0)
    synth_s = time.perf_counter() - t
    print(f"[{label}] synthesised {unlabelled} unlabelled rows in {synth_s:.0f} s", flush=True)
    uri = f"s3://{BUCKET}/flickr-{label}"
    prepare_s, prepare_rss = _prepare(src, uri, args.rows_per_file, env)
    shutil.rmtree(src)
    manifest = read_manifest(uri, server.settings)
    print(f"[{label}] prepared in {prepare_s:.0f} s, peak RSS {prepare_rss / 1e6:.0f} MB", flush=True)
    reads = _read_rates(uri, server.settings) if label == "100k" else {}
    results = _train(uri, args.steps, work / f"runs-{label}")
    waits = [r["data_wait_fraction"] for r in results["history"]]
    sup = [r for r in results["history"] if r["stage"] == "supervised"][-1]
    print(f"[{label}] trained in {results['wall_s']:.0f} s; peak RSS per worker {results['peak_rss_per_worker_bytes']}",
          flush=True)
    return {"rows": sum(manifest["rows"].values()), "rows_by_split": manifest["rows"],
            "parquet_bytes": sum(f["bytes"] for f in manifest["files"]), "synth_s": round(synth_s, 1),
            "prepare_s": round(prepare_s, 1), "prepare_peak_rss_bytes": prepare_rss,
            "peak_rss_per_worker_bytes": results["peak_rss_per_worker_bytes"], "data_wait_fraction": round(max(waits), 4),
            "samples_per_s": round(sup["samples_per_s"], 1), "train_wall_s": round(results["wall_s"], 1),
            "history": [{k: r.get(k) for k in ("stage", "epoch", "train_rows", "train_seconds", "data_wait_fraction",
                                               "samples_per_s")}
                        for r in results["history"]], **reads}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unlabelled", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=30, help="steps per stage (pretraining, supervised)")
    ap.add_argument("--rows-per-file", type=int, default=2000)
    ap.add_argument("--workdir", default=str(REPO.parent / "tmp-flickr-scale"))
    ap.add_argument("--keep", action="store_true", help="keep the generated data and the S3 server's folder")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "flickr_scale.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    import ray

    from s3_server import SeaweedS3Server

    from cmmd_dist.storage import create_bucket

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    server = SeaweedS3Server(work / "seaweedfs").start()
    env = {**os.environ, **server.env(), "PYTHONPATH": str(REPO)}
    os.environ.update(server.env())  # the driver and the Ray workers reach S3 as a node would: from their env
    t0 = time.time()
    try:
        create_bucket(BUCKET, server.settings)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        small = _size(args.small, "100k", args, server, env, work)
        big = _size(args.unlabelled, "1m", args, server, env, work)
    finally:
        ray.shutdown()
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    ratio = max(big["peak_rss_per_worker_bytes"]) / max(small["peak_rss_per_worker_bytes"])
    result = {
        "rows": big["rows"], "parquet_bytes": big["parquet_bytes"], "prepare_s": big["prepare_s"],
        "prepare_peak_rss_bytes": big["prepare_peak_rss_bytes"],
        "prepare_peak_rss_bytes_100k": small["prepare_peak_rss_bytes"],
        "peak_rss_per_worker_bytes_1m": max(big["peak_rss_per_worker_bytes"]),
        "peak_rss_per_worker_bytes_100k": max(small["peak_rss_per_worker_bytes"]),
        "peak_rss_ratio_1m_100k": round(ratio, 3),
        "data_wait_fraction": max(big["data_wait_fraction"], small["data_wait_fraction"]),
        "samples_per_s": big["samples_per_s"],
        "reader_rows_per_s": small["reader_rows_per_s"], "pyarrow_rows_per_s": small["pyarrow_rows_per_s"],
        "reader_vs_pyarrow": small["reader_vs_pyarrow"], "ray_data_rows_per_s": small["ray_data_rows_per_s"],
        "target_met": {"peak_rss_ratio_le_1.10": ratio <= 1.10,
                       "data_wait_fraction_le_0.05": max(big["data_wait_fraction"], small["data_wait_fraction"]) <= 0.05,
                       "reader_vs_pyarrow_ge_0.8": small["reader_vs_pyarrow"] >= 0.8},
        "sizes": {"1m": big, "100k": small},
        "conditions": {"machine": f"{os.cpu_count()} cores", "loadavg_at_end": os.getloadavg(), "workers": 2,
                       "cpus_per_worker": 1, "torch_threads": 1, "steps_per_stage": args.steps,
                       "rows_per_file": args.rows_per_file, "batch_size": 256, "shuffle_buffer": 4096, "prefetch": 2,
                       "architecture": "paper appendix C (encoder 4x2048, prior/decoder 4x1024, zdim 1024, classifier 2x1550)",
                       "wall_s": round(time.time() - t0)},
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "sizes"}, indent=2))


if __name__ == "__main__":
    main()
