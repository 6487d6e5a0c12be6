"""Anomaly detection by likelihood on the trained families: AUROC of the likelihood, the
typicality and the likelihood-ratio scores against every benchmark set, as a Markdown table.

    python bench/anomaly.py                  # the families in params.yaml's detect block
    python bench/anomaly.py --families pixelcnn,ddpm
    python bench/anomaly.py --holdout 0 1    # also retrain each family without class 0, then 1

Uses the models in runs/ (train them first: `make run`); the held-out retrainings are cached
in runs/evaluation/<family>/holdout/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import ROOT, machine  # noqa: E402


def main() -> None:
    from genzoo.tasks.config import load_params
    from genzoo.tasks.detect import benchmark

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--families", help="comma-separated (default: detect.families)")
    ap.add_argument("--holdout", nargs="*", type=int, default=None, help="held-out classes (retrains)")
    ap.add_argument("-o", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    extra = [f"detect.holdout_classes={args.holdout}"] if args.holdout is not None else []
    params = load_params(args.params, [*extra, *args.overrides])
    families = args.families.split(",") if args.families else params.detect.families
    rows = {}
    for f in families:
        t0 = time.perf_counter()
        rows[f] = benchmark(params, f)
        rows[f]["seconds"] = time.perf_counter() - t0
    sets = list(next(iter(rows.values()))["sets"])
    print(f"machine: {machine()}")
    print("cells: AUROC of bits/dim / typicality / likelihood ratio vs the background model "
          "(test split as normal; held-out class: the other classes' test images)\n")  # fmt: skip
    print("| family | test bits/dim | " + " | ".join(sets) + " | seconds |")
    print("|---" * (len(sets) + 3) + "|")
    for f, r in rows.items():
        cells = [
            " / ".join(
                f"{r['sets'][s][k]['auroc']:.3f}" for k in ("likelihood", "typicality", "likelihood_ratio")
            )
            for s in sets
        ]
        print(f"| {f} ({r['estimator']}) | {r['normal']['mean_bits_per_dim']:.3f} | " + " | ".join(cells)
              + f" | {r['seconds']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
