"""The evaluator's test accuracy and training time with the params in params.yaml.

python bench/evaluator.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import ROOT, machine  # noqa: E402

from genzoo.models.evaluator import accuracy, train_evaluator  # noqa: E402
from genzoo.tasks.config import load_params  # noqa: E402
from genzoo.tasks.prepare import data_spec, load_split, prepare  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        params = load_params(ROOT / "params.yaml", [f"data.prepared_dir={tmp}/prepared"])
        prepare(params)
        x, y, manifest = load_split(params.data.prepared_dir, "train")
        xt, yt, _ = load_split(params.data.prepared_dir, "test")
    torch.set_num_threads(params.run.threads or 1)  # as the evaluator stage runs
    accs, secs = [], []
    for seed in range(args.repeats):
        t0 = time.perf_counter()
        net = train_evaluator(x, y, data_spec(manifest), params.evaluate.evaluator, seed=seed)
        secs.append(time.perf_counter() - t0)
        accs.append(accuracy(net, xt, yt))
        print(f"seed {seed}: test accuracy {accs[-1]:.4f}, {secs[-1]:.1f} s")
    print(f"machine: {machine()}")
    steps = params.evaluate.evaluator.steps
    print(
        f"evaluator ({steps} steps): test accuracy median {statistics.median(accs):.4f} "
        f"(min {min(accs):.4f}), training {statistics.median(secs):.1f} s median"
    )


if __name__ == "__main__":
    main()
