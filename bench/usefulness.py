"""The full augmentation curve: does synthetic data help a downstream classifier?

    python bench/usefulness.py                                # usefulness.families, 5/10/25/100%
    python bench/usefulness.py --families gan vae ddpm --subset-seeds 0 1 2
    python bench/usefulness.py --fractions 0.1 -o usefulness.synthetic_per_real=1

Trains the families on the whole training split (unless already trained under --out), then,
for every subset seed, the leak-free measurement of tasks/usefulness.py: each family retrained
on every real subset, a small CNN and a logistic regression trained on the subset with and
without k synthetic images per real one, train-on-synthetic accuracy, and the PCA + KDE
reference by the same code. Seeds of several subsets are pooled (their intervals then cover
the subset and the generator's training too). Prints Markdown tables; writes the curve to
<out>/usefulness.png and the pooled figures to <out>/usefulness.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import ROOT, machine  # noqa: E402

from genzoo.tasks.config import load_params  # noqa: E402
from genzoo.tasks.prepare import prepare  # noqa: E402
from genzoo.tasks.report import usefulness_plot  # noqa: E402
from genzoo.tasks.train import train_family, up_to_date  # noqa: E402
from genzoo.tasks.usefulness import measure_family, reference, stats  # noqa: E402


def pooled(runs: list[dict]) -> dict:
    """Concatenate per-seed values over subset seeds and recompute means and intervals."""
    if len(runs) == 1:
        return runs[0]
    if isinstance(runs[0], dict) and "per_seed" in runs[0]:
        return stats([v for r in runs for v in r["per_seed"]])
    if isinstance(runs[0], dict):
        return {k: pooled([r[k] for r in runs]) for k in runs[0]}
    return runs[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", help="default: usefulness.families in params.yaml")
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.05, 0.1, 0.25, 1.0])
    ap.add_argument("--subset-seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--out", help="working folder (trained models are reused from here); default: a temp dir")
    ap.add_argument("-o", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="genzoo-usefulness-"))
    base = [
        f"run.runs_dir={out}/runs",
        f"data.prepared_dir={out}/prepared",
        "run.track=false",
        f"usefulness.fractions={json.dumps(args.fractions)}",
        *([f"usefulness.families={json.dumps(args.families)}"] if args.families else []),
        *args.overrides,
    ]
    params = load_params(ROOT / "params.yaml", base)
    families = [f for f in params.usefulness.families if f in params.models]
    t0 = time.perf_counter()
    prepare(params)
    for f in families:
        if up_to_date(params, f) is None:
            print(f"training {f} on the whole training split ...", flush=True)
            train_family(params, f, progress=False)
    refs, fams = [], {f: [] for f in families}
    for s in args.subset_seeds:
        p = load_params(ROOT / "params.yaml", [*base, f"usefulness.subset_seed={s}"])
        refs.append(reference(p))
        for f in families:
            fams[f].append(measure_family(p, f))
            print(f"subset seed {s}: {f} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    u = {
        "reference": {
            **pooled([{k: r[k] for k in ("real", "pca_kde")} for r in refs]),
            "protocol": refs[0]["protocol"],
        },
        "families": {
            f: {k: pooled([r[k] for r in rs]) for k in ("tstr", "augmentation")} for f, rs in fams.items()
        },
    }
    u["reference"]["protocol"] = {**refs[0]["protocol"], "subset_seeds": args.subset_seeds}
    clfs = params.usefulness.classifiers
    ref = u["reference"]

    def cell(s: dict, sign: str = "") -> str:
        return f"{100 * s['mean']:{sign}.1f} ± {100 * s['ci95']:.1f}"

    print(f"\nmachine: {machine()}")
    print(f"k = {params.usefulness.synthetic_per_real:g} synthetic per real; {params.usefulness.seeds} "
          f"seeds x {len(args.subset_seeds)} subset(s); test accuracy in %, lifts in points, "
          "± 95% interval\n")  # fmt: skip
    fr = [str(x) for x in sorted(args.fractions)]
    for c in clfs:
        print(
            f"**{c}**\n\n| generator | "
            + " | ".join(f"{100 * float(p):g}% real" for p in fr)
            + " | train on synthetic |"
        )
        print("|---" * (len(fr) + 2) + "|")
        print(
            "| real only | "
            + " | ".join(cell(ref["real"][p][c]) for p in fr)
            + f" | {cell(ref['real'][fr[-1]][c])} (real) |"
        )
        for name, d in [("PCA + KDE", ref["pca_kde"]), *u["families"].items()]:
            aug = d["augmentation"]
            lifts = [f"{cell(aug[p][c]['augmented'])} ({cell(aug[p][c]['lift'], '+')})" for p in fr]
            print(f"| + {name} | " + " | ".join(lifts) + f" | {cell(d['tstr'][c])} |")
        print()
    (out / "usefulness.json").write_text(json.dumps(u, indent=2))
    png = usefulness_plot(u).split(",", 1)[1]
    (out / "usefulness.png").write_bytes(base64.b64decode(png))
    print(f"cells: accuracy with synthetic (lift over real only); figures in {out}/usefulness.json, "
          f"curve {out}/usefulness.png; {time.perf_counter() - t0:.0f} s in all")  # fmt: skip


if __name__ == "__main__":
    main()
