"""Where a `genzoo run`'s time goes: by stage and family, start-up, idle cores, and how close
the run comes to the ideal packing of its own task times on the cores it had.

    python bench/profile_run.py                          # one default run (what `make run` does)
    python bench/profile_run.py --profile quick --repeats 3
    python bench/profile_run.py --timeline runs/timeline.json   # a run you already made
    python bench/profile_run.py --repeats 3 --against 109bace    # beside another revision's run
    python bench/profile_run.py --families gan --repeats 5 --against HEAD~1 -o models.gan.train.steps=20
                                             # start-up and shut-down, with little in between

Every pipeline run writes ``runs/timeline.json`` (each Ray task on its worker, each stage's
Prefect task on the driver, in the Chrome trace format: open it in https://ui.perfetto.dev).
This script runs the real command line in a fresh folder (a cold start: the flow's own
temporary Prefect server, a local Ray, MLflow tracking), reads that file and prints:

- the wall time: start-up (process start to the flow's first line), the flow, shut-down;
- seconds per stage and family, and the core-seconds they used;
- idle core-seconds (cores x flow time - busy; each task counted as one core, as
  `ray.resources`' defaults reserve: a task given more CPUs is counted low) and the time with no
  task running at all;
- the ideal packing: the same measured task times, their dependencies and the same cores,
  scheduled longest-path first with no gaps (a list schedule), and the lower bound
  max(critical path, work / cores); the ratio wall / ideal.

and draws the timeline (which core ran what, when) to ``--plot``. With ``--against REF``,
each repeat also runs git revision REF's code (exported to a temporary folder, its own
params.yaml), the two alternating in order, and prints both medians and their ratio: a
speed-up measured beside the code it replaces, on the same machine, in the same hour.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import ROOT, genzoo_run, machine, revision, union_seconds  # noqa: E402

# stages that compute on the driver (the others wait on Ray tasks, which are counted there)
DRIVER_WORK = ("prepare", "augment-dataset", "report", "record-in-dvc")
KINDS = ("train-subsets", "train", "evaluator", "evaluate", "detect", "usefulness-reference", "usefulness")


def kind_family(name: str) -> tuple[str, str]:
    """``train-subsets-vae`` -> (``train-subsets``, ``vae``); ``evaluator`` -> (``evaluator``, ``-``)."""
    for kind in KINDS:
        if name == kind:
            return kind, "-"
        if name.startswith(kind + "-"):
            return kind, name[len(kind) + 1 :]
    return name, "-"


def tasks_of(trace: dict) -> list[dict]:
    """The run's work items: each Ray task, and each driver stage that computes on the driver."""
    out = []
    for e in trace["traceEvents"]:
        if e["pid"] == "ray" or (e["pid"] == "driver" and e["name"] in DRIVER_WORK):
            out.append({"name": e["name"], "where": e["tid"] if e["pid"] == "ray" else "driver",
                        "start": e["ts"] / 1e6, "seconds": e["dur"] / 1e6})  # fmt: skip
    return out


def depends_on(name: str, names: set[str]) -> set[str]:
    """What must finish before ``name`` starts (the flow's own order)."""
    kind, fam = kind_family(name)
    trains = {n for n in names if kind_family(n)[0] in ("train", "train-subsets", "evaluator")}
    need: set[str] = {"prepare"} if name != "prepare" else set()
    if kind == "evaluate":
        need |= {f"train-{fam}", "evaluator"}
    elif kind == "detect":
        need |= {f"evaluate-{fam}"}
    elif kind == "usefulness":
        need |= {f"train-{fam}", f"train-subsets-{fam}", "usefulness-reference"}
    elif name == "report":
        need |= {n for n in names if n not in DRIVER_WORK} | trains
    elif name == "augment-dataset":
        need |= {"report"}
    elif name == "record-in-dvc":
        need |= {"augment-dataset"}
    return need & names


def ideal_packing(tasks: list[dict], cores: int) -> tuple[float, float]:
    """(list-schedule makespan, lower bound) of the measured tasks on ``cores`` slots."""
    dur = {t["name"]: t["seconds"] for t in tasks}
    names = set(dur)
    deps = {n: depends_on(n, names) for n in names}
    tail: dict[str, float] = {}

    def path(n: str) -> float:  # the longest chain from n to the end, n included
        if n not in tail:
            after = [m for m in names if n in deps[m]]
            tail[n] = dur[n] + max((path(m) for m in after), default=0.0)
        return tail[n]

    critical = max(path(n) for n in names)
    done: dict[str, float] = {}
    free = [0.0] * cores
    left = set(names)
    while left:
        ready = [n for n in left if deps[n] <= set(done)]
        n = max(ready, key=path)  # longest remaining path first
        slot = min(range(cores), key=lambda i: free[i])
        start = max(free[slot], max((done[d] for d in deps[n]), default=0.0))
        done[n] = free[slot] = start + dur[n]
        left.remove(n)
    return max(done.values()), max(critical, sum(dur.values()) / cores)


def analyse(trace: dict, process: tuple[float, float] | None = None) -> dict:
    meta = trace["otherData"]
    flow_s = meta["end"] - meta["start"]
    cores = int(meta["cpus"])
    tasks = tasks_of(trace)
    busy = sum(t["seconds"] for t in tasks)
    packed, bound = ideal_packing(tasks, cores)
    by = defaultdict(float)
    for t in tasks:
        by[kind_family(t["name"])] += t["seconds"]
    out = {
        "flow_s": flow_s,
        "cores": cores,
        "busy_core_s": busy,
        "idle_core_s": cores * flow_s - busy,
        "nothing_running_s": flow_s - union_seconds([(t["start"], t["start"] + t["seconds"]) for t in tasks]),
        "ideal_s": packed,
        "bound_s": bound,
        "by": dict(by),
        "tasks": tasks,
    }
    if "summary" in trace:  # the same quality? the report's figures and targets
        out["summary"] = trace["summary"]
    if "weights" in trace:
        out["weights"] = trace["weights"]
    if process:
        out["wall_s"] = process[1] - process[0]
        out["startup_s"] = meta["start"] - process[0]
        out["shutdown_s"] = process[1] - meta["end"]
    return out


def plot(trace: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = tasks_of(trace)
    rows = ["driver", *sorted({t["where"] for t in tasks} - {"driver"})]
    colours = dict(zip(KINDS + DRIVER_WORK, plt.get_cmap("tab20").colors, strict=False))
    fig, ax = plt.subplots(figsize=(12, 0.5 * len(rows) + 1.5))
    for t in tasks:
        kind, fam = kind_family(t["name"])
        y = rows.index(t["where"])
        ax.barh(y, t["seconds"], left=t["start"], color=colours.get(kind, "grey"), edgecolor="white")
        ax.text(t["start"] + t["seconds"] / 2, y, fam if fam != "-" else kind, ha="center", va="center",
                fontsize=7, clip_on=True)  # fmt: skip
    ax.set_yticks(range(len(rows)), ["driver"] + [f"worker {i}" for i in range(1, len(rows))])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the flow started")
    ax.set_title(title)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for k, c in colours.items()]
    ax.legend(handles, list(colours), ncol=6, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_once(profile: str | None, out: Path, overrides: list[str], code: Path | None = None,
             families: str | None = None) -> tuple[dict, tuple[float, float]]:  # fmt: skip
    """One cold-start ``genzoo run`` in ``out`` (of ``code``, else this checkout): its timeline
    (with the report's summary and the digest of every weights file the run wrote: models,
    evaluator, judges, teachers, the usefulness measurement's generators)."""
    process = genzoo_run(out, profile, overrides, code=code, families=families)
    trace = json.loads((out / "runs" / "timeline.json").read_text())
    trace["summary"] = json.loads((out / "runs" / "report" / "summary.json").read_text())
    # by content alone: a teacher's file is named by a key that hashes the evaluator's code
    trace["weights"] = sorted(tensors_digest(p) for p in (out / "runs").rglob("*.safetensors"))
    return trace, process


def tensors_digest(path: Path) -> str:
    """sha256 of a safetensors file's tensors (names, dtypes, shapes, values), not its metadata."""
    import torch
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(path, "pt") as f:
        for name in sorted(f.keys()):
            t = f.get_tensor(name).contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def other_run(ref: str, code: Path, profile: str | None, overrides: list[str], i: int,
              families: str | None = None) -> dict:  # fmt: skip
    """One cold-start ``genzoo run`` of revision ``ref``'s exported ``code``: its analysis
    (printed: wall seconds, its flow's time and the ideal packing of its tasks)."""
    with tempfile.TemporaryDirectory(prefix="genzoo-bench-") as tmp:
        trace, process = run_once(profile, Path(tmp), overrides, code=code, families=families)
    r = analyse(trace, process)
    print(f"run {i} of {ref}: {r['wall_s']:.1f} s (flow {r['flow_s']:.1f}, ideal packing {r['ideal_s']:.1f}, "
          f"ratio {r['flow_s'] / r['ideal_s']:.2f})", flush=True)  # fmt: skip
    return r


def compare(ref: str, other: list[dict], this: list[dict]) -> None:
    """Medians of the two revisions' runs side by side: the whole run and its parts."""
    print(f"\n| median of {len(other)} | {ref} | this checkout | ratio |\n|---|---|---|---|")
    for key, what in (("wall_s", "whole `genzoo run`"), ("startup_s", "start-up before the flow"),
                      ("flow_s", "the flow"), ("shutdown_s", "shut-down after the flow")):  # fmt: skip
        a, b = statistics.median(r[key] for r in other), statistics.median(r[key] for r in this)
        # the runs alternate: run i of each is a pair; the median of the pairs' ratios
        paired = statistics.median(t[key] / o[key] for o, t in zip(other, this, strict=True) if o[key])
        ratio = f"**{paired:.2f}x**" if key == "wall_s" else f"{paired:.2f}x"
        print(f"| {what} (s) | {a:.1f} | {b:.1f} | {ratio} |")
    pairs = [
        (o["weights"], t["weights"])
        for o, t in zip(other, this, strict=True)
        if "weights" in o and "weights" in t
    ]
    if pairs:  # a speed-up that changes what is trained is another model, not the same one sooner
        same = sum(a == b for a, b in pairs)
        print(
            f"\nweights files ({len(pairs[0][1])} per run) identical to {ref}'s in {same} of {len(pairs)} "
            "pair(s) of runs"
        )


def report(results: list[dict]) -> None:
    med = lambda key: statistics.median(r[key] for r in results)  # noqa: E731
    n = len(results)
    print(f"\nmachine: {machine()}")
    print(f"{n} run(s); medians\n")
    print("| | seconds |\n|---|---|")
    if "wall_s" in results[0]:
        print(f"| whole `genzoo run` (process start to exit) | {med('wall_s'):.1f} |")
        print(f"| start-up (imports, Prefect's temporary server) before the flow | {med('startup_s'):.1f} |")
        print(f"| shut-down after the flow | {med('shutdown_s'):.1f} |")
    print(f"| the flow | {med('flow_s'):.1f} |")
    print(f"| of which nothing running (orchestration, waits) | {med('nothing_running_s'):.1f} |")
    print(f"| cores | {results[0]['cores']} |")
    print(f"| busy core-seconds | {med('busy_core_s'):.1f} |")
    idle_share = statistics.median(r["idle_core_s"] / (r["cores"] * r["flow_s"]) for r in results)
    print(f"| idle core-seconds | {med('idle_core_s'):.1f} ({idle_share:.0%}) |")
    print(f"| ideal packing of the same tasks (list schedule) | {med('ideal_s'):.1f} |")
    print(f"| lower bound: max(critical path, work / cores) | {med('bound_s'):.1f} |")
    packing = statistics.median(r["flow_s"] / r["ideal_s"] for r in results)
    print(f"| flow / ideal packing (each run's ratio) | {packing:.2f} |")
    keys = sorted({k for r in results for k in r["by"]}, key=lambda k: (KINDS + DRIVER_WORK).index(k[0])
                  if k[0] in KINDS + DRIVER_WORK else 99)  # fmt: skip
    fams = sorted({f for _, f in keys if f != "-"})
    print("\n| stage | " + " | ".join(fams) + " | (one) | total |")
    print("|---" * (len(fams) + 3) + "|")
    for kind in dict.fromkeys(k for k, _ in keys):
        cells = []
        for f in [*fams, "-"]:
            v = [r["by"].get((kind, f)) for r in results if (kind, f) in r["by"]]
            cells.append(f"{statistics.median(v):.1f}" if v else "")
        total = statistics.median(sum(s for (k, _), s in r["by"].items() if k == kind) for r in results)
        print(f"| {kind} | " + " | ".join(cells) + f" | {total:.1f} |")


def quality(results: list[dict]) -> None:
    """Each run's sample quality and the report's targets: a faster run must keep them."""
    for i, r in enumerate(results):
        if "summary" not in r:
            continue
        s, t = r["summary"], r["summary"]["targets"]
        fams = ", ".join(
            f"{f} FD {v['fd']:.3f}" + (f" ({v['test_bpd']:.3f} bits/dim)" if "test_bpd" in v else "")
            for f, v in sorted(s["families"].items())
        )
        met = "met" if t["best_met"] else "missed"
        print(f"run {i}: {fams}; PCA + KDE FD {t['pca_kde_fd']:.3f}, every family below it: "
              f"{t['all_below_pca_kde']}; best {t['best_family']} at {t['best_ratio_to_floor']:.2f}x the "
              f"real-vs-real floor (target {t['best_within']}x: {met})")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", help="params profile, e.g. quick")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("-o", "--override", action="append", default=[], help="key=value, as `genzoo run -o`")
    ap.add_argument("--timeline", type=Path, help="analyse this timeline.json instead of running")
    ap.add_argument(
        "--plot",
        type=Path,
        default=ROOT / "runs" / "bench" / "profile_run.png",
        help="the timeline (README's is bench/figures/profile_run.png: pass it to replace that)",
    )
    ap.add_argument("--keep", type=Path, help="copy each run's timeline.json here")
    ap.add_argument("--against", metavar="REF", help="also run this git revision's code, alternating")
    ap.add_argument("--families", help="comma-separated: `genzoo run --families`")
    args = ap.parse_args()
    results, trace = [], None
    if args.timeline:
        trace = json.loads(args.timeline.read_text())
        results.append(analyse(trace))
    against: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="genzoo-against-") as code_dir:
        code = revision(args.against, Path(code_dir)) if args.against else None
        for i in range(0 if args.timeline else args.repeats):
            if code is not None and i % 2 == 0:  # alternate which goes first
                against.append(other_run(args.against, code, args.profile, args.override, i, args.families))
            with tempfile.TemporaryDirectory(prefix="genzoo-bench-") as tmp:
                trace, process = run_once(args.profile, Path(tmp), args.override, families=args.families)
            if code is not None and i % 2 == 1:
                against.append(other_run(args.against, code, args.profile, args.override, i, args.families))
            results.append(analyse(trace, process))
            r = results[-1]
            print(
                f"run {i}: {r['wall_s']:.1f} s (flow {r['flow_s']:.1f}, ideal packing {r['ideal_s']:.1f}, "
                f"ratio {r['flow_s'] / r['ideal_s']:.2f})",
                flush=True,
            )
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                (args.keep / f"timeline-{i}.json").write_text(json.dumps(trace))
    report(results)
    if against:
        compare(args.against, against, results)
    print()
    quality(results)
    title = f"genzoo run{' --profile ' + args.profile if args.profile else ''}: {results[-1]['flow_s']:.0f} s"
    plot(trace, args.plot, title)
    print(f"\ntimeline plot: {args.plot}")


if __name__ == "__main__":
    main()
