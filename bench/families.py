"""Per-family figures for the whole `genzoo run`: training time, sampling speed, test
bits/dim (exact or bound, labelled), sample quality with the reference rows and the targets
(from the evaluation stage), and the end-to-end wall time.

    python bench/families.py                      # default params (what `make run` does)
    python bench/families.py --profile quick --repeats 3
    python bench/families.py --out /tmp/ema -o models.vae.train.ema_decay=0.995   # with overrides

Runs the real command line in a subprocess (outputs under --out, the repository's runs/ is
left alone) and prints medians over --repeats runs as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )


def revision(ref: str, dest: Path) -> Path:
    """Git revision ``ref`` of this repository exported under ``dest`` (``git archive``: the
    repository, its worktrees and its index are left alone), with ``dest/pkg/genzoo`` laid out
    as the installed package (the top-level folders as its subpackages). Returns the tree."""
    tree = dest / "tree"
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    # the revision's own package-dir mapping ("genzoo.models" = "models", ...), linked as installed
    # (the subpackages' links land in the exported genzoo/ folder, inside dest)
    mapping = tomllib.loads((tree / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for name, folder in sorted(mapping.items()):  # "genzoo" before its subpackages
        link = dest / "pkg" / name.replace(".", "/")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(tree / folder, target_is_directory=True)
    return tree


def genzoo_run(
    out: Path,
    profile: str | None = None,
    overrides: list[str] = (),
    code: Path | None = None,
    families: str | None = None,
) -> tuple[float, float]:
    """The real ``genzoo run`` on params.yaml with every output under ``out`` (runs, checkpoints,
    prepared data, MLflow's store, Prefect's home) from a cold start (the flow's own temporary
    Prefect server); returns its start and end (epoch seconds). ``code``: a tree from
    :func:`revision`, run with its own package and params.yaml instead of this checkout's;
    ``families``: ``--families`` (comma-separated)."""
    params = (code or ROOT) / "params.yaml"
    cmd = [str(Path(sys.executable).parent / "genzoo"), "run", "-q", "--params", str(params)]
    folders = {"run.runs_dir": "runs", "run.checkpoints_dir": "ckpt", "data.prepared_dir": "prepared"}
    cmd += [arg for key, sub in folders.items() for arg in ("-o", f"{key}={out / sub}")]
    cmd += [arg for o in overrides for arg in ("-o", o)]
    if profile:
        cmd += ["--profile", profile]
    if families:
        cmd += ["--families", families]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}",  # tracked, like make run
        "PREFECT_HOME": str(out / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # a fresh Prefect home's first server builds its database, which can outlast Prefect's 20 s
        # wait on 2 cores (genzoo's CLI allows 180 s since 15800b1; here older revisions get it too)
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    env.pop("PREFECT_API_URL", None)
    if code is not None:  # its package first on the path, for the driver and every Ray worker
        env["PYTHONPATH"] = os.pathsep.join([str(code.parent / "pkg"), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    t0 = time.time()
    with open(out / "genzoo-run.log", "w") as log:  # what the run printed, for a failed run's error
        r = subprocess.run(cmd, cwd=out, env=env, stdout=log, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        tail = "\n".join((out / "genzoo-run.log").read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"genzoo run failed (exit {r.returncode}); the end of its output:\n{tail}")
    return t0, time.time()


def union_seconds(spans: list[tuple[float, float]]) -> float:
    """The length of the union of ``(start, end)`` intervals: time with at least one running."""
    total, cur = 0.0, None
    for s, e in sorted(spans):
        if cur is None or s > cur[1]:
            total += 0 if cur is None else cur[1] - cur[0]
            cur = [s, e]
        else:
            cur[1] = max(cur[1], e)
    return total + (cur[1] - cur[0] if cur else 0.0)


def train_split(overrides: list[str] = ()):
    """params.yaml (with ``overrides``) and its prepared training split: (params, x, y, spec)."""
    import tempfile

    from genzoo.tasks.config import load_params
    from genzoo.tasks.prepare import data_spec, load_split, prepare

    with tempfile.TemporaryDirectory() as tmp:
        params = load_params(ROOT / "params.yaml", [*overrides, f"data.prepared_dir={tmp}/prepared"])
        prepare(params)
        x, y, manifest = load_split(params.data.prepared_dir, "train")
    return params, x, y, data_spec(manifest)


def step_bench(doc: str, steps: int):
    """The command line of the one-thread step benchmarks (--steps, --repeats, --families): parsed,
    torch on one thread, the machine line printed. Returns (args, params, x, y, spec)."""
    import argparse

    import torch

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--families", nargs="+", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    params, x, y, spec = train_split()
    print(f"machine: {machine()}; 1 thread; {args.steps} steps, median of {args.repeats}")
    return args, params, x, y, spec


def one_run(profile: str | None, out: Path, overrides: list[str] = ()) -> tuple[float, dict[str, dict]]:
    t0, t1 = genzoo_run(out, profile, overrides)
    (out / "wall_seconds.txt").write_text(f"{t1 - t0:.1f}\n")
    return t1 - t0, read_run(out)


def read_run(out: Path) -> dict[str, dict]:
    """What a run wrote: per family metrics and quality, the reference rows, the report's summary,
    and the usefulness, latent and anomaly figures where they were measured."""
    ev = out / "runs" / "evaluation"
    metrics = {
        p.parent.name: {
            **json.loads(p.read_text()),
            "quality": json.loads((ev / p.parent.name / "quality.json").read_text()),
        }
        for p in (out / "runs").glob("*/metrics.json")
        if (ev / p.parent.name / "quality.json").exists()
    }
    metrics["reference"] = json.loads((ev / "evaluator" / "reference.json").read_text())
    metrics["summary"] = json.loads((out / "runs" / "report" / "summary.json").read_text())
    extra = {"usefulness": "usefulness.json", "anomaly": "anomaly.json"}
    for key, name in extra.items():
        metrics[key] = {p.parent.name: json.loads(p.read_text()) for p in ev.glob(f"*/{name}")}
    ref = ev / "usefulness" / "reference.json"
    metrics["usefulness_reference"] = json.loads(ref.read_text()) if ref.exists() else None
    return metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", help="params profile, e.g. quick")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", help="the runs' folder (default: a new temporary one); its run<i>/ are replaced")
    ap.add_argument("--reuse", action="store_true", help="print the figures of the runs already in --out")
    ap.add_argument("-o", "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                    help="a params override for every run, as `genzoo run -o` (repeatable)")  # fmt: skip
    args = ap.parse_args()
    if args.reuse and not args.out:
        sys.exit("--reuse: give --out, the folder of the runs to read")
    args.out = args.out or tempfile.mkdtemp(prefix="genzoo-bench-")
    print(f"runs in {args.out} (read them again with --reuse --out {args.out})", file=sys.stderr)
    walls, runs = [], []
    for i in range(args.repeats):
        out = Path(args.out) / f"run{i}"
        if args.reuse:
            if not (out / "wall_seconds.txt").is_file():
                sys.exit(f"{out}: no run of bench/families.py there (wall_seconds.txt missing)")
            walls.append(float((out / "wall_seconds.txt").read_text()))
            runs.append(read_run(out))
            continue
        # only a real folder this script marked is deleted (an empty one is reused); a link is not followed
        marked = out.is_dir() and not out.is_symlink() and (out / ".genzoo-bench").is_file()
        if out.is_symlink() or (out.exists() and not marked and (not out.is_dir() or any(out.iterdir()))):
            sys.exit(f"{out}: not a run of bench/families.py; give another --out (nothing is deleted)")
        if marked:
            shutil.rmtree(out)  # an earlier run of this script, replaced
        out.mkdir(parents=True, exist_ok=True)
        (out / ".genzoo-bench").touch()  # the mark of a folder this script may replace
        print(
            f"run {i + 1}/{args.repeats}: genzoo run in {out} (its log: {out / 'genzoo-run.log'}) ...",
            file=sys.stderr,
        )
        wall, metrics = one_run(args.profile, out, args.overrides)
        walls.append(wall)
        runs.append(metrics)
        print(f"run {i + 1}/{args.repeats}: {wall:.1f} s", file=sys.stderr)
    med = statistics.median
    print(f"machine: {machine()}")
    print(f"profile: {args.profile or 'default'}; median of {args.repeats} run(s)"
          + "".join(f"; -o {o}" for o in args.overrides))  # fmt: skip
    print(
        f"whole `genzoo run` (prepare + train + evaluate every family): {med(walls):.1f} s "
        f"(min {min(walls):.1f}, max {max(walls):.1f})\n"
    )
    print("| family | steps | train time (s) | s/step | samples/s | test bits/dim | estimator |")
    print("|---|---|---|---|---|---|---|")
    from genzoo.tasks.config import load_params

    order = load_params(ROOT / "params.yaml").families
    for fam in sorted((f for f in runs[0] if f in order), key=order.index):
        rows = [r[fam] for r in runs]
        t = med(r["train_seconds"] for r in rows)
        bpd = med(r["test_bpd"] for r in rows) if "test_bpd" in rows[0] else None
        print(
            f"| {fam} | {rows[0]['steps']} | {t:.1f} | {t / rows[0]['steps']:.3f} | "
            f"{med(r['samples_per_second'] for r in rows):.1f} | "
            f"{'-' if bpd is None else f'{bpd:.3f}'} | {rows[0].get('bpd_estimator') or 'none (GAN)'} |"
        )
    print("\n| | Fréchet distance (± 95% CI) | KID | precision | recall | coverage | class accuracy "
          "| images/s | latency (ms) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    keys = ("kid", "precision", "recall", "coverage", "class_accuracy")
    rows = [(f, [r[f]["quality"] for r in runs]) for f in order if f in runs[0]]
    rows += [(f"reference: {k}", [r["reference"][k] for r in runs])
             for k in ("real_train_vs_test", "pca_kde", "gmm", "uniform_noise")]  # fmt: skip
    for name, q in rows:
        cells = [f"{med(x['fd'] for x in q):.3f} ± {med(x['ci95']['fd'] for x in q):.3f}"]
        cells += [f"{med(x[k] for x in q):.3f}" if k in q[0] else "-" for k in keys]
        cells.append(f"{med(x['images_per_second'] for x in q):.0f}" if "images_per_second" in q[0] else "-")
        cells.append(f"{med(x['latency_ms'] for x in q):.1f}" if "latency_ms" in q[0] else "-")
        print(f"| {name} | " + " | ".join(cells) + " |")
    gmm = [r["reference"]["gmm"]["test_bpd"] for r in runs]
    print(f"\nGaussian-mixture baseline: {med(gmm):.3f} test bits/dim (uniform dequantisation)")
    t = runs[0]["summary"]["targets"]
    print(f"targets (run 1): every family below PCA + KDE ({t['pca_kde_fd']:.3f}): {t['all_below_pca_kde']}; "
          f"best {t['best_family']} at {t['best_ratio_to_floor']:.2f}x the floor ({t['floor_fd']:.3f}), "
          f"within {t['best_within']}x: {t['best_met']}")  # fmt: skip
    levels = json.loads((Path(args.out) / "run0" / "prepared" / "manifest.json").read_text())["levels"]
    print(f"\nreference: the uniform distribution over {levels} levels is {math.log2(levels):.3f} bits/dim")
    extras(runs[0])


def _cell(s: dict, sign: str = "") -> str:
    return f"{100 * s['mean']:{sign}.1f} ± {100 * s['ci95']:.1f}"


def extras(run: dict) -> None:
    """Run 1's latent smoothness, usefulness and anomaly figures (when measured)."""
    fams = {f: d for f, d in run.items() if isinstance(d, dict) and "quality" in d}
    lat = {f: d["quality"]["latent"] for f, d in fams.items() if d["quality"].get("latent")}
    if lat:
        print("\n| latent smoothness (run 1) | path | mean step | / real NN distance | path / straight "
              "| largest / mean step |\n|---|---|---|---|---|---|")  # fmt: skip
        for f, d in lat.items():
            for mode, s in d["smoothness"].items():
                print(f"| {f} ({d['kind']}) | {mode} | {s['mean_step']:.3f} | "
                      f"{s['mean_step_over_real_nn']:.2f} | {s['path_ratio']:.2f} | "
                      f"{s['max_step_ratio']:.2f} |")  # fmt: skip
    ref = run.get("usefulness_reference")
    if ref and run["usefulness"]:
        clfs, proto = ref["protocol"]["classifiers"], ref["protocol"]
        recipe = proto["primary_recipe"]
        k = proto["recipes"][recipe]["synthetic_per_real"]
        print(f"\nusefulness (run 1; recipe {recipe}, k = {k:g}, {proto['seeds']} seeds; "
              "accuracy %, lifts in points, ± 95% interval)")  # fmt: skip
        for p, per in ref["real"].items():
            print(f"real only at {100 * float(p):g}%: " + ", ".join(f"{c} {_cell(per[c])}" for c in clfs))
        for name, d in [("pca_kde", ref["pca_kde"]), *run["usefulness"].items()]:
            print(f"{name}: train on synthetic " + ", ".join(f"{c} {_cell(d['tstr'][c])}" for c in clfs))
            for p, per in d["augmentation"].items():
                lifts = ", ".join(f"{c} {_cell(per[c]['lift'], '+')}" for c in clfs)
                print(f"  lift at {100 * float(p):g}%: {lifts}")
        for r in (run["summary"].get("usefulness") or {}).get("rows", []):  # the report's targets
            value = (f"{100 * r['value']:+.1f} ± {100 * r['ci95']:.1f} points" if r["ci95"] is not None
                     else f"{100 * r['value']:.1f}%")  # fmt: skip
            of, on = r.get("of", 1), r.get("chosen_on", "test")
            chosen = f", best of {of} on the {on} split" if of > 1 else ""
            recipe = f" ({r['recipe']})" if r.get("recipe") else ""
            met = "met" if r["met"] else "missed"
            print(f"target {met}: {r['target']}: {r['family']}{recipe} {value}{chosen}")
    for f, a in run.get("anomaly", {}).items():
        scores = ("likelihood", "typicality", "likelihood_ratio")
        cells = ", ".join(
            f"{k} " + "/".join(f"{v[s]['auroc']:.3f}" for s in scores) for k, v in a["sets"].items()
        )
        print(f"anomaly AUROC {f} (likelihood/typicality/ratio): {cells}")


if __name__ == "__main__":
    main()
