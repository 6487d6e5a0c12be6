"""DDIM with few steps against the full DDPM chain: time per image and Fréchet distance.

    python bench/ddim.py                          # trains params.yaml's DDPM + evaluator first
    python bench/ddim.py --run /tmp/genzoo-bench/run0   # a finished `genzoo run` folder
    python bench/ddim.py --run .                  # this checkout, after `genzoo run`
    python bench/ddim.py --steps 10 20 50 --images 500 --seeds 3

One trained DDPM (params.yaml's), sampled with DDIM (eta = 0, Song et al. eq. 12) on 10 to
100 of its T timesteps, and with the full ancestral chain of Ho et al.'s Algorithm 2 (all T
steps, sigma_t^2 = beta~_t: DDIM's eta = 1 on every step). For each: seconds per image (one
thread, batches of --images) and the Fréchet distance to the real test split in two feature
spaces: the evaluator's (the CNN genzoo trains) and the pixels' first 30 principal components
of the training split (a space genzoo's own classifier has no part in). Times: the median
over --seeds, after one untimed draw (first-call allocations); distances: the mean. The floor
is real against real at the samplers' size: per seed, --images training images drawn at random
against the test split (a Fréchet distance estimated from fewer images is larger: the whole
training split against the test split would set the floor below what 500 real images score).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import ROOT, machine  # noqa: E402

from genzoo.metrics.quality import frechet_distance  # noqa: E402
from genzoo.models.evaluator import load_evaluator  # noqa: E402
from genzoo.tasks.config import load_params  # noqa: E402
from genzoo.tasks.prepare import load_split, prepare  # noqa: E402
from genzoo.tasks.sample import load_model  # noqa: E402


def prepared_of(run: Path) -> Path:
    """A run folder's prepared data: ``prepared/`` in bench/families.py's run folders, else
    ``data/prepared/`` (a checkout or project after `genzoo run`)."""
    return run / "prepared" if (run / "prepared").is_dir() else run / "data" / "prepared"


def trained(run: Path | None, tmp: Path):
    """(params, ddpm, evaluator): from a finished run folder, or trained here on params.yaml."""
    if run is not None:
        params = load_params(ROOT / "params.yaml", [f"data.prepared_dir={prepared_of(run)}"])
        runs = run / "runs"
    else:
        from genzoo.tasks.evaluate import evaluator_stage
        from genzoo.tasks.train import train_family

        runs = tmp / "runs"
        params = load_params(
            ROOT / "params.yaml",
            [
                f"data.prepared_dir={tmp / 'prepared'}",
                f"run.runs_dir={runs}",
                f"run.checkpoints_dir={tmp / 'ckpt'}",
                "run.track=false",
            ],
        )
        prepare(params)
        t0 = time.perf_counter()
        train_family(params, "ddpm", progress=False)
        print(f"trained ddpm in {time.perf_counter() - t0:.0f} s", flush=True)
        evaluator_stage(params)
    model = load_model(runs / "ddpm" / "model.json")
    return params, model, load_evaluator(runs / "evaluation" / "evaluator" / "evaluator.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--run", type=Path, help="a finished `genzoo run` folder (runs/, and prepared/ or data/prepared/)"
    )
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        params, model, ev = trained(args.run, Path(tmp))
        x_train, _, _ = load_split(params.data.prepared_dir, "train")
        x_test, _, _ = load_split(params.data.prepared_dir, "test")
    flat = x_train.flatten(1).double()
    mean = flat.mean(0)
    basis = torch.linalg.svd(flat - mean, full_matrices=False).Vh[:30].T  # (D, 30)

    def spaces(x: torch.Tensor) -> dict[str, np.ndarray]:
        with torch.no_grad():
            feats = ev.embed(x)[0].numpy()
        return {"evaluator": feats, "pca30": ((x.flatten(1).double() - mean) @ basis).numpy()}

    real = spaces(x_test)
    floors: dict[str, list[float]] = {"evaluator": [], "pca30": []}
    for seed in range(args.seeds):  # real images as many as each sampler draws
        pick = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))[: args.images]
        for k, v in spaces(x_train[pick]).items():
            floors[k].append(frechet_distance(v, real[k]))
    floor = {k: statistics.mean(v) for k, v in floors.items()}
    T = model.cfg.timesteps
    settings = [(f"DDIM {s} steps", s, 0.0) for s in args.steps if s < T] + [
        (f"DDPM chain ({T} steps)", T, 1.0)
    ]
    print(
        f"machine: {machine()}; 1 thread; {args.images} images per seed, {args.seeds} seeds; "
        f"test split {len(x_test)} images"
    )
    print(
        f"floor ({min(args.images, len(x_train))} training images vs the test split, mean of {args.seeds} "
        f"draws): FD evaluator {floor['evaluator']:.4f}, pca30 {floor['pca30']:.3f}"
    )
    print("\n| sampler | steps | ms / image | FD (evaluator) | FD (pixels, PCA 30) |\n|---|---|---|---|---|")
    y = torch.arange(args.images) % model.spec.num_classes
    with torch.no_grad():  # untimed: the first call's allocations and kernel choices
        model.sample(min(args.images, 50), y[:50], generator=torch.Generator().manual_seed(0))
    for name, steps, eta in settings:
        model.cfg = model.cfg.model_copy(update={"sample_steps": steps, "eta": eta})
        secs, fd = [], {"evaluator": [], "pca30": []}
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            with torch.no_grad():
                x = model.sample(args.images, y, generator=torch.Generator().manual_seed(seed))
            secs.append(time.perf_counter() - t0)
            for k, v in spaces(x).items():
                fd[k].append(frechet_distance(v, real[k]))
        print(
            f"| {name} | {steps} | {1000 * statistics.median(secs) / args.images:.2f} | "
            f"{statistics.mean(fd['evaluator']):.4f} | {statistics.mean(fd['pca30']):.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
