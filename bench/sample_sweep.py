"""One trained family, sampled with other sampling settings, in every judge's feature space.

    python bench/sample_sweep.py --run <folder of a finished `genzoo run`> --family ddpm --set guidance=1,2,3
    python bench/sample_sweep.py --run <folder> --family vae --set prior=standard,ex_post \
        --set temperature=0.8,1

The run's weights, rebuilt with each combination of the ``--set`` values (keys of the family's
``net`` block; ``after_training`` refitted, e.g. the VAE's ex-post prior), so only the sampling
differs. Each combination is scored as the evaluate stage scores a family (its seeds and samples
per class): Fréchet distance and the classifier judges' class accuracy in every space, precision
and recall in the evaluator's. bench/families.py leaves a run to read (--out, default
/tmp/genzoo-bench/run0).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch
import yaml

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

SPACES = ("cnn", "pca", "mlp", "lenet", "random_cnn")


def settings(pairs: list[str]) -> list[dict]:
    """``["guidance=1,2", "x=a"]`` -> every combination, values read as YAML: [{guidance: 1, x: a}, ...];
    a value may be a list itself (``rows=[0,4],[2,8]``: commas inside brackets do not split)."""
    keys, values = [], []
    for pair in pairs:
        key, sep, vals = pair.partition("=")
        if not sep or not key or not vals:
            raise SystemExit(f"--set {pair!r}: expected key=value[,value...]")
        keys.append(key)
        values.append(yaml.safe_load(f"[{vals}]"))
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished run's folder (runs/ and prepared/ under it)")
    ap.add_argument("--family", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2", help="net keys to sweep")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    run = Path(args.run)
    folders = [f"run.runs_dir={run}/runs", f"data.prepared_dir={run}/prepared"]
    params = load_params(ROOT / "params.yaml", folders)
    torch.set_num_threads(args.threads)
    judging = load_judging(params)
    trained = models.load(family_dir(params, args.family) / "model.json")
    combos = settings(args.set) or [{}]
    nets = [resampled(trained, args.family, update) for update in combos]  # all checked before sampling
    x, y, _ = load_split(params.data.prepared_dir, "train")
    e, n_test = params.evaluate, len(judging[2]["test"])
    print(f"machine: {machine()}\n{args.family} of {run}: {e.seeds} seeds x {e.samples_per_class} images per "
          f"class against the {n_test} test images; FD (class accuracy) per space\n")  # fmt: skip
    keys = list(combos[0])
    print("| " + " | ".join(keys + list(SPACES)) + " | precision | recall | seconds |")
    print("|---" * (len(keys) + len(SPACES) + 3) + "|")
    for update, model in zip(combos, nets, strict=True):
        model.eval().after_training(x, y)
        t0 = time.perf_counter()
        s = judge(params, judging, model, trained.spec)
        cells = [f"{update[k]}" for k in keys] + cells_of(s)
        print("| " + " | ".join(cells + [f"{time.perf_counter() - t0:.0f}"]) + " |", flush=True)


def resampled(trained, family: str, update: dict, flag: str = "--set"):
    """``trained``'s weights in a network rebuilt with ``update`` (keys of its ``net`` block), so
    only the sampling differs; call ``after_training`` on it for a setting's own buffers (the
    VAE's ex-post prior). Exits naming the setting where a value is bad or the weights do not fit."""
    try:
        cfg = type(trained.cfg).model_validate({**trained.cfg.model_dump(), **update})
        model = models.build(family, trained.spec, cfg)
        # one whose weights the run lacks (a wider net, more layers) is a different model:
        # retrain it, do not sample it untrained
        loaded = model.load_state_dict(trained.state_dict(), strict=False)
        if untrained := set(loaded.missing_keys) & {n for n, _ in model.named_parameters()}:
            raise RuntimeError(f"not the run's network (retrain it): no {sorted(untrained)[:3]}")
    except (ValueError, RuntimeError) as err:  # a bad value; a size mismatch
        raise SystemExit(f"{flag} {update}: {str(err)[:300]}") from None
    return model


def load_judging(params) -> tuple:
    """The run's evaluator, its judges and the real images' features in every space."""
    folder = evaluator_dir(params)
    return (
        load_evaluator(folder / "evaluator.json"),
        load_judges(folder / "judges.npz"),
        real_features(folder),
    )


def judge(params, judging: tuple, model, spec) -> dict:
    """``model`` (ready to sample) scored as the evaluate stage scores a family."""

    def sample(labels, seed):
        return draw(model, len(labels), labels=labels, seed=seed, batch=500)[0]

    return _measure(params, *judging, sample, spec, None)


def cells_of(s: dict) -> list[str]:
    """FD (class accuracy) per space, then precision and recall, as table cells."""
    cells = []
    for name in SPACES:
        r = s["spaces"][name]
        acc = f" ({100 * r['class_accuracy']:.1f}%)" if "class_accuracy" in r else ""
        cells.append(f"{r['fd']:.3f}{acc}")
    return cells + [f"{s['precision']:.3f}", f"{s['recall']:.3f}"]


if __name__ == "__main__":
    main()
