"""DDPM's variational bound from K timesteps: how far the estimate scatters, log against linear strata.

    python bench/ddpm_bound.py                                   # trains params.yaml's DDPM on digits first
    python bench/ddpm_bound.py --runs runs --prepared data/prepared   # a trained DDPM
    python bench/ddpm_bound.py --terms 10 50 100 --seeds 5 --images 60 --full

The bound sums T - 1 KL terms; ``bound_terms: K`` estimates that sum from one timestep drawn in
each of K strata, weighted by its stratum's width (unbiased). The KL terms fall roughly as
1 / t (the first few are tens of times the rest), so with equal-width strata (``linear``) the
first stratum's draw decides most of the figure; ``log`` strata (models/ddpm.py,
``bound_strata``) take the first timesteps one each and widen in a constant ratio. For each K
and spacing, over --seeds noise draws: the test split's mean bits/dim (the figure
``metrics.json`` reports, labels marginalised), its spread across draws (sd), the median
spread of one image's figure (what anomaly scores see), and the seconds per estimate (one
thread). ``--full`` also sums every term once: the figure both estimators aim at.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import ROOT, machine  # noqa: E402

from genzoo.tasks.config import load_params  # noqa: E402
from genzoo.tasks.prepare import load_split, prepare  # noqa: E402
from genzoo.tasks.sample import load_model  # noqa: E402


def trained(runs: Path | None, prepared: Path | None, overrides: list[str], tmp: Path):
    """(ddpm, prepared dir): a trained one, or params.yaml's trained here."""
    if runs is not None:
        if prepared is None:
            sys.exit("--runs needs --prepared (the data the model was trained on)")
        return load_model(runs / "ddpm" / "model.json"), prepared
    from genzoo.tasks.train import train_family

    params = load_params(
        ROOT / "params.yaml",
        [f"data.prepared_dir={tmp / 'prepared'}", f"run.runs_dir={tmp / 'runs'}",
         f"run.checkpoints_dir={tmp / 'ckpt'}", "run.track=false", *overrides],
    )  # fmt: skip
    prepare(params)
    t0 = time.perf_counter()
    train_family(params, "ddpm", progress=False)
    print(f"trained ddpm in {time.perf_counter() - t0:.0f} s", flush=True)
    return load_model(tmp / "runs" / "ddpm" / "model.json"), params.data.prepared_dir


@torch.inference_mode()
def bits(model, x: torch.Tensor, seed: int) -> torch.Tensor:
    """Each image's bound in bits/dim (labels marginalised), one noise draw ``seed``: (N,)."""
    nats = model.elbo(x, None, generator=torch.Generator().manual_seed(seed)).double()
    return -nats / (model.spec.dims * math.log(2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, help="a runs folder with a trained ddpm/")
    ap.add_argument("--prepared", type=Path, help="its prepared data folder (with --runs)")
    ap.add_argument("-o", dest="overrides", action="append", default=[], help="params override when training")
    ap.add_argument("--terms", type=int, nargs="+", default=[10, 50, 100])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--images", type=int, default=200, help="test images (the first N)")
    ap.add_argument("--full", action="store_true", help="also the sum of every term (T - 1 passes)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model, prepared = trained(args.runs, args.prepared, args.overrides, Path(tmp))
        x, _, _ = load_split(prepared, "test")
    x = x[: args.images]
    T = model.cfg.timesteps
    print(f"{machine()}; {len(x)} test images {tuple(x.shape[1:])}, T = {T}, {args.seeds} noise draws each")
    print("| K | strata | mean bits/dim | sd of the mean | median sd of one image | s per estimate |")
    print("|---|---|---|---|---|---|")
    for k in args.terms:
        for spacing in ("linear", "log"):
            model.cfg = model.cfg.model_copy(update={"bound_terms": k, "bound_spacing": spacing})
            t0 = time.perf_counter()
            draws = torch.stack([bits(model, x, s) for s in range(args.seeds)])  # (seeds, N)
            sec = (time.perf_counter() - t0) / args.seeds
            means = draws.mean(1).tolist()
            print(f"| {k} | {spacing} | {statistics.mean(means):.3f} | {statistics.stdev(means):.3f} | "
                  f"{draws.std(0).median().item():.3f} | {sec:.1f} |", flush=True)  # fmt: skip
    if args.full:
        model.cfg = model.cfg.model_copy(update={"bound_terms": 0})
        t0 = time.perf_counter()
        full = bits(model, x, 0).mean().item()
        print(f"| {T - 1} (every term) | - | {full:.3f} | - | - | {time.perf_counter() - t0:.1f} |")


if __name__ == "__main__":
    main()
