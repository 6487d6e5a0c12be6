"""How varied each trained family's images are against the real ones, class by class: the
`variety` a synthetic dataset records (tasks/augment.py), here for every family of a finished
run, at a count of your choosing. Each family draws ``--per-class`` images of every class (seed
0); per class, the mean pixel distance between two of them over that between two real training
images of the class (at most 200 of each). About 1: the spread of the data; under 0.5 (the
dataset's warning): a model collapsed to a few images, or drawing blurred averages.

Run in the project whose models it reads (its params file names the prepared data and runs):

    python bench/variety.py [--params params.yaml] [--per-class 100] [--families vae,gan]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import machine  # noqa: E402


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml", help="the project's params file")
    ap.add_argument("--per-class", type=int, default=100, help="images drawn of each class (5 to 200)")
    ap.add_argument("--families", help="comma-separated (default: every trained family)")
    return ap


def measure(params, families: list[str], per_class: int) -> dict[str, dict[str, float]]:
    """family -> class name -> variety (tasks.augment.variety), from ``per_class`` draws of each."""
    import genzoo
    from genzoo.tasks.augment import class_names, variety

    out: dict[str, dict[str, float]] = {}
    for family in families:
        model = genzoo.load_model(family, params.run.runs_dir)
        k = model.spec.num_classes
        # the classes it was trained on: a dataset draws none of a class left out (train.exclude_classes)
        seen = [c for c in range(k) if torch.isfinite(model.log_class_prior[c])]
        drawn = [genzoo.sample(model, per_class, label=c, seed=0) for c in seen]
        x, y = torch.cat([d[0] for d in drawn]), torch.cat([d[1] for d in drawn])
        src = np.full(len(y), family)
        out |= variety(params, x, y, src, class_names(params, k))
    return out


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from genzoo.tasks.augment import VARIETY_FLOOR
    from genzoo.tasks.config import load_params
    from genzoo.tasks.layout import family_dir, trained_families

    if not 5 <= args.per_class <= 200:
        print(f"--per-class {args.per_class}: give 5 to 200 (at most 200 a class are read)", file=sys.stderr)
        return 2
    params = load_params(args.params, warn=False)
    every = [f for f in params.families if (family_dir(params, f) / "model.json").exists()]
    if not (args.families or every):
        print(f"no trained family under {params.run.runs_dir} (run.runs_dir of {args.params})",
              file=sys.stderr)  # fmt: skip
        return 2
    families = trained_families(params, args.families or every)
    got = measure(params, families, args.per_class)
    print(f"{machine()}; {args.per_class} images of each class, seed 0; the dataset warns under "
          f"{VARIETY_FLOOR}")  # fmt: skip
    print("| family | min | median | max | classes under the floor |")
    print("|---|---|---|---|---|")
    for family in families:
        if not (per := got.get(family)):  # every class under 5 real images
            print(f"| {family} | | | | no class with 5 real images to compare with |")
            continue
        v = list(per.values())
        low = ", ".join(name for name, r in per.items() if r < VARIETY_FLOOR) or "none"
        print(f"| {family} | {min(v):.2f} | {statistics.median(v):.2f} | {max(v):.2f} | {low} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
