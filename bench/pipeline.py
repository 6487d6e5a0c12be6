"""The pipeline against the same training done sequentially as bare PyTorch loops.

    python bench/pipeline.py                       # default params (what `make run` trains)
    python bench/pipeline.py --profile quick --repeats 3

Baseline: in this process, one family after another, the same models, batch size, steps and
optimizers, as plain ``loss.backward(); opt.step()`` loops with torch's default threads: no
validation, checkpoints, sampling, tracking or orchestration. Pipeline: the real ``genzoo
run`` (Prefect flow, its temporary server, a local Ray, MLflow tracking) from a cold start in
a fresh folder. Orchestration overhead = pipeline wall time during which no family's stage
was running (Prefect/Ray start-up, data preparation, scheduling, shut-down).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import ROOT, genzoo_run, machine, union_seconds  # noqa: E402

from genzoo import models  # noqa: E402
from genzoo.tasks.config import load_params  # noqa: E402
from genzoo.tasks.prepare import data_spec, load_split, prepare  # noqa: E402


def bare_loops(params, out: Path) -> dict[str, float]:
    """Seconds per family for the plain training loops, one family after another."""
    params = params.model_copy(
        update={"data": params.data.model_copy(update={"prepared_dir": str(out / "prepared")})}
    )
    prepare(params)
    x, y, manifest = load_split(params.data.prepared_dir, "train")
    spec = data_spec(manifest)
    times = {}
    for fam in params.families:
        torch.manual_seed(params.seed)
        cfg = params.train_config(fam)
        model = models.build(fam, spec, params.net_config(fam))
        opts = {  # the trainer's optimizers: one per phase, over that phase's parameters
            ph: torch.optim.AdamW(
                model.phase_parameters(ph),
                lr=cfg.phase_lr.get(ph, cfg.lr),
                betas=cfg.betas,
                weight_decay=cfg.weight_decay,
            )
            for ph in model.phases
        }
        gen = torch.Generator().manual_seed(params.seed)
        t0 = time.perf_counter()
        for _ in range(cfg.steps):
            idx = torch.randint(len(x), (cfg.batch_size,), generator=gen)
            xb, yb = x[idx], y[idx]
            for ph in model.phases:
                opts[ph].zero_grad(set_to_none=True)
                model.training_step(xb, yb, ph).loss.backward()
                opts[ph].step()
        times[fam] = time.perf_counter() - t0
    return times


def thread_scaling(params, out: Path, steps: int = 40) -> dict[str, tuple[float, float]]:
    """Seconds per training step of each family with 1 and with 2 torch threads."""
    params = params.model_copy(
        update={"data": params.data.model_copy(update={"prepared_dir": str(out / "prepared")})}
    )
    prepare(params)
    x, y, manifest = load_split(params.data.prepared_dir, "train")
    spec = data_spec(manifest)
    before, result = torch.get_num_threads(), {}
    for fam in params.families:
        per = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            torch.manual_seed(params.seed)
            model = models.build(fam, spec, params.net_config(fam))
            opts = {ph: torch.optim.AdamW(model.phase_parameters(ph), lr=1e-4) for ph in model.phases}
            gen = torch.Generator().manual_seed(params.seed)
            for i in range(steps + 5):  # 5 warm-up steps
                if i == 5:
                    t0 = time.perf_counter()
                idx = torch.randint(len(x), (params.train_config(fam).batch_size,), generator=gen)
                for ph in model.phases:
                    opts[ph].zero_grad(set_to_none=True)
                    model.training_step(x[idx], y[idx], ph).loss.backward()
                    opts[ph].step()
            per.append((time.perf_counter() - t0) / steps)
        result[fam] = (per[0], per[1])
    torch.set_num_threads(before)
    return result


def pipeline_run(profile: str | None, out: Path) -> tuple[float, float, dict]:
    t0, t1 = genzoo_run(out, profile)
    metrics = {p.parent.name: json.loads(p.read_text()) for p in (out / "runs").glob("*/metrics.json")}
    busy = union_seconds([(m["span"]["start"], m["span"]["end"]) for m in metrics.values()])
    return t1 - t0, (t1 - t0) - busy, metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", help="params profile, e.g. quick")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--scaling-only", action="store_true", help="only the 1- vs 2-thread step times")
    args = ap.parse_args()
    params = load_params(ROOT / "params.yaml", profile=args.profile)
    if args.scaling_only:
        print(f"machine: {machine()}")
        with tempfile.TemporaryDirectory(prefix="genzoo-bench-") as tmp:
            for fam, (one, two) in thread_scaling(params, Path(tmp)).items():
                print(f"{fam}: {one * 1e3:.1f} ms/step (1 thread), {two * 1e3:.1f} (2), x{one / two:.2f}")
        return
    bare, walls, overheads = [], [], []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="genzoo-bench-") as tmp:
            times = bare_loops(params, Path(tmp))
            bare.append(sum(times.values()))
            print(f"run {i}: bare loops {bare[-1]:.1f} s { ({k: round(v, 1) for k, v in times.items()}) }")
        with tempfile.TemporaryDirectory(prefix="genzoo-bench-") as tmp:
            wall, overhead, _ = pipeline_run(args.profile, Path(tmp))
            walls.append(wall)
            overheads.append(overhead)
            print(
                f"run {i}: pipeline {wall:.1f} s, of which orchestration (no family running) {overhead:.1f} s"
            )
    with tempfile.TemporaryDirectory(prefix="genzoo-bench-") as tmp:
        scaling = thread_scaling(params, Path(tmp))
    b, w, o = statistics.median(bare), statistics.median(walls), statistics.median(overheads)
    print(f"\nmachine: {machine()}")
    prof = f" --profile {args.profile}" if args.profile else ""
    print(f"params: params.yaml{prof}, {args.repeats} run(s), medians")
    print("| | seconds |\n|---|---|")
    print(f"| sequential bare PyTorch loops (1 process, {torch.get_num_threads()} threads) | {b:.1f} |")
    print(f"| `genzoo run` (Prefect + Ray + MLflow, cold start) | {w:.1f} |")
    print(f"| of which orchestration (no family running) | {o:.1f} |")
    print(f"| ratio pipeline / bare loops | {w / b:.2f} |")
    print("\n| family | ms/step, 1 thread | ms/step, 2 threads | speed-up from the 2nd thread |")
    print("|---|---|---|---|")
    for fam, (one, two) in scaling.items():
        print(f"| {fam} | {one * 1e3:.1f} | {two * 1e3:.1f} | {one / two:.2f} |")
    floor = sum(one * params.train_config(f).steps for f, (one, _) in scaling.items()) / 2
    print(
        f"\ntraining alone on two 1-thread workers, perfectly packed: {floor:.0f} s "
        f"= {floor / b:.2f}x the bare loops (before evaluation, sampling and orchestration)"
    )


if __name__ == "__main__":
    main()
