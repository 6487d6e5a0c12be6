"""How cost grows: time and peak memory per family and per stage against the number of images
and against their size.

    python bench/scaling.py                       # both axes, every family
    python bench/scaling.py --axis n --families vae gan
    python bench/scaling.py --plot bench/figures/scaling.png

Datasets (built here, written as the `.npz` a user would point `data.source` at):
- number of images, 8x8: digits (1,797), x10 and x50 by shifting each digit up to 3 pixels
  (zero fill), and a 60,000-image 28x28 set (digits upsampled and shifted);
- image size, 2,000 images: 8x8, 28x28, 32x32x3, 64x64x3 (digits upsampled, RGB tinted per
  class).

Every figure comes from a fresh process (`--one`), so its peak resident memory (imports and
data included) is its own; each is the median of --repeats such processes. Per dataset: the
stages whose cost depends on the data, run as the pipeline runs them (`prepare`: load,
quantize, split, write; the augment stage's near-copy check: the copy radius plus 1,000 drawn
images against the training split; the evaluation's nearest-neighbour figures:
precision/recall/density/coverage of 1,000 images against the test split, and memorization: as
many of them and of the test images against the whole training split, in pixels, the widest
space; the PCA + KDE baseline's fit). Per family: seconds per training step
at params.yaml's batch and net (the difference between a run of --steps + 1 steps and one of a
single step, after a first run of one step: what a training does once, such as the VAE's
ex-post prior, an encoder pass over the whole training split, cancels out), torch's default
threads, and milliseconds per image of the test log-likelihood (labels marginalised, as the
train stage computes test bits/dim on up to ``train.likelihood_images`` test images: that
stage's part that grows with the data).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import ROOT, machine  # noqa: E402

from genzoo import models  # noqa: E402

FAMILIES = list(models.REGISTRY)  # the shipped five and any family added to the registry
STAGES = ["prepare", "near-copy check", "nearest-neighbour figures", "PCA + KDE fit"]


# ------------------------------------------------------------------------------ datasets


def _shifted(images: np.ndarray, copies: int, seed: int) -> np.ndarray:
    """``copies`` versions of every image, each moved by up to 3 pixels (zero fill); copy 0 is
    the image itself."""
    rng = np.random.default_rng(seed)
    out = [images]
    for _ in range(copies - 1):
        dy, dx = rng.integers(-3, 4, size=2)
        moved = np.roll(images, (int(dy), int(dx)), axis=(1, 2))
        if dy > 0:
            moved[:, :dy] = 0
        elif dy < 0:
            moved[:, dy:] = 0
        if dx > 0:
            moved[:, :, :dx] = 0
        elif dx < 0:
            moved[:, :, dx:] = 0
        out.append(moved)
    return np.concatenate(out)


def _resized(images: np.ndarray, size: int) -> np.ndarray:
    import torch

    x = torch.from_numpy(images.astype(np.float32))[:, None]
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear").round()[:, 0].numpy()


def datasets(out: Path, axis: str) -> list[tuple[str, Path]]:
    """(name, npz path) per dataset of ``axis``, written under ``out``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    img, lab = (d.images * 15).astype(np.uint8), d.target  # 0..240, 17 levels spread on 8 bits
    made = []

    def write(name: str, images: np.ndarray, labels: np.ndarray) -> None:
        path = out / f"{name.replace(' ', '_')}.npz"
        np.savez(path, images=images.astype(np.uint8), labels=labels)
        made.append((name, path))

    if axis == "n":
        write(f"digits ({len(img):,})", img, lab)
        for k in (10, 50):
            write(f"digits x{k} ({k * len(img):,})", _shifted(img, k, seed=k), np.tile(lab, k))
        k = -(-60_000 // len(img))
        big = _shifted(_resized(img, 28), k, seed=1)[:60_000]
        write("60,000 x 28x28", big, np.tile(lab, k)[:60_000])
    else:
        idx = np.resize(np.arange(len(img)), 2000)
        base, labels = img[idx], lab[idx]
        write("8x8", base, labels)
        write("28x28", _resized(base, 28), labels)
        tint = np.random.default_rng(0).uniform(0.3, 1.0, size=(10, 3))[labels][:, None, None, :]
        for s in (32, 64):
            write(f"{s}x{s}x3", _resized(base, s)[..., None] * tint, labels)
    return made


# ---------------------------------------------------------------------- one measurement


def _params(npz: Path, prepared: Path):
    from genzoo.tasks.config import load_params

    overrides = [f"data.source=npz:{npz}", f"data.prepared_dir={prepared}", "data.image_size=null"]
    return load_params(ROOT / "params.yaml", overrides)


def one(what: str, npz: Path, tmp: Path, steps: int, ll_images: int) -> dict[str, float]:
    import torch

    from genzoo.tasks.prepare import data_spec, load_split, prepare

    torch.manual_seed(0)
    params = _params(npz, tmp / "prepared")
    t0 = time.perf_counter()
    prepare(params)
    figures = {"prepare_seconds": time.perf_counter() - t0}
    x, y, manifest = load_split(params.data.prepared_dir, "train")
    spec = data_spec(manifest)
    figures["train_images"] = len(x)
    if what == "stages":
        from genzoo.metrics.quality import memorization, prdc
        from genzoo.models.classical import PCAKDE
        from genzoo.tasks.sample import copy_radius, nearest_train

        x_test, _, _ = load_split(params.data.prepared_dir, "test")
        flat, drawn = x.flatten(1), x[torch.randperm(len(x))[:1000]].flatten(1) + 0.01
        t0 = time.perf_counter()
        copy_radius(flat), nearest_train(drawn, flat)
        figures["near-copy check_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        test, fake = x_test.flatten(1).numpy(), drawn.numpy()
        # as the evaluation measures a draw: up to 2,000 samples and as many test images against the
        # whole training split, and the copy radius from up to 2,000 training images
        n = min(len(test), len(fake), 2000)
        prdc(test, fake), memorization(fake[:n], flat.numpy(), test[:n])
        figures["nearest-neighbour figures_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        PCAKDE(spec).fit(x, y, seed=0)
        figures["PCA + KDE fit_seconds"] = time.perf_counter() - t0
    else:
        from genzoo import models
        from genzoo.models.base import likelihood_estimator, log_likelihoods
        from genzoo.models.trainer import fit

        def trained(n: int):
            cfg = params.train_config(what).model_copy(
                update={"steps": n, "eval_every": 0, "checkpoint_every": n}
            )
            return fit(models.build(what, spec, params.net_config(what)), x, y, cfg, seed=0, progress=False)

        # a cold step with the training's fixed costs (allocations, first kernels, after-training work)
        figures["first_step_seconds"] = trained(1)[1].seconds
        once = trained(1)[1].seconds  # a warm step and the fixed costs
        model, result = trained(steps + 1)
        figures["step_seconds"] = (result.seconds - once) / steps
        figures["once_seconds"] = max(0.0, once - figures["step_seconds"])  # what a training does once
        figures["threads"] = torch.get_num_threads()
        if likelihood_estimator(model) is not None:
            x_test, _, _ = load_split(params.data.prepared_dir, "test")
            with torch.no_grad():  # untimed: the first pass's allocations
                log_likelihoods(model.eval(), x_test[:2])
            t0 = time.perf_counter()
            with torch.no_grad():
                log_likelihoods(model.eval(), x_test[:ll_images])
            figures["likelihood_ms_per_image"] = (
                1000 * (time.perf_counter() - t0) / min(ll_images, len(x_test))
            )
            figures["test_images"] = len(x_test)
    figures["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


def measure(what: str, npz: Path, steps: int, ll_images: int, repeats: int = 1) -> dict[str, float]:
    """``one`` in ``repeats`` fresh processes: each figure's median."""
    cmd = [sys.executable, __file__, "--one", what, str(npz), "--steps", str(steps),
           "--ll-images", str(ll_images)]  # fmt: skip
    runs = []
    for _ in range(repeats):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            return {
                "error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
            }
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return {k: float(np.median([f[k] for f in runs])) for k in runs[0]}


# ------------------------------------------------------------------------------ report


def plot(rows: dict[str, dict[str, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    n_rows = {k: v for k, v in rows.items() if v.get("_axis") == "n"}
    s_rows = {k: v for k, v in rows.items() if v.get("_axis") == "size"}
    if n_rows:  # the 8x8 sets as lines; the 28x28 set (other images) as separate points
        small = [v["stages"] for k, v in n_rows.items() if "28x28" not in k]
        big = [v["stages"] for k, v in n_rows.items() if "28x28" in k]
        ns, nb = [s.get("train_images", np.nan) for s in small], [s.get("train_images", np.nan) for s in big]
        for i, stage in enumerate(STAGES):
            key = f"{stage}_seconds"
            axes[0].plot(ns, [s.get(key, np.nan) for s in small], "o-", color=f"C{i}", label=f"{stage} (8x8)")
            axes[0].plot(nb, [s.get(key, np.nan) for s in big], "s", color=f"C{i}", mfc="none",
                         label=f"{stage} (28x28)")  # fmt: skip
        mem = [s.get("peak_mb", np.nan) / 1000 for s in small]
        axes[0].plot(ns, mem, "k--", label="peak memory (GB, 8x8)")
        axes[0].set(xscale="log", yscale="log", xlabel="training images", ylabel="seconds",
                    title="stages against the number of images")  # fmt: skip
        axes[0].legend(fontsize=7)
    if s_rows:
        pixels = [int(np.prod([int(p) for p in k.split("x")])) for k in s_rows]
        for fam in FAMILIES:
            axes[1].plot(pixels, [v.get(fam, {}).get("step_seconds", np.nan) for v in s_rows.values()], "o-",
                         label=fam)  # fmt: skip
            axes[2].plot(pixels, [v.get(fam, {}).get("peak_mb", np.nan) for v in s_rows.values()], "o-",
                         label=fam)  # fmt: skip
        axes[1].set(xscale="log", yscale="log", xlabel="values per image (C x H x W)", ylabel="seconds",
                    title="one training step (params.yaml batch)")  # fmt: skip
        axes[2].set(xscale="log", xlabel="values per image (C x H x W)", ylabel="MB",
                    title="peak memory (training and test likelihood)")  # fmt: skip
        axes[1].legend(fontsize=7)
    for ax in axes:  # minor ticks unlabelled: "2x10^3 3x10^3 ..." ran into each other
        ax.xaxis.set_minor_formatter(NullFormatter())
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def fmt(v, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return f"{v:,.0f}{unit}" if v >= 100 else f"{v:.3g}{unit}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--axis", choices=["n", "size", "both"], default="both")
    ap.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    ap.add_argument(
        "--steps", type=int, default=5, help="training steps timed per family (after one warm-up)"
    )
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per figure (their median)")
    ap.add_argument("--no-stages", action="store_true", help="the families' figures alone")
    ap.add_argument("--ll-images", type=int, default=32, help="test images whose log-likelihood is timed")
    ap.add_argument(
        "--plot",
        type=Path,
        default=ROOT / "runs" / "bench" / "scaling.png",
        help="the plot (README's is bench/figures/scaling.png: pass it to replace that)",
    )
    ap.add_argument("--one", nargs=2, metavar=("WHAT", "NPZ"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(one(args.one[0], Path(args.one[1]), Path(tmp), args.steps, args.ll_images)))
        return
    print(f"machine: {machine()}; {args.steps} training steps per family after one warm-up; "
          f"log-likelihood of {args.ll_images} test images; medians of {args.repeats} processes",
          flush=True)  # fmt: skip
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for axis in ("n", "size") if args.axis == "both" else (args.axis,):
            made = datasets(Path(tmp), axis)
            print(f"\n### {'number of images' if axis == 'n' else 'image size (2,000 images)'}\n")
            if not args.no_stages:
                print("| data | train split | " + " | ".join(STAGES) + " | peak memory |")
                print("|---|---|" + "---|" * (len(STAGES) + 1), flush=True)
            for name, npz in made:
                rows[name] = {"_axis": axis, "stages": {}}
                if args.no_stages:
                    continue
                s = rows[name]["stages"] = measure("stages", npz, args.steps, args.ll_images, args.repeats)
                cells = (
                    [fmt(s.get(f"{st}_seconds"), " s") for st in STAGES] if "error" not in s else [s["error"]]
                )
                print(f"| {name} | {fmt(s.get('train_images'))} | " + " | ".join(cells)
                      + f" | {fmt(s.get('peak_mb'), ' MB')} |", flush=True)  # fmt: skip
            print("\n| data | family | s / training step | once a training (s) | first step (s) "
                  "| log-likelihood ms / image | test split | peak memory |\n" + "|---" * 8 + "|",
                  flush=True)  # fmt: skip
            for name, npz in made:
                for fam in args.families:
                    f = measure(fam, npz, args.steps, args.ll_images, args.repeats)
                    rows[name][fam] = f
                    if "error" in f:
                        print(f"| {name} | {fam} | {f['error']} | | | | | |", flush=True)
                        continue
                    print(f"| {name} | {fam} | {fmt(f['step_seconds'])} | {fmt(f['once_seconds'])} | "
                          f"{fmt(f['first_step_seconds'])} | "
                          f"{fmt(f.get('likelihood_ms_per_image'))} | {fmt(f.get('test_images'))} | "
                          f"{fmt(f['peak_mb'], ' MB')} |", flush=True)  # fmt: skip
    plot(rows, args.plot)
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
