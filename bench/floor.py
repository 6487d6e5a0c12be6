"""The real-vs-real floor at the families' sample size against the whole training split, in
every judge's feature space: how much of a family's distance from the floor is only the
Fréchet distance's small-sample bias.

    python bench/floor.py --runs <a finished run's runs/ folder> [--draws 20]

A family is scored on ``evaluate.samples_per_class`` images per class (1,000 on digits) against the real
test split; the evaluator stage's floor is the same figure for a draw of real training images of
that size and balance (``tasks.evaluate.floor_draw``). This prints, per space, the Fréchet
distance of the whole training split, the mean and spread of ``--draws`` draws of a family's
size, and the ratio: the part of the floor that is sample size, not distribution.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import machine  # noqa: E402

from genzoo.metrics.quality import frechet_distance  # noqa: E402
from genzoo.tasks.data import load_split  # noqa: E402
from genzoo.tasks.evaluate import floor_draw  # noqa: E402
from genzoo.tasks.quality import real_features  # noqa: E402

SPACES = ("cnn", "pca", "mlp", "lenet", "random_cnn")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, required=True, help="a run's runs/ folder (after its evaluator)")
    ap.add_argument("--prepared", type=Path, help="its prepared data (default: data/prepared beside --runs)")
    ap.add_argument("--draws", type=int, default=20)
    args = ap.parse_args()
    folder = args.runs / "evaluation" / "evaluator"
    real = real_features(folder)
    if real is None:
        raise SystemExit(f"{folder}: no features.npz (run the evaluator stage first)")
    protocol = json.loads((folder / "reference.json").read_text())["protocol"]
    per_class = protocol["samples_per_class"]
    _, y, _ = load_split(args.prepared or args.runs.parent / "data" / "prepared", "train")
    labels = y.numpy()
    print(f"# {machine()}")
    print(f"training split {len(labels)} images; a family's draw {per_class} per class; {args.draws} draws\n")
    print("| space | whole training split | a family's size (mean ± sd) | ratio |")
    print("|---|---|---|---|")
    for space in SPACES:
        key = "train" if space == "cnn" else f"{space}.train"
        train, test = real[key], real["test" if space == "cnn" else f"{space}.test"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy's sqrtm on near-singular covariances
            whole = frechet_distance(train, test)
            draws = [
                frechet_distance(train[floor_draw(labels, per_class, s)], test) for s in range(args.draws)
            ]
        m = float(np.mean(draws))
        print(f"| {space} | {whole:.4f} | {m:.4f} ± {np.std(draws, ddof=1):.4f} | {m / whole:.3f} |")


if __name__ == "__main__":
    main()
