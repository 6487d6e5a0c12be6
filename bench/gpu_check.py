"""The GPU path, measured in one short run: `bench/gpu_check.sh` (this script) on a GPU box.

    bash bench/gpu_check.sh                 # one CUDA device; sized for under 8 minutes, printing as it goes
    bash bench/gpu_check.sh --dry-run       # the same steps on CPU with tiny sizes (what the tests run)

Each line is printed (and flushed) as soon as it is measured, so a run cut short by a time
limit still leaves its figures. In order:

1. **Batch size that fills the GPU**, per family (params.yaml's architecture): training
   images/s at batch sizes 64, 256, 1024, 4096 (stopping at the first out-of-memory or when
   throughput stops growing), with the peak memory of each.
2. **bf16 autocast and torch.compile**, per family at its best batch size: images/s of fp32,
   bf16 autocast, and torch.compile (fp32), each against fp32.
3. **All families on one GPU at once** through Ray's fractional GPUs (``num_gpus: 1/5``
   each, the pipeline's ``ray.resources``) against the same trainings one after another:
   total images/s of each, and the ratio (target: at least 3x).

Needs no service but Ray (no MLflow, no Prefect): only torch, Ray and the models.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import machine, train_split  # noqa: E402

from genzoo import models  # noqa: E402

T0 = time.perf_counter()


def say(*parts: object) -> None:
    print(f"[{time.perf_counter() - T0:6.1f} s]", *parts, flush=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def steps_rate(family, spec, net, x, y, *, batch, steps, device, bf16=False, compile_=False, lr=1e-4):
    """Training images/s of ``steps`` optimizer steps at ``batch`` (after 3 warm-up steps) and
    the peak memory (MB, CUDA only). Raises ``torch.OutOfMemoryError`` past the GPU."""
    torch.manual_seed(0)
    model = models.build(family, spec, net).to(device).train()
    opts = {ph: torch.optim.AdamW(model.phase_parameters(ph), lr=lr) for ph in model.phases}
    step_fn = model.training_step
    if compile_:
        step_fn = torch.compile(model.training_step)
    gen = torch.Generator(device="cpu").manual_seed(0)
    xs, ys = x.to(device), y.to(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16)
    t0 = None
    for i in range(steps + 3):
        if i == 3:
            sync(device)
            t0 = time.perf_counter()
        idx = torch.randint(len(xs), (batch,), generator=gen).to(device)
        for ph in model.phases:
            opts[ph].zero_grad(set_to_none=True)
            with autocast:
                loss = step_fn(xs[idx], ys[idx], ph).loss
            loss.backward()
            opts[ph].step()
    sync(device)
    rate = batch * steps / (time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else float("nan")
    return rate, peak


def best_batch(family, spec, net, x, y, *, batches, steps, device) -> tuple[int, float]:
    best, best_rate = batches[0], 0.0
    for b in batches:
        try:
            rate, peak = steps_rate(family, spec, net, x, y, batch=b, steps=steps, device=device)
        except torch.OutOfMemoryError:
            say(f"  {family} batch {b}: out of memory")
            break
        finally:
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        memory = f"{peak:,.0f} MB" if peak == peak else "not measured (no CUDA)"
        say(f"  {family} batch {b}: {rate:,.0f} images/s, peak {memory}")
        if rate < best_rate * 1.1:  # throughput no longer grows: the GPU is full
            break
        best, best_rate = b, rate
    return best, best_rate


def _train_on_ray(family, spec, net, x, y, batch, steps, device):
    import ray

    ids = ray.get_gpu_ids()
    rate, _ = steps_rate(family, spec, net, x, y, batch=batch, steps=steps, device=device)
    return {"family": family, "images": batch * steps, "rate": rate, "gpus": ids}


def concurrent_vs_sequential(jobs, *, steps, device, gpus: float) -> dict[str, float]:
    """Total training images/s of every family at once on one GPU (fractional Ray GPUs)
    against one after another in the same Ray."""
    import ray

    from genzoo.flows.cluster import local_ray_env

    share = 1 / len(jobs)
    # a Ray of its own (never the one RAY_ADDRESS names), with one GPU to share, set up as
    # genzoo's own (token authentication, an owner-only token, loopback)
    with local_ray_env():  # (the whole session: its workers read the same settings)
        ray.init(address="local", num_cpus=max(len(jobs), 1), num_gpus=gpus, include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)  # fmt: skip
        try:
            task = ray.remote(_train_on_ray).options(num_gpus=share * gpus, num_cpus=1)
            ray.get(task.remote(*jobs[0], 3, device))  # a warm worker
            t0 = time.perf_counter()
            for job in jobs:
                ray.get(task.remote(*job, steps, device))
            seq = time.perf_counter() - t0
            say(f"  one after another: {seq:.1f} s")
            t0 = time.perf_counter()
            done = ray.get([task.remote(*job, steps, device) for job in jobs])
            par = time.perf_counter() - t0
            ids = sorted({int(i) for d in done for i in d["gpus"]})
            say(f"  all at once: {par:.1f} s on Ray's GPU ids {', '.join(map(str, ids)) or 'none'}")
        finally:
            ray.shutdown()
    images = sum(job[5] * steps for job in jobs)
    return {"sequential": images / seq, "concurrent": images / par, "ratio": seq / par}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks the script, not the GPU")
    ap.add_argument("--families", nargs="+", default=None)
    ap.add_argument("--steps", type=int, default=None, help="timed steps per measurement")
    args = ap.parse_args(argv)
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here (run with --dry-run to check the script on CPU)")
    device = "cpu" if dry else "cuda"
    steps = args.steps or (2 if dry else 30)
    batches = [8, 16] if dry else [64, 256, 1024, 4096]
    params, x, y, spec = train_split()
    families = args.families or list(params.families)
    say(f"machine: {machine()}; device {device}{' (dry run)' if dry else ''}")
    if device == "cuda":
        gib = torch.cuda.get_device_properties(0).total_memory / 2**30
        say(f"GPU: {torch.cuda.get_device_name(0)}, {gib:.0f} GiB")
    out: dict = {"batch": {}, "precision": {}, "concurrent": None}

    say("1. batch size that fills the GPU (training images/s)")
    for f in families:
        out["batch"][f] = best_batch(
            f, spec, params.net_config(f), x, y, batches=batches, steps=steps, device=device
        )
        say(f"{f}: best batch {out['batch'][f][0]} at {out['batch'][f][1]:,.0f} images/s")

    say("2. bf16 autocast and torch.compile at that batch (images/s, and against fp32)")
    for f in families:
        b, fp32 = out["batch"][f]
        row = {"fp32": fp32}
        for name, kw in (("bf16", {"bf16": True}), ("compile", {"compile_": True})):
            if name == "compile" and dry:
                continue  # compiling takes minutes on CPU; the dry run checks the path up to here
            try:
                row[name], _ = steps_rate(
                    f, spec, params.net_config(f), x, y, batch=b, steps=steps, device=device, **kw
                )
            except Exception as e:  # a family an option does not support: say so, go on
                say(f"  {f} {name}: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
                continue
        out["precision"][f] = row
        say(f"{f}: " + ", ".join(f"{k} {v:,.0f} ({v / fp32:.2f}x)" for k, v in row.items()))

    n = len(families)
    say(f"3. all {n} families at once on one GPU (Ray, num_gpus 1/{n} each) vs one after another")
    jobs = [(f, spec, params.net_config(f), x, y, out["batch"][f][0]) for f in families]
    r = concurrent_vs_sequential(jobs, steps=steps, device=device, gpus=1.0)
    out["concurrent"] = r
    say(f"sequential {r['sequential']:,.0f} images/s, concurrent {r['concurrent']:,.0f} images/s: "
        f"{r['ratio']:.2f}x (target 3x)")  # fmt: skip

    print("\n| family | best batch | fp32 images/s | bf16 | torch.compile |\n|---|---|---|---|---|")
    for f in families:
        row = out["precision"].get(f, {})
        cells = [f"{row[k] / row['fp32']:.2f}x" if k in row else "–" for k in ("bf16", "compile")]
        print(f"| {f} | {out['batch'][f][0]} | {row.get('fp32', 0):,.0f} | {cells[0]} | {cells[1]} |")
    say("done")
    return out


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
