"""The full augmentation curve: does synthetic data help a downstream classifier?

    python bench/usefulness.py                                # usefulness.families, 5/10/25/100%
    python bench/usefulness.py --families pixelcnn realnvp vae gan ddpm --subset-seeds 0 1 2
    python bench/usefulness.py --fractions 0.1 0.25 1 --recipes plain teacher -o usefulness.seeds=5

Trains the families on the whole training split (unless already trained under --out), then the
leak-free measurement of tasks/usefulness.py: each family retrained on every real subset (one
per subset seed), a teacher per subset, the CNN with classical augmentation (the baseline),
without it, and a logistic regression, each trained on the subset with and without the
synthetic images of every recipe, train-on-synthetic accuracy, and the PCA + KDE reference by
the same code. Intervals over the subsets' means where several (paired lifts). Prints Markdown
tables; writes the curve to <out>/usefulness.png and the figures to <out>/usefulness.json.

Every two generator rows are also compared with each other at each fraction below 100% (paired
by subset and seed: which generator's data helps more). ``--against OTHER/usefulness.json`` (a
run on the same fractions, subsets and seeds, with other settings, e.g. a stronger classical
augmentation: ``-o usefulness.cnn.scale=0.15``) also prints each of this run's accuracies against
that run's classifier on real data alone and against the same row there, paired by subset and
seed.
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
from genzoo.tasks.usefulness import measure_family, recipes, reference, stats  # noqa: E402


def print_tables(u: dict, names: list[str], fr: list[str], clfs: list[str]) -> None:
    """A table per classifier: accuracy at each real fraction, real alone and with each
    generator's data by each recipe (lift over real alone), and train-on-synthetic beside the
    whole real split's accuracy (where 100% was measured)."""
    ref = u["reference"]

    def cell(s: dict, sign: str = "") -> str:
        return f"{100 * s['mean']:{sign}.1f} ± {100 * s['ci95']:.1f}"

    for c in clfs:
        print(f"**{c}**\n\n| generator | recipe | " + " | ".join(f"{100 * float(p):g}% real" for p in fr)
              + " | train on synthetic |")  # fmt: skip
        print("|---" * (len(fr) + 3) + "|")
        whole = ref["real"].get("1.0")  # train on the whole real split: what synthetic stands in for
        print("| real only | | " + " | ".join(cell(ref["real"][p][c]) for p in fr)
              + f" | {cell(whole[c]) + ' (real)' if whole else '– (100% not measured)'} |")  # fmt: skip
        for gen_name, d in generators(u):
            for name in names:
                aug = d.get("recipes", {}).get(name, {}).get("augmentation")
                if not aug:
                    continue
                lifts = [
                    f"{cell(aug[p][c]['augmented'])} ({cell(aug[p][c]['lift'], '+')})" if p in aug else "–"
                    for p in fr
                ]
                tstr = cell(d["tstr"][c]) if "tstr" in d else "–"
                print(f"| + {gen_name} | {name} | " + " | ".join(lifts) + f" | {tstr} |")
        print()


def generators(u: dict) -> list[tuple[str, dict]]:
    """The generator rows of a run's figures: PCA + KDE, the held-out real images (with
    ``-o usefulness.held_out=true``: the ceiling), then every family."""
    ref = u["reference"]
    rows = [("PCA + KDE", ref["pca_kde"]), *u["families"].items()]
    if "held_out" in ref:
        rows.insert(1, ("held-out real", ref["held_out"]))
    return rows


def accuracy_rows(u: dict, names: list[str], p: str, c: str) -> dict[str, list[float]]:
    """Every row's accuracies per seed at fraction ``p`` for classifier ``c``: real alone, then
    each generator's with each recipe."""
    rows = {"real only": u["reference"]["real"][p][c]["per_seed"]}
    for gen_name, d in generators(u):
        for name in names:
            aug = d.get("recipes", {}).get(name, {}).get("augmentation", {})
            if p in aug and c in aug[p]:
                rows[f"+ {gen_name}, {name}"] = aug[p][c]["augmented"]["per_seed"]
    return rows


def print_against(u: dict, other: dict, names: list[str], fractions: list[str], clfs: list[str]) -> None:
    """This run's accuracies minus ``other``'s (a run with other settings on the same subsets and
    seeds): against its classifier on real data alone, and against the same row, paired."""

    seeds = u["reference"].get("protocol", {}).get("seeds")
    layout = [
        {k: r["reference"].get("protocol", {}).get(k) for k in ("seeds", "subset_seeds", "n_train", "n_test")}
        for r in (u, other)
    ]  # (the same subsets: the same seeds of the same split's sizes)
    if layout[0] != layout[1] and None not in (layout[0]["seeds"], layout[1]["seeds"]):
        raise SystemExit(
            f"--against: {layout[0]} here, {layout[1]} there; run both on the same data, subsets and seeds"
        )

    def cell(v: list[float]) -> str:
        st = stats(v, seeds)  # over the subsets' means where several
        return f"{100 * st['mean']:+.1f} ± {100 * st['ci95']:.1f}"

    for c in clfs:
        shared = [p for p in fractions if c in other["reference"]["real"].get(p, {})]
        if not shared:
            print(f"**{c}**: the other run has no fraction of this one ({', '.join(fractions)}) for {c}\n")
            continue
        print(f"**{c}, against the other run** (points, paired by subset and seed)\n")
        print("| row | real % | against its real only | against its same row |\n|---|---|---|---|")
        for p in shared:
            theirs = accuracy_rows(other, names, p, c)
            for row, mine in accuracy_rows(u, names, p, c).items():
                if len(mine) != len(theirs["real only"]):
                    n = len(theirs["real only"])
                    raise SystemExit(f"--against: {row} at {p}: {len(mine)} seeds here, {n} there; "
                                     "run both on the same data, subsets and seeds")  # fmt: skip
                base = [a - b for a, b in zip(mine, theirs["real only"], strict=True)]
                same = [a - b for a, b in zip(mine, theirs[row], strict=True)] if row in theirs else None
                print(f"| {row} | {100 * float(p):g} | {cell(base)} | {cell(same) if same else '–'} |")
        print()


def print_between(u: dict, names: list[str], fractions: list[str], clfs: list[str]) -> None:
    """Every two generator rows against each other at each fraction below all of the data (same
    subsets, seeds and teachers: paired), the better-scoring row first: which generator's data
    helps more, with the interval the lifts over real data alone cannot give."""
    for c in clfs:
        for p in (p for p in fractions if float(p) < 1):
            rows = {k: v for k, v in accuracy_rows(u, names, p, c).items() if k != "real only"}
            if len(rows) < 2:
                continue
            order = sorted(rows, key=lambda k: -stats(rows[k])["mean"])
            seeds = u["reference"].get("protocol", {}).get("seeds")
            print(f"**{c} at {100 * float(p):g}% real, generator against generator** (points, paired)\n")
            print("| row | against | difference |\n|---|---|---|")
            for i, a in enumerate(order):
                for b in order[i + 1 :]:
                    st = stats([x - y for x, y in zip(rows[a], rows[b], strict=True)], seeds)
                    print(f"| {a} | {b} | {100 * st['mean']:+.1f} ± {100 * st['ci95']:.1f} |")
            print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", help="default: usefulness.families in params.yaml")
    ap.add_argument("--fractions", nargs="+", type=float, default=[0.05, 0.1, 0.25, 1.0])
    ap.add_argument("--subset-seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument(
        "--recipes",
        nargs="+",
        help="default: usefulness.recipes in params.yaml; augment.recipe (the pulled dataset's, distil) is "
        "measured too: -o augment.recipe=NAME to change it",
    )
    ap.add_argument("--out", help="working folder (trained models are reused from here); default: a temp dir")
    ap.add_argument("-o", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--against", type=Path, help="another run's usefulness.json: paired differences")
    args = ap.parse_args()
    other = json.loads(args.against.read_text()) if args.against else None  # read before hours of compute
    out = Path(args.out or tempfile.mkdtemp(prefix="genzoo-usefulness-"))
    reused = (out / "runs").is_dir()  # an --out of an earlier call: what it measured is not measured again
    base = [
        f"run.runs_dir={out}/runs",
        f"data.prepared_dir={out}/prepared",
        "run.track=false",
        f"usefulness.fractions={json.dumps(args.fractions)}",
        f"usefulness.subset_seeds={json.dumps(args.subset_seeds)}",
        *([f"usefulness.recipes={json.dumps(args.recipes)}"] if args.recipes else []),
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
    ref = reference(params)
    print(f"reference done ({time.perf_counter() - t0:.0f} s)", flush=True)
    fams = {}
    for f in families:
        fams[f] = measure_family(params, f)
        print(f"{f} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    u = {"reference": ref, "families": fams}
    clfs = params.usefulness.classifiers
    ref = u["reference"]

    def cell(s: dict, sign: str = "") -> str:
        return f"{100 * s['mean']:{sign}.1f} ± {100 * s['ci95']:.1f}"

    print(f"\nmachine: {machine()}")
    print(f"{params.usefulness.seeds} classifier seeds x {len(args.subset_seeds)} subset(s) below 100%, one "
          "at 100% (each its own generator and teacher); test accuracy in %, lifts in points over the same "
          "classifier on real data alone, ± 95% interval (paired)\n")  # fmt: skip
    fr = [str(x) for x in sorted(args.fractions)]
    names = recipes(params)
    print_tables(u, names, fr, clfs)
    first = next(iter(u["families"].values()), {"recipes": {}})  # each family's subsets: the same teachers
    for name, r in first["recipes"].items():
        if "teacher_accuracy" in r:
            acc = r["teacher_accuracy"]
            one = lambda p, acc=acc: f"{100 * acc[p]['mean']:.1f}"  # noqa: E731 (100%: one subset, no interval)
            at = [
                f"{100 * float(p):g}% real " + (cell(acc[p]) if float(p) < 1 else one(p))
                for p in fr
                if p in acc
            ]
            print(f"the teacher of {name} alone (over subsets): " + ", ".join(at))
    for f, d in u["families"].items():  # what each recipe's filters dropped (teacher, near-copies)
        for name, r in d["recipes"].items():
            for p, c in r.get("filters", {}).items():
                kept = f"kept {c['kept']:,} of {c['drawn']:,} drawn"
                print(f"{f} {name} at {100 * float(p):g}%: {kept}, dropped {c['rejected']}")
    print()
    print_between(u, names, fr, clfs)
    if other is not None:
        print_against(u, other, names, fr, clfs)
    (out / "usefulness.json").write_text(json.dumps(u, indent=2))
    png = usefulness_plot(u).split(",", 1)[1]
    (out / "usefulness.png").write_bytes(base64.b64decode(png))
    print(f"cells: accuracy with synthetic (lift over real only); figures in {out}/usefulness.json, "
          f"curve {out}/usefulness.png; {time.perf_counter() - t0:.0f} s for this call"
          + (f" ({out} held an earlier call's models and figures: those were reused, not measured again)"
             if reused else ""))  # fmt: skip


if __name__ == "__main__":
    main()
