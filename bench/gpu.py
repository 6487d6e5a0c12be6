"""Training and sampling speed of every family on CUDA against the CPU of the same machine,
with the architectures and training settings of params.yaml (mixed precision as `train.amp`).

    python bench/gpu.py                       # 200 timed steps per family, 3 repeats
    python bench/gpu.py --steps 100 --repeats 1 --devices cpu

Per family and device: training steps/s (median over --repeats fits of --steps steps, each
after a short warm-up fit), sampling images/s (1,000 images, median over --repeats), and the
CUDA/CPU ratios. Needs no service (no MLflow, Ray or Prefect): only torch and the models.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import machine, train_split  # noqa: E402

from genzoo import models  # noqa: E402
from genzoo.models.trainer import fit  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(params, family: str, x, y, spec, device: str, steps: int, repeats: int) -> dict[str, float]:
    cfg = params.train_config(family).model_copy(
        update={"steps": steps, "checkpoint_every": 10**9, "eval_every": 0, "warmup_steps": 0}
    )
    net = params.net_config(family)

    def one(n: int, seed: int):
        model = models.build(family, spec, net)
        t0 = time.perf_counter()
        trained, result = fit(
            model, x, y, cfg.model_copy(update={"steps": n}), seed=seed, device=device, progress=False
        )
        _sync(device)
        return trained, n / (time.perf_counter() - t0), result

    one(10, 0)  # warm-up: kernels, allocator, threads
    rates, model = [], None
    for r in range(repeats):
        model, rate, result = one(steps, r)
        if result.bad_steps:
            print(f"  {family} on {device}: {result.bad_steps} non-finite steps skipped")
        rates.append(rate)
    sampling = []
    with torch.inference_mode():
        model.sample(10, generator=torch.Generator().manual_seed(0))
        for r in range(repeats):
            t0 = time.perf_counter()
            s = model.sample(1000, generator=torch.Generator().manual_seed(r))
            _sync(device)
            sampling.append(1000 / (time.perf_counter() - t0))
            assert torch.isfinite(s).all(), f"{family} on {device}: non-finite samples"
    return {"steps_per_s": statistics.median(rates), "images_per_s": statistics.median(sampling)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    ap.add_argument("--families", nargs="+", default=None)
    args = ap.parse_args()
    if "cuda" in args.devices and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run with --devices cpu")
    params, x, y, spec = train_split()
    families = args.families or list(params.families)
    print(f"machine: {machine()}; torch threads on CPU: {torch.get_num_threads()}")
    rows = {}
    for family in families:
        rows[family] = {
            d: measure(params, family, x, y, spec, d, args.steps, args.repeats) for d in args.devices
        }
        print(family, rows[family], flush=True)
    head = "| family | " + " | ".join(f"{d} steps/s | {d} images/s" for d in args.devices)
    ratio = "cuda" in args.devices and "cpu" in args.devices
    print(head + (" | cuda/cpu training | cuda/cpu sampling |" if ratio else " |"))
    print("|---" * (1 + 2 * len(args.devices) + 2 * ratio) + "|")
    for family, r in rows.items():
        cells = [f"{r[d]['steps_per_s']:.1f} | {r[d]['images_per_s']:,.0f}" for d in args.devices]
        if ratio:
            cells.append(f"{r['cuda']['steps_per_s'] / r['cpu']['steps_per_s']:.2f}x")
            cells.append(f"{r['cuda']['images_per_s'] / r['cpu']['images_per_s']:.2f}x")
        print(f"| {family} | " + " | ".join(cells) + " |")
    print(f"{args.steps} steps per fit, median of {args.repeats}; architectures and batch size: params.yaml")


if __name__ == "__main__":
    main()
