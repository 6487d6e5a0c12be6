"""The trainer's overhead: `models.trainer.fit` against a bare PyTorch loop of the same model,
batch size, steps and optimizers, per family.

    python bench/trainer_overhead.py                  # 150 steps, median of 3, one thread
    python bench/trainer_overhead.py --steps 300 --repeats 5

Bare loop: ``zero_grad(); loss.backward(); step()`` per phase with AdamW, seeded batches, nothing
else. By hand: the bare loop plus the same recipe the trainer follows, written inline as a
practitioner would (gradient clipping, the warm-up + cosine LambdaLR, the EMA copy with its
short early memory): what is left between it and the trainer is the trainer's bookkeeping
(non-finite guards, buffer snapshots, the log window, the batch-order state). Trainer: ``fit``
with params.yaml's train block (warm-up and cosine schedule, gradient clipping, EMA where the
family keeps one, non-finite checks, the per-step log window) with checkpoints and validation
off (they are periodic I/O and evaluation, not loop overhead), and without the model's
after-training hook (the VAE's ex-post prior: one encoder pass over the training split, not a step
of the loop). The three alternate within each repeat and take turns at going first (a Latin
square: each place in the order as often), so drifts of the machine and the first-run place hit
them alike; the ratios are medians of each repeat's own ratio.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import step_bench  # noqa: E402

from genzoo import models  # noqa: E402
from genzoo.models.layers import ema_update  # noqa: E402
from genzoo.models.trainer import _lr_lambda, fit  # noqa: E402


def loop(family, spec, net, cfg, x, y, steps: int, recipe: bool) -> float:
    """The bare loop; with ``recipe``, plus clipping, the schedule and the EMA, written inline."""
    torch.manual_seed(0)
    model = models.build(family, spec, net).train()
    cfg = cfg.model_copy(update={"steps": steps})
    opts = {
        ph: torch.optim.AdamW(model.phase_parameters(ph), lr=cfg.phase_lr.get(ph, cfg.lr), betas=cfg.betas,
                              weight_decay=cfg.weight_decay)
        for ph in model.phases
    }  # fmt: skip
    scheds = {ph: torch.optim.lr_scheduler.LambdaLR(o, _lr_lambda(cfg)) for ph, o in opts.items()}
    keeps_ema = recipe and cfg.ema_decay
    ema = copy.deepcopy(model).eval().requires_grad_(False) if keeps_ema else None
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(x), (cfg.batch_size,), generator=gen)
        for ph in model.phases:
            opts[ph].zero_grad(set_to_none=True)
            model.training_step(x[idx], y[idx], ph).loss.backward()
            if recipe and cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.phase_parameters(ph), cfg.grad_clip)
            opts[ph].step()
            if recipe:
                scheds[ph].step()
        if ema is not None:
            ema_update(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
    return time.perf_counter() - t0


def trainer(family, spec, net, cfg, x, y, steps: int) -> float:
    torch.manual_seed(0)
    model = models.build(family, spec, net)
    model.after_training = lambda x, y: None  # (not a step of the loop; the bare loop has none)
    run = cfg.model_copy(update={"steps": steps, "eval_every": 0, "checkpoint_every": 10**9})
    _, result = fit(model, x, y, run, seed=0, progress=False)
    return result.seconds


def main() -> None:
    args, params, x, y, spec = step_bench(__doc__, steps=150)
    print(
        "\n| family | bare loop (s) | same recipe by hand (s) | trainer (s) | trainer vs bare "
        "| trainer vs by hand |\n|---|---|---|---|---|---|"
    )
    for family in args.families or list(params.families):
        cfg, net = params.train_config(family), params.net_config(family)
        loop(family, spec, net, cfg, x, y, 5, recipe=False)  # warm-up
        same = (family, spec, net, cfg, x, y, args.steps)
        runs = {
            "bare": lambda same=same: loop(*same, recipe=False),
            "hand": lambda same=same: loop(*same, recipe=True),
            "trainer": lambda same=same: trainer(*same),
        }
        seconds: dict[str, list[float]] = {k: [] for k in runs}
        order = list(runs)
        for r in range(args.repeats):
            for k in order[r % 3 :] + order[: r % 3]:  # each goes first in turn
                seconds[k].append(runs[k]())
        b, h, t = seconds["bare"], seconds["hand"], seconds["trainer"]
        vs_bare = statistics.median(ti / bi - 1 for ti, bi in zip(t, b, strict=True))
        vs_hand = statistics.median(ti / hi - 1 for ti, hi in zip(t, h, strict=True))
        print(
            f"| {family} | {statistics.median(b):.2f} | {statistics.median(h):.2f} "
            f"| {statistics.median(t):.2f} | {100 * vs_bare:+.1f}% | {100 * vs_hand:+.1f}% |",
            flush=True,
        )


if __name__ == "__main__":
    main()
