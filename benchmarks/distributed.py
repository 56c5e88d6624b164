"""Distributed training throughput and the cost of the global-batch MMD; writes benchmarks/results/distributed.json.

Run: .venv/bin/python benchmarks/distributed.py [--mnist PATH] [--rows 4096] [--epochs 4]

Same model and data everywhere: mnist2v (first ``--rows`` training rows), encoder (1024, 1024),
prior (512, 512), decoder (512, 512), zdim 50, batch 256 per worker, dropout 0.2, Adam.

One torch thread per process everywhere: a 2-thread process is badly hurt when anything else
runs on a 2-core machine, and one core per worker is how workers scale.

- ray1_vs_plain: samples/s of 1 Ray Train worker (1 CPU) / the plain in-process loop (1 thread, mean
  of a run before and one after the Ray runs), both timed inside ``train_epoch`` over the epochs
  after the first (warm-up).
- ray2_vs_ray1: samples/s of 2 Ray Train workers (1 CPU each, gloo DDP, gathered MMD) / 1 worker,
  per-worker batch 256 in both; ``cores`` is the machine's CPU count (the 2 workers use both).
- mmd_overhead: 2 gloo ranks (torch.multiprocessing, DDP), median step time with the gathered MMD
  / with the MMD term replaced by 0 (``cmmd_dist.model.loss.mmd`` patched in the benchmark process),
  minus 1; ``mmd_local_overhead`` is the same for the per-shard MMD (compute without the gathers).
  The settings rotate step by step inside the same processes so drift cancels.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cmmd_dist.config import RunConfig
from cmmd_dist.storage.yaml_files import load_run_config
from cmmd_dist.datasets.registry import load_bundle
from cmmd_dist.model import CMMD
from cmmd_dist.datasets.tensors import iterate_batches
from cmmd_dist.train.build import loss_weights, model_config
from cmmd_dist.train.gather import gather_for
from cmmd_dist.train.loop import train_epoch, train_step
from cmmd_dist.train.single import seed_everything, split_tensors

RESULTS = Path(__file__).resolve().parent / "results" / "distributed.json"
MODEL = {"zdim": 50, "encoder_hidden": [1024, 1024], "prior_hidden": [512, 512], "decoder_hidden": [512, 512],
         "classifier_hidden": [50, 50], "dropout": 0.2}


def bench_run(args, workers: int = 1, cpus: int = 1) -> RunConfig:
    return load_run_config(None, {
        "data": {"dataset": "mnist2v", "source": str(Path(args.mnist).resolve()), "limit": args.rows},
        "model": MODEL,
        "train": {"epochs": args.epochs, "batch_size": 256, "lr": 1e-4, "threads": cpus, "progress": False,
                  "baseline": False},
        "distributed": {"workers": workers, "cpus_per_worker": cpus, "max_failures": 0, "keep_checkpoints": None,
                        "storage": str(Path(args.scratch, "ray").resolve())},
        "output_dir": str(Path(args.scratch, "runs")),
    })


def plain(args) -> float:
    run = bench_run(args)
    torch.set_num_threads(1)
    bundle = load_bundle(run.data)
    gen = seed_everything(0)
    data = split_tensors(bundle, run)
    core = CMMD(model_config(run, bundle.spec))
    opt = torch.optim.Adam(core.parameters(), lr=run.train.lr)
    rates = [train_epoch(core, core, iterate_batches(data["train"], 256, gen), opt, loss_weights(run))["samples_per_s"]
             for _ in range(args.epochs)]
    return statistics.mean(rates[1:])


def ray_rate(args, workers: int, cpus: int) -> float:
    from cmmd_dist.train.distributed import setup

    result = setup(bench_run(args, workers, cpus)).fit()
    rates = list(result.metrics_dataframe.sort_values("epoch")["samples_per_s"])
    return statistics.mean(rates[1:])


def _overhead_rank(rank: int, port: int, args, out: str) -> None:
    import cmmd_dist.model.loss as loss_module

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    run = bench_run(args, workers=2, cpus=1)
    bundle = load_bundle(run.data)
    gen = seed_everything(rank)
    shard = split_tensors(bundle, run)["train"].shard(rank, 2)
    core = CMMD(model_config(run, bundle.spec))
    model = torch.nn.parallel.DistributedDataParallel(core)
    opt = torch.optim.Adam(core.parameters(), lr=1e-4)
    w, gather = loss_weights(run), gather_for("global")
    real_mmd = loss_module.mmd
    times: dict[str, list[float]] = {"gathered": [], "local": [], "off": []}
    hooks = {"gathered": gather, "local": None, "off": None}
    order = ("off", "gathered", "local", "local", "gathered", "off")  # every setting at every phase
    batches = list(iterate_batches(shard, 256, gen, drop_last=True))
    warmup = 6
    for i in range(warmup + 3 * args.steps):
        mode = order[i % len(order)]
        loss_module.mmd = real_mmd if mode != "off" else (lambda zq, zp, gather=None: zq.new_zeros(()))
        dist.barrier()
        t0 = time.perf_counter()
        train_step(model, core, batches[i % len(batches)], opt, w, gather=hooks[mode], world_size=2)
        if i >= warmup:
            times[mode].append(time.perf_counter() - t0)
    if rank == 0:
        Path(out).write_text(json.dumps(times))
    dist.destroy_process_group()


def mmd_overhead(args) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(Path(args.scratch, "mmd_steps.json"))
    mp.spawn(_overhead_rank, args=(port, args, out), nprocs=2, join=True)
    times = json.loads(Path(out).read_text())
    med = {k: statistics.median(v) for k, v in times.items()}
    p25 = {k: statistics.quantiles(v, n=4)[0] for k, v in times.items()}
    return {"mmd_overhead": med["gathered"] / med["off"] - 1.0,
            "mmd_overhead_p25": p25["gathered"] / p25["off"] - 1.0,
            "mmd_overhead_of_means": statistics.mean(times["gathered"]) / statistics.mean(times["off"]) - 1.0,
            "mmd_local_overhead": med["local"] / med["off"] - 1.0,
            "step_s_median": med, "steps_each": len(times["off"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mnist", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.pkl.gz"))
    p.add_argument("--rows", type=int, default=4096, help="training rows of mnist2v")
    p.add_argument("--epochs", type=int, default=4, help="epochs per throughput run (the first is warm-up)")
    p.add_argument("--steps", type=int, default=150, help="timed steps per setting for the MMD overhead")
    p.add_argument("--scratch", default="runs/bench-distributed")
    args = p.parse_args()
    Path(args.scratch).mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    t0 = time.time()
    overhead = mmd_overhead(args)
    plain_rate = plain(args)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray1 = ray_rate(args, workers=1, cpus=1)
    ray2 = ray_rate(args, workers=2, cpus=1)
    ray.shutdown()
    plain_after = plain(args)  # before and after the Ray runs: load from other jobs drifts
    plain_rate, plain_before = (plain_rate + plain_after) / 2, plain_rate
    result = {
        "ray1_vs_plain": ray1 / plain_rate,
        "ray2_vs_ray1": ray2 / ray1,
        "mmd_overhead": overhead["mmd_overhead"],
        "cores": os.cpu_count(),
        "cores_used": {"plain": 1, "ray1": 1, "ray2": 2},
        "samples_per_s": {"plain_1thread": plain_rate, "plain_before": plain_before, "plain_after": plain_after,
                          "ray_1worker": ray1, "ray_2workers": ray2},
        **{k: v for k, v in overhead.items() if k != "mmd_overhead"},
        "setup": {"dataset": "mnist2v", "train_rows": args.rows, "epochs": args.epochs, "batch_per_worker": 256,
                  "model": MODEL, "torch": torch.__version__, "python": platform.python_version()},
        "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "seconds": time.time() - t0,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
