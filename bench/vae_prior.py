"""The VAE's sampling prior: N(0, I) against the ex-post prior, in every judge's feature space.

    python bench/vae_prior.py --run <folder of a finished `genzoo run`>   # e.g. bench/families.py's
    python bench/vae_prior.py --run <folder> --temperatures 0.8 1.0

One trained VAE (the run's), sampled with ``prior: standard`` (N(0, T^2 I)) and with ``prior:
ex_post`` (a Gaussian per class fitted to the training split's posterior means, Ghosh et al.
2020), at each temperature T; the same weights, so only the prior differs. Each scored as the
evaluate stage scores a family (its seeds and samples per class): Fréchet distance (and the
classifier judges' class accuracy) in every space, precision and recall in the evaluator's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import ROOT, machine  # noqa: E402

from genzoo import models  # noqa: E402
from genzoo.models.evaluator import load_evaluator  # noqa: E402
from genzoo.models.judges import load_judges  # noqa: E402
from genzoo.tasks.config import load_params  # noqa: E402
from genzoo.tasks.data import load_split  # noqa: E402
from genzoo.tasks.evaluate import _measure  # noqa: E402
from genzoo.tasks.layout import evaluator_dir, family_dir  # noqa: E402
from genzoo.tasks.quality import real_features  # noqa: E402
from genzoo.tasks.sample import draw  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished run's folder (runs/ and prepared/ under it)")
    ap.add_argument("--temperatures", nargs="+", type=float, default=[0.8, 1.0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    run = Path(args.run)
    folders = [f"run.runs_dir={run}/runs", f"data.prepared_dir={run}/prepared"]
    params = load_params(ROOT / "params.yaml", folders)
    torch.set_num_threads(args.threads)
    folder = evaluator_dir(params)
    net, judges = load_evaluator(folder / "evaluator.json"), load_judges(folder / "judges.npz")
    real = real_features(folder)
    trained = models.load(family_dir(params, "vae") / "model.json")
    x, y, _ = load_split(params.data.prepared_dir, "train")
    e = params.evaluate
    print(f"machine: {machine()}\n{e.seeds} seeds x {e.samples_per_class} images per class against the "
          f"{len(real['test'])} test images; FD (class accuracy) per space\n")  # fmt: skip
    spaces = ["cnn", "pca", "mlp", "lenet", "random_cnn"]
    print("| prior | T | " + " | ".join(spaces) + " | precision | recall | seconds |")
    print("|---" * (len(spaces) + 5) + "|")
    for t in args.temperatures:
        for prior in ("standard", "ex_post"):
            cfg = trained.cfg.model_copy(update={"temperature": t, "prior": prior})
            vae = models.build("vae", trained.spec, cfg)
            vae.load_state_dict(trained.state_dict(), strict=False)  # the run's weights; ex_post's buffers
            vae.eval().after_training(x, y)  # fits the ex-post prior (standard: nothing)
            t0 = time.perf_counter()

            def sample(labels, seed, m=vae):
                return draw(m, len(labels), labels=labels, seed=seed, batch=500)[0]

            s = _measure(params, net, judges, real, sample, trained.spec.num_classes, None)
            cells = []
            for name in spaces:
                r = s["spaces"][name]
                acc = f" ({100 * r['class_accuracy']:.1f}%)" if "class_accuracy" in r else ""
                cells.append(f"{r['fd']:.3f}{acc}")
            tail = f" | {s['precision']:.3f} | {s['recall']:.3f} | {time.perf_counter() - t0:.0f} |"
            print(f"| {prior} | {t:g} | " + " | ".join(cells) + tail, flush=True)


if __name__ == "__main__":
    main()
