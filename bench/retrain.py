"""One family retrained over training seeds and settings, each scored in every judge's space:
is a setting better than another by more than the spread one training seed to the next gives?

    python bench/retrain.py --run <folder of a finished `genzoo run`> --family pixelcnn \
        --set train.weight_decay=0,0.05,0.1 --seeds 0,1,2 --eval-seeds 5
    python bench/retrain.py --run <folder> --family ddpm --set train.lr=0.001,0.002 \
        --sweep guidance=1.1,1.2,1.35 --seeds 0,1,2

Each combination of the ``--set`` values (keys under ``models.<family>``) is trained once per
``--seeds`` value (the top-level ``seed``: initial weights and batch order; the run's prepared
split is shared), as `genzoo train` trains it (validation, early stopping, untracked), into its
own folder under ``--work``. Each is scored as the evaluate stage scores a family, with the run's
evaluator and judges and the run's evaluation seeds (``--eval-seeds`` of them), so only the
training differs. ``--sweep`` (keys of the family's ``net`` block that only change sampling, e.g.
DDPM's guidance) scores each trained model once per combination of its values, without
retraining, as bench/sample_sweep.py does. One row per training (and sweep value), then per
setting the mean ± sd over training seeds.
bench/families.py leaves a run to read (--out, default /tmp/genzoo-bench/run0).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import ROOT, machine  # noqa: E402
from sample_sweep import SPACES, cells_of, judge, load_judging, resampled, settings  # noqa: E402

from genzoo import models  # noqa: E402
from genzoo.tasks.config import ParamsError, load_params  # noqa: E402
from genzoo.tasks.data import load_split  # noqa: E402
from genzoo.tasks.layout import family_dir  # noqa: E402
from genzoo.tasks.train import train_family  # noqa: E402


def mean_sd(values: list[float], digits: int = 3) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {sd:.{digits}f}"


def variant(family: str, work: Path, i: int, seed: int, update: dict) -> list[str]:
    """The overrides of setting ``i`` (``update``) trained with ``seed``, into its own folder."""
    out = work / f"{i}-{seed}"
    return [f"seed={seed}", "run.track=false", f"run.runs_dir={out}/runs", f"run.checkpoints_dir={out}/ckpt",
            *(f"models.{family}.{k}={v}" for k, v in update.items())]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished run's folder (runs/ and prepared/ under it)")
    ap.add_argument("--family", required=True)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"), help="the params the run used")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2",
                    help="keys under models.<family> to sweep (train.weight_decay=0,0.05)")  # fmt: skip
    ap.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2",
                    help="net keys scored on each trained model, no retraining")  # fmt: skip
    ap.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated")
    ap.add_argument("--eval-seeds", type=int, default=None, help="evaluation seeds (default: the params')")
    ap.add_argument("--work", default="/tmp/genzoo-retrain", help="where the retrained models go")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    run, work = Path(args.run), Path(args.work)
    folders = [f"run.runs_dir={run}/runs", f"data.prepared_dir={run}/prepared"]
    if args.eval_seeds:
        folders.append(f"evaluate.seeds={args.eval_seeds}")
    seeds = [int(s) for s in args.seeds.split(",")]
    combos = settings(args.set) or [{}]
    sweeps = settings(args.sweep) or [{}]
    try:  # every variant's params checked before any training, every sweep value too
        base = load_params(args.params, folders)
        variants = {
            (i, seed): load_params(args.params, [*folders, *variant(args.family, work, i, seed, update)])
            for i, update in enumerate(combos)
            for seed in seeds
        }
        base.require(args.family)
    except ParamsError as err:
        raise SystemExit(str(err)) from None
    if args.sweep:  # each sweep value checked on the run's own model: a bad value, another network
        if not (saved := family_dir(base, args.family) / "model.json").exists():
            raise SystemExit(f"--sweep: no {saved}: the run trained no {args.family} to check the values on")
        run_model = models.load(saved)
        for sweep in sweeps:
            resampled(run_model, args.family, sweep, "--sweep")
    torch.set_num_threads(args.threads)
    judging = load_judging(base)
    e = base.evaluate
    print(f"machine: {machine()}\n{args.family} of {run} retrained; each scored on {e.seeds} evaluation"
          f" seeds x {e.samples_per_class} images per class; FD (class accuracy) per space\n")  # fmt: skip
    keys, skeys = list(combos[0]), list(sweeps[0])
    columns = [*keys, "seed", *skeys, *SPACES, "precision", "recall", "test bpd", "best step", "seconds"]
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|", flush=True)
    rows: dict[tuple, list] = {ij: [] for ij in itertools.product(range(len(combos)), range(len(sweeps)))}
    x, y = load_split(base.data.prepared_dir, "train")[:2] if args.sweep else (None, None)
    for (i, seed), params in variants.items():
        t0 = time.perf_counter()
        m = train_family(params, args.family, progress=False)
        trained = models.load(family_dir(params, args.family) / "model.json")  # fitted, in eval mode
        bpd = f"{m['test_bpd']:.4f}" if m.get("test_bpd") is not None else "-"
        for j, sweep in enumerate(sweeps):
            model = trained
            if sweep:  # the same weights, sampled otherwise
                model = resampled(trained, args.family, sweep, "--sweep")
                model.eval().after_training(x, y)
            s = judge(base, judging, model, trained.spec)
            rows[i, j].append({**s, "test_bpd": m.get("test_bpd")})
            cells = [
                *(f"{combos[i][k]}" for k in keys),
                str(seed),
                *(f"{sweep[k]}" for k in skeys),
                *cells_of(s),
                bpd,
                str(m.get("best_step", "-")),
            ]
            print("| " + " | ".join([*cells, f"{time.perf_counter() - t0:.0f}"]) + " |", flush=True)
            t0 = time.perf_counter()
    print(f"\nper setting, mean ± sd over training seeds {args.seeds}\n")
    print("| " + " | ".join([*keys, *skeys, *SPACES, "test bpd"]) + " |")
    print("|---" * (len(keys) + len(skeys) + len(SPACES) + 1) + "|")
    for (i, j), got in rows.items():
        cells = [*(f"{combos[i][k]}" for k in keys), *(f"{sweeps[j][k]}" for k in skeys)]
        for name in SPACES:
            cell = mean_sd([r["spaces"][name]["fd"] for r in got])
            if "class_accuracy" in got[0]["spaces"][name]:
                acc = [100 * r["spaces"][name]["class_accuracy"] for r in got]
                cell += f" ({mean_sd(acc, 1)}%)"
            cells.append(cell)
        bpds = [r["test_bpd"] for r in got if r["test_bpd"] is not None]
        cells.append(mean_sd(bpds, 4) if bpds else "-")
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
