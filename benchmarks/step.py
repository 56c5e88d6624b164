"""One training step against the machine's fp32 GEMM rate, before/after the fused optimiser; writes benchmarks/results/step.json.

Run: .venv/bin/python benchmarks/step.py [--models mnist2v flickr] [--batch 256] [--threads 2] [--steps 20] [--warmup 3]
     [--profile-steps 3] [--out benchmarks/results/step.json]

Models: the packaged paper-size configs (cmmd_dist/configs/mnist2v.yaml, flickr.yaml) built as training builds
them (``model_config`` over the registered dataset spec, ``CMMD``, ``loss_weights``), one supervised
``train_step`` (dropout on, label to the encoder, classifier term) on a fixed synthetic batch of the dataset's
shapes: the step's cost does not depend on the values, and no dataset (let alone its test split) is read.

Each round runs, in turn: a step with the reference optimiser (``torch.optim.Adam`` as the trainers built it
before issue 14: torch's default, the single-tensor loop on CPU), a step with ``make_optimizer`` (fused Adam),
and one GEMM pass; the rotation makes load on a shared machine fall on all three alike. Reported medians are
over the rounds after ``--warmup``.

- achieved rate: 6 x parameters x batch / median step time (2 forward + 4 backward FLOPs per weight and row).
- gemm rate: one ``torch.mm`` per Linear of the model, forward-shaped (rows x in by in x out, the rows each
  layer really sees, recorded by hooks), all of them per pass: total FLOPs / median pass time, i.e. the rate
  weighted by each layer's FLOPs.
- gemm_fraction: achieved rate / gemm rate (target >= 0.60 on CPU).
- profile: the top five ops by self CPU time over ``--profile-steps`` steps (torch.profiler), share of the total.
The load average (os.getloadavg) before and after is stored with the figures: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from cmmd_dist.cli.app import default_config_path
from cmmd_dist.storage.yaml_files import load_run_config
from cmmd_dist.datasets.registry import get_spec
from cmmd_dist.model import CMMD, CMMDConfig
from cmmd_dist.train.build import loss_weights, model_config
from cmmd_dist.train.loop import train_step
from cmmd_dist.train.optim import adam_implementation, make_optimizer

RESULTS = Path(__file__).resolve().parent / "results" / "step.json"


def synthetic_batch(cfg: CMMDConfig, rows: int, gen: torch.Generator) -> dict:
    """A batch of the model's shapes: standard-normal Gaussian views, 0/1 Bernoulli ones, one-hot categorical ones."""
    def values(m):
        if m.likelihood == "bernoulli":
            return torch.randint(0, 2, (rows, *m.shape), generator=gen).float()
        if m.likelihood == "categorical":
            idx = torch.randint(0, m.shape[-1], (rows, *m.shape[:-1]), generator=gen)
            return torch.nn.functional.one_hot(idx, m.shape[-1]).float()
        return torch.randn(rows, *m.shape, generator=gen)

    if cfg.multilabel:
        y = (torch.rand(rows, cfg.num_classes, generator=gen) < 0.1).float()
    else:
        y = torch.randint(0, cfg.num_classes, (rows,), generator=gen)
    return {"obs": {m.name: values(m) for m in cfg.observed}, "mis": {m.name: values(m) for m in cfg.missing}, "y": y}


def linear_shapes(core: CMMD, batch: dict, n_samples: int) -> list[tuple[int, int, int]]:
    """(rows, in, out) of every Linear in one forward pass, as the layers see them."""
    shapes: list[tuple[int, int, int]] = []
    hooks = [mod.register_forward_hook(lambda m, inp, out: shapes.append((inp[0].numel() // m.in_features,
                                                                          m.in_features, m.out_features)))
             for mod in core.modules() if isinstance(mod, torch.nn.Linear)]
    with torch.no_grad():
        core(batch, n_samples=n_samples)
    for h in hooks:
        h.remove()
    return shapes


def top_ops(run_steps, steps: int) -> dict:
    """The five ops with the most self CPU time over ``steps`` calls of ``run_steps`` and the optimiser step's share."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run_steps()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:5]
    # the optimiser's whole update (its record_function range, children included), for before/after
    opt = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step#"))
    return {"top5": [{"op": e.key, "share": round(e.self_cpu_time_total / total, 4), "calls": e.count} for e in top],
            "optimizer_step_share": round(opt / total, 4)}


def bench(name: str, batch: int, steps: int, warmup: int, profile_steps: int) -> dict:
    run = load_run_config(default_config_path(name), {"train": {"batch_size": batch}})
    cfg, w = model_config(run, get_spec(run.data.dataset)), loss_weights(run)
    data = synthetic_batch(cfg, batch, torch.Generator().manual_seed(0))
    torch.manual_seed(run.train.seed)
    before = CMMD(cfg)
    after = CMMD(cfg)
    after.load_state_dict(before.state_dict())
    opt_before = torch.optim.Adam(before.parameters(), lr=run.train.lr)
    opt_after = make_optimizer(after.parameters(), run.train)
    params = sum(p.numel() for p in after.parameters())

    shapes = linear_shapes(after, data, w.n_samples)
    gemm_flops = sum(2 * m * k * n for m, k, n in shapes)
    mats = [(torch.randn(m, k), torch.randn(n, k).t()) for m, k, n in shapes]  # x and W^T as nn.Linear holds them

    def step(core, opt):
        return lambda: train_step(core, core, data, opt, w)

    def gemm_pass():
        for x, wt in mats:
            torch.mm(x, wt)

    kinds = {"before": step(before, opt_before), "after": step(after, opt_after), "gemm": gemm_pass}
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for i in range(warmup + steps):
        for k, fn in kinds.items():
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    p25 = {k: statistics.quantiles(v, n=4)[0] if len(v) > 1 else v[0] for k, v in times.items()}
    gemm_rate = gemm_flops / med["gemm"]
    out = {"params": params, "batch": batch, "linear_layers": len(shapes), "gemm_flops_per_pass": gemm_flops,
           "gemm_gflops": round(gemm_rate / 1e9, 2), "gemm_pass_s_median": round(med["gemm"], 4), "steps_each": steps}
    for k in ("before", "after"):
        achieved = 6 * params * batch / med[k]
        out[k] = {"step_s_median": round(med[k], 4), "step_s_p25": round(p25[k], 4),
                  "achieved_gflops": round(achieved / 1e9, 2), "gemm_fraction": round(achieved / gemm_rate, 3),
                  # the same ratio from the lower quartiles: the figure least disturbed by other load
                  "gemm_fraction_p25": round(6 * params * batch / p25[k] / (gemm_flops / p25["gemm"]), 3),
                  "profile": top_ops(kinds[k], profile_steps)}
    out["before"]["optimizer"] = "torch.optim.Adam(params, lr) default: single-tensor loop on CPU"
    out["after"]["optimizer"] = f"make_optimizer: {adam_implementation('cpu')}"
    out["speedup"] = round(med["before"] / med["after"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mnist2v", "flickr"], choices=["mnist2v", "flickr"])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20, help="timed rounds after warm-up")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--profile-steps", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0, load_before = time.time(), os.getloadavg()
    results = {m: bench(m, args.batch, args.steps, args.warmup, args.profile_steps) for m in args.models}
    results.update(
        batch=args.batch, threads=args.threads, cpus=os.cpu_count(), torch=torch.__version__,
        platform=platform.platform(), loadavg_before=[round(x, 2) for x in load_before],
        loadavg_after=[round(x, 2) for x in os.getloadavg()], seconds=round(time.time() - t0, 1),
        note="synthetic batch of the dataset's shapes, supervised train_step; before = torch.optim.Adam default, "
             "after = cmmd_dist.train.optim.make_optimizer; rotated step by step in one process; rates in GFLOP/s "
             "with 6 x params x batch per step; gemm = forward-shaped torch.mm of every Linear, FLOP-weighted",
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
