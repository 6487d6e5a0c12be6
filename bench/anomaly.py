"""Anomaly detection by likelihood on the trained families: AUROC of the likelihood and the
typicality scores against every benchmark set, as a Markdown table.

    python bench/anomaly.py                  # the families in params.yaml's detect block
    python bench/anomaly.py --families pixelcnn,ddpm

Uses the models in runs/ (train them first: `make run`); writes nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import ROOT, machine  # noqa: E402


def main() -> None:
    from tasks.config import load_params
    from tasks.detect import benchmark

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--families", help="comma-separated (default: detect.families)")
    args = ap.parse_args()
    params = load_params(args.params)
    families = args.families.split(",") if args.families else params.detect.families
    rows = {}
    for f in families:
        t0 = time.perf_counter()
        rows[f] = benchmark(params, f)
        rows[f]["seconds"] = time.perf_counter() - t0
    sets = list(next(iter(rows.values()))["sets"])
    print(f"machine: {machine()}")
    print("cells: AUROC of bits/dim / AUROC of typicality (test split as normal)\n")
    print("| family | test bits/dim | " + " | ".join(sets) + " | seconds |")
    print("|---" * (len(sets) + 3) + "|")
    for f, r in rows.items():
        cells = [
            f"{r['sets'][s]['likelihood']['auroc']:.3f} / {r['sets'][s]['typicality']['auroc']:.3f}"
            for s in sets
        ]
        print(f"| {f} ({r['estimator']}) | {r['normal']['mean_bits_per_dim']:.3f} | " + " | ".join(cells)
              + f" | {r['seconds']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
