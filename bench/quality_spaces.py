"""Quality under every judge: each family's and baseline's rank by Fréchet distance in every
feature space, Kendall's tau between the spaces' rankings, class accuracy by each classifier
judge, and issue 13's targets per space (met / missed by how much), as Markdown tables.

    python bench/quality_spaces.py --runs runs             # a finished run's evaluation
    python bench/quality_spaces.py --profile quick          # train and evaluate first (several minutes)

With --profile (or --train), runs the real command line (`genzoo run`) in a subprocess with
its outputs under --out (the repository's runs/ is left alone; an --out holding an earlier run
is refused: its finished stages would be reused, and the time printed would not be a run's),
then reads what it wrote. A runs folder whose report names its families: those alone (a family
left from an earlier run of other settings is not this run's).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import machine, one_run  # noqa: E402

from genzoo.tasks.report import BASELINE_NAMES, SPACES_ACCURACY, SPACES_FLOOR_RATIO, judges  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def read(runs: Path) -> tuple[dict, dict, dict]:
    ev = runs / "evaluation"
    if not (ev / "evaluator" / "reference.json").is_file():
        raise SystemExit(
            f"{runs}: no evaluation there ({ev / 'evaluator' / 'reference.json'} missing): "
            "give the runs folder of a run (run.runs_dir), or pass --profile / --train"
        )
    reference = json.loads((ev / "evaluator" / "reference.json").read_text())
    evaluator = json.loads((ev / "evaluator" / "metrics.json").read_text())
    summary = runs / "report" / "summary.json"
    listed = json.loads(summary.read_text()).get("families") if summary.is_file() else None
    families = {
        p.parent.name: {"quality": json.loads(p.read_text())}
        for p in sorted(ev.glob("*/quality.json"))
        if p.parent.name != "evaluator" and (listed is None or p.parent.name in listed)
    }
    if not families:
        raise SystemExit(f"{ev}: no evaluated family (run `genzoo run` or pass --profile)")
    return families, reference, evaluator


def tables(j: dict, evaluator: dict) -> str:
    s = j["spaces"]
    out = ["Rank by Fréchet distance (FD in brackets; 1 = best among families and baselines):", ""]
    out += ["| model | " + " | ".join(s) + " |", "|---" * (len(s) + 1) + "|"]
    for m in j["families"] + j["baselines"]:
        cells = [f"{j['ranks'][sp][m]:g} ({j['fd'][sp][m]:.3g})" for sp in s]
        out.append(f"| {BASELINE_NAMES.get(m, m)} | " + " | ".join(cells) + " |")
    for key, name in (("floor_fd", "real train vs test (floor)"), ("noise_fd", "uniform noise")):
        out.append(f"| {name} | " + " | ".join(f"({j['per_space'][sp][key]:.3g})" for sp in s) + " |")
    out += ["", "Kendall's tau between the spaces' rankings:", ""]
    out += ["| | " + " | ".join(s) + " |", "|---" * (len(s) + 1) + "|"]
    for a in s:
        row = []
        for b in s:
            tau = 1.0 if a == b else j["kendall_tau"].get(f"{a}|{b}", j["kendall_tau"].get(f"{b}|{a}"))
            row.append(f"{tau:.2f}")
        out.append(f"| {a} | " + " | ".join(row) + " |")
    if j["accuracy"]:
        acc = j["accuracy"]
        out += ["", "Class accuracy of the class-conditional samples, by each classifier judge:", ""]
        out += ["| family | " + " | ".join(acc) + " |", "|---" * (len(acc) + 1) + "|"]
        for f in j["families"]:
            out.append(f"| {f} | " + " | ".join(f"{100 * acc[sp]['families'][f]:.1f}%" for sp in acc) + " |")
        real = [acc[sp]["real_test"] for sp in acc]
        out.append("| real test images | " + " | ".join(f"{100 * r:.1f}%" if r else "—" for r in real) + " |")
    out += ["", "Targets (issue 13), every space:", ""]
    names = {
        "every_family_below_pca_kde": "every family's FD below PCA + KDE's",
        "best_within_floor": f"best family within {SPACES_FLOOR_RATIO}x the real-vs-real floor",
        "class_accuracy": f"every family's class accuracy >= {100 * SPACES_ACCURACY:.0f}%",
    }
    for k, g in j["targets"].items():
        out.append(f"- {names[k]}: {g['verdict']}")
    own = evaluator.get("judges", {})
    accs = "".join(f", {n} {100 * a:.1f}%" for n, a in own.get("test_accuracy", {}).items())
    ev_acc = 100 * evaluator.get("test_accuracy", float("nan"))
    out += ["", f"Judges' own test accuracy: evaluator {ev_acc:.1f}%{accs}; judges trained in "
            f"{own.get('train_seconds', float('nan'))} s."]  # fmt: skip
    return "\n".join(out)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, help="a runs folder (run.runs_dir) to read")
    p.add_argument("--profile", help="train with this profile first (e.g. quick)")
    p.add_argument("--train", action="store_true", help="train with default params first")
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "runs" / "bench" / "quality_spaces",
        help="where --profile / --train run (default: runs/bench/quality_spaces, which git ignores)",
    )
    return p


def main() -> None:
    p = parser()
    args = p.parse_args()
    runs = args.runs
    if args.profile or args.train:
        if args.out.is_dir() and any(args.out.iterdir()):
            p.error(f"--out {args.out} holds an earlier run (its stages would be reused and the time "
                    "printed not a fresh run's): remove it, or give another --out")  # fmt: skip
        args.out.mkdir(parents=True, exist_ok=True)
        wall, _ = one_run(args.profile, args.out.resolve())
        print(f"genzoo run{' --profile ' + args.profile if args.profile else ''}: {wall:.0f} s")
        runs = args.out / "runs"
    if runs is None:
        p.error("give --runs DIR, or --profile NAME / --train to run first")
    families, reference, evaluator = read(runs)
    j = judges(families, reference, evaluator)
    if j is None:
        raise SystemExit(f"{runs}: the evaluation predates the feature spaces; re-run the evaluation")
    print(f"Machine: {machine()}")
    summary = runs / "report" / "summary.json"  # the report says which profile made the run
    made = json.loads(summary.read_text()).get("profile") if summary.is_file() else None
    if made:
        print(f"Made with the {made} profile: a first look, not the default run's figures")
    print(tables(j, evaluator))


if __name__ == "__main__":
    main()
