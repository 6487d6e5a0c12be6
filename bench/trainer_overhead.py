"""The trainer's overhead: `models.trainer.fit` against a bare PyTorch loop of the same model,
batch size, steps and optimizers, per family.

    python bench/trainer_overhead.py                  # 150 steps, median of 3, one thread
    python bench/trainer_overhead.py --steps 300 --repeats 5

Bare loop: ``zero_grad(); loss.backward(); step()`` per phase with AdamW, seeded batches, nothing
else. Trainer: ``fit`` with params.yaml's train block (warm-up and cosine schedule, gradient
clipping, EMA where the family keeps one, non-finite checks, the per-step log window) with
checkpoints and validation off (they are periodic I/O and evaluation, not loop overhead).
The two alternate within each repeat, so drifts of the machine hit both alike.
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


def bare(family, spec, net, cfg, x, y, steps: int) -> float:
    torch.manual_seed(0)
    model = models.build(family, spec, net).train()
    opts = {
        ph: torch.optim.AdamW(model.phase_parameters(ph), lr=cfg.phase_lr.get(ph, cfg.lr), betas=cfg.betas,
                              weight_decay=cfg.weight_decay)
        for ph in model.phases
    }  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(len(x), (cfg.batch_size,), generator=gen)
        for ph in model.phases:
            opts[ph].zero_grad(set_to_none=True)
            model.training_step(x[idx], y[idx], ph).loss.backward()
            opts[ph].step()
    return time.perf_counter() - t0


def trainer(family, spec, net, cfg, x, y, steps: int) -> float:
    torch.manual_seed(0)
    model = models.build(family, spec, net)
    run = cfg.model_copy(update={"steps": steps, "eval_every": 0, "checkpoint_every": 10**9})
    _, result = fit(model, x, y, run, seed=0, progress=False)
    return result.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--families", nargs="+", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    params, x, y, spec = train_split()
    print(f"machine: {machine()}; 1 thread; {args.steps} steps, median of {args.repeats}")
    print("\n| family | bare loop (s) | trainer (s) | overhead |\n|---|---|---|---|")
    for family in args.families or list(params.families):
        cfg, net = params.train_config(family), params.net_config(family)
        bare(family, spec, net, cfg, x, y, 5)  # warm-up
        b, t = [], []
        for _ in range(args.repeats):
            b.append(bare(family, spec, net, cfg, x, y, args.steps))
            t.append(trainer(family, spec, net, cfg, x, y, args.steps))
        mb, mt = statistics.median(b), statistics.median(t)
        print(f"| {family} | {mb:.2f} | {mt:.2f} | {100 * (mt / mb - 1):+.1f}% |", flush=True)


if __name__ == "__main__":
    main()
