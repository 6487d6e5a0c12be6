"""Where a training step's time goes on this CPU, and what the usual CPU speed-ups give: per
family (params.yaml's networks and batch size) and for the usefulness CNN (the classifier the
usefulness measurement and the teachers train dozens of times), one thread.

    python bench/kernels.py                    # 40 steps, median of 3
    python bench/kernels.py --steps 80 --repeats 5 --families gan vae

Columns: the bare loop's milliseconds per step (AdamW as genzoo builds it, PyTorch's default on
CPU: a loop over the tensors); the share of that step spent in convolutions, forward and
backward (torch.profiler); then the same loop with one change each, as a ratio of times (below
1: faster): AdamW's foreach implementation (every tensor of a step in one call) and whether its
weights equal the default's bit for bit after the same steps, AdamW's fused kernel
(``fused=True``), channels-last tensors, bfloat16 autocast (AMX / AVX-512 BF16 where the CPU has
them), and for the CNN ten networks trained at once as one batched ensemble (``torch.func.vmap``
over stacked weights, per network). Variants alternate within each repeat, in reverse order
every other repeat, so drifts of the machine and the first variant's warm-up hit them alike.
Figures, not switches: genzoo trains in float32 with the default kernels.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import step_bench  # noqa: E402

from genzoo import models  # noqa: E402
from genzoo.models.evaluator import Evaluator, augment  # noqa: E402

VARIANTS = ("fp32", "foreach", "fused", "channels_last", "bf16")
# AdamW's implementation per variant: PyTorch's CPU default (a loop over tensors, as genzoo builds it),
# foreach (every tensor of a step in one call), fused
OPTIMIZER = {v: {"foreach": {"foreach": True}, "fused": {"fused": True}}.get(v, {}) for v in VARIANTS}


def family_step(family, params, x, y, spec, variant: str):
    """A closure running one bare training step of ``family`` in ``variant``."""
    torch.manual_seed(0)
    model = models.build(family, spec, params.net_config(family)).train()
    cfg = params.train_config(family)
    if variant == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opts = {ph: torch.optim.AdamW(model.phase_parameters(ph), lr=1e-4, **OPTIMIZER[variant])
            for ph in model.phases}  # fmt: skip
    gen = torch.Generator().manual_seed(0)

    def step():
        idx = torch.randint(len(x), (cfg.batch_size,), generator=gen)
        for ph in model.phases:
            opts[ph].zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16"):
                loss = model.training_step(x[idx], y[idx], ph).loss
            loss.backward()
            opts[ph].step()

    step.net = model
    return step


def cnn_step(params, x, y, spec, variant: str, members: int = 1):
    """One step of the usefulness CNN (classical augmentation); ``members`` > 1: that many
    networks at once, vmapped over stacked weights (each its own batch)."""
    cfg = params.usefulness.cnn
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    b = cfg.batch_size
    if members == 1:
        net = Evaluator(spec, cfg).train()
        if variant == "channels_last":
            net = net.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, **OPTIMIZER[variant])

        def step():
            idx = torch.randint(len(x), (b,), generator=gen)
            xb = augment(x[idx], cfg, gen)
            if variant == "channels_last":
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16"):
                loss = F.cross_entropy(net(xb), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step.net = net
        return step
    nets = [Evaluator(spec, cfg).train() for _ in range(members)]
    weights, buffers = torch.func.stack_module_state(nets)
    base = copy.deepcopy(nets[0]).to("meta")
    batched = torch.func.vmap(
        lambda w, bu, xb: torch.func.functional_call(base, (w, bu), (xb,)), randomness="different"
    )
    opt = torch.optim.AdamW(weights.values(), lr=cfg.lr)

    def step():
        idx = torch.randint(len(x), (members, b), generator=gen)
        xb = augment(x[idx.flatten()], cfg, gen).view(members, b, *x.shape[1:])
        logits = batched(weights, buffers, xb)
        loss = F.cross_entropy(logits.flatten(0, 1), y[idx].flatten(), label_smoothing=0.05) * members
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def same_weights(a, b) -> bool:
    """Whether two stepped loops' networks hold equal weights, bit for bit."""
    pa, pb = a.net.state_dict(), b.net.state_dict()
    return all(torch.equal(pa[k], pb[k]) for k in pa)


def timed(step, steps: int, per: int = 1) -> float:
    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps / per * 1000  # ms per step (per network)


def conv_share(step, steps: int = 10) -> float:
    from torch.profiler import profile

    with profile() as prof:
        for _ in range(steps):
            step()
    rows = prof.key_averages()
    total = sum(r.self_cpu_time_total for r in rows)
    conv = sum(r.self_cpu_time_total for r in rows if "convolution" in r.key)
    return conv / total


def main() -> None:
    args, params, x, y, spec = step_bench(__doc__, steps=40)
    print(
        "\n| network | fp32 ms/step | convolutions | foreach AdamW | same weights | fused AdamW "
        "| channels-last | bf16 autocast | ten at once (vmap) |\n|---|---|---|---|---|---|---|---|---|"
    )
    names = args.families or list(params.families)
    rows = [(f, lambda v, f=f: family_step(f, params, x, y, spec, v)) for f in names]
    rows.append(("usefulness CNN", lambda v: cnn_step(params, x, y, spec, v)))
    for name, make in rows:
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        ensemble: list[float] = []
        same = True
        for r in range(args.repeats):
            stepped = {}
            for v in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:  # first and last alike
                stepped[v] = make(v)
                times[v].append(timed(stepped[v], args.steps))
            same &= same_weights(stepped["foreach"], stepped["fp32"])
            if name == "usefulness CNN":
                ensemble.append(timed(cnn_step(params, x, y, spec, "fp32", members=10), args.steps, per=10))
        base = statistics.median(times["fp32"])
        share = conv_share(make("fp32"))
        ratios = [f"{statistics.median(times[v]) / base:.2f}x" for v in VARIANTS[1:]]
        ratios.insert(1, "yes" if same else "**no**")
        vm = f"{statistics.median(ensemble) / base:.2f}x" if ensemble else ""
        print(f"| {name} | {base:.1f} | {100 * share:.0f}% | {' | '.join(ratios)} | {vm} |", flush=True)


if __name__ == "__main__":
    main()
