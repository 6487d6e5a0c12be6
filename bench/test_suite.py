"""How long the test suite takes (issue 14: `make test` at most 10 minutes on 2 cores), and
where its CPU goes.

Runs pytest the way `make test` does (the pytest line of `make -n test`), from a cold start,
and prints its wall time, pytest's own figure, the whole machine's busy core-seconds
(psutil) and the CPU seconds of every process the suite started, by kind (the pytest
workers, Prefect servers, Ray workers and daemons, `genzoo` and `dvc` commands, ...), sampled
every 0.25 s (a process that lives less than that is missed). With ``--against REF`` the suite
of git revision REF (its tests, its code, its Makefile's pytest line) runs too, alternating
which goes first, and the medians are compared. Before the first timed run each tree's suite
is collected once, untimed (`pytest --collect-only`): an exported revision has no bytecode nor
pytest's rewritten test modules yet, this checkout has both, and its first run would otherwise
pay the compiling alone. The suite is CPU-bound on 2 cores: compare figures from one sitting
only (the same machine's speed moves by 10-20% through a day).

    python bench/test_suite.py [--repeats N] [--against REF] [-- EXTRA PYTEST ARGS]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import machine, revision  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def kind(comm: str, cmd: str) -> str:
    """What a process of the suite is, from its name and command line."""
    rules = (
        (comm.startswith("ray::"), "Ray workers"),
        ("exec(eval(sys.stdin" in cmd or "bin/pytest" in cmd, "pytest and its workers (in-process tests)"),
        ("uvicorn" in cmd or "prefect server" in cmd or "prefect.server" in cmd, "Prefect servers"),
        ("prefect.engine" in cmd or "bin/prefect" in cmd, "Prefect commands and served runs"),
        (comm in ("gcs_server", "raylet") or "site-packages/ray/" in cmd or "bin/ray " in cmd, "Ray daemons"),
        ("chrom" in comm or "playwright" in cmd, "Chromium"),
        ("genzoo.tasks." in cmd, "DVC stages (python -m genzoo.tasks.*)"),
        ("bin/dvc" in cmd or "-m dvc" in cmd, "dvc commands"),
        ("bin/genzoo" in cmd or "genzoo.flows.cli" in cmd, "genzoo commands"),
        ("spawn_main" in cmd, "multiprocessing (spawn)"),
        ("mlflow" in cmd, "MLflow"),
        ("bench/" in cmd, "bench scripts"),
    )
    return next((name for hit, name in rules if hit), "other Python" if "python" in cmd else "other")


def busy_core_seconds() -> float:
    """This machine's CPU seconds spent running anything so far (not idle, waiting or stolen)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def sample(proc: psutil.Process, seen: dict[tuple[int, float], list]) -> None:
    """Each live process under ``proc``: its CPU seconds so far, name and command line, under
    (pid, start time); the latest name (a Ray worker renames itself), never an exiting one's blank."""
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(psutil.Error), p.oneshot():
            t, key, cmdline = p.cpu_times(), (p.pid, p.create_time()), " ".join(p.cmdline())
            if cmdline:
                seen[key] = [t.user + t.system, p.name(), cmdline]
            elif key in seen:
                seen[key][0] = t.user + t.system


def pytest_command(tree: Path) -> list[str]:
    """The pytest line `make test` runs in ``tree`` (this checkout's venv), without --durations."""
    venv = Path(sys.executable).parent.parent
    dry = subprocess.run(["make", "-n", "-s", "test", f"VENV={venv}", "ARGS="], cwd=tree, capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    line = next(line for line in dry.splitlines() if "/bin/pytest" in line)
    return [a for a in shlex.split(line) if not a.startswith("--durations")]


def warm(tree: Path, env: dict[str, str], extra: list[str]) -> None:
    """Collect ``tree``'s suite once, untimed: its modules compiled and pytest's rewritten test
    modules cached, as in a checkout where the suite has run before."""
    cmd = [*pytest_command(tree), "-p", "no:cacheprovider", "--collect-only", "-q", *extra]
    subprocess.run(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_suite(tree: Path, env: dict[str, str], extra: list[str]) -> dict:
    """One run of the suite in ``tree``: wall seconds, pytest's summary, busy core-seconds and
    the CPU seconds of the processes it started, by kind."""
    cmd = [*pytest_command(tree), "-p", "no:cacheprovider", *extra]
    seen: dict[tuple[int, float], list] = {}  # (pid, start time) -> [cpu, name, cmdline]
    busy0, t0 = busy_core_seconds(), time.monotonic()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
        watched = psutil.Process(proc.pid)
        while proc.poll() is None:
            sample(watched, seen)
            time.sleep(0.25)
        wall, busy = time.monotonic() - t0, busy_core_seconds() - busy0
        out.seek(0)
        text = out.read()
    summary = next(
        (line.strip("= ") for line in reversed(text.splitlines()) if " in " in line and "passed" in line), ""
    )
    pytest_s = re.search(r" in ([\d.]+)s", summary)
    by_kind: dict[str, float] = collections.Counter()
    for cpu, comm, cmdline in seen.values():
        by_kind[kind(comm, cmdline)] += cpu
    if proc.returncode != 0:
        print("\n".join(text.splitlines()[-30:]), flush=True)
    return {
        "wall_s": wall,
        "pytest_s": float(pytest_s[1]) if pytest_s else float("nan"),
        "busy": busy,
        "summary": summary or f"exit {proc.returncode}",
        "rc": proc.returncode,
        "kinds": by_kind,
    }


def share_venv(tree: Path) -> None:
    """Let the tests of the exported ``tree`` that call `make` (`make serve`, `make mlflow`) use
    this checkout's venv without reinstalling into it: ``tree/.venv`` links to it, and the
    tree's files are dated to the epoch, so the venv's install stamp is newer than any of them
    (a newer pyproject.toml would make `make` install the tree, a folder deleted afterwards,
    as this venv's genzoo)."""
    venv = Path(sys.executable).parent.parent
    if not (venv / ".genzoo-installed").exists():
        sys.exit(f"{venv}: no .genzoo-installed stamp; run `make install` first")
    for path in tree.rglob("*"):
        os.utime(path, (0, 0), follow_symlinks=False)
    (tree / ".venv").symlink_to(venv)


def line(name: str, r: dict) -> str:
    return (
        f"{name}: {r['wall_s']:.1f} s ({r['pytest_s']:.1f} s of pytest), "
        f"{r['busy']:.0f} busy core-seconds; {r['summary']}"
    )


def table(names: list[str], runs: list[list[dict]]) -> None:
    print(
        f"\n| median of {len(runs[0])} | " + " | ".join(names) + (" | ratio |" if len(names) == 2 else " |")
    )
    print("|---" * (len(names) + 1 + (len(names) == 2)) + "|")
    rows = [("wall (s)", lambda r: r["wall_s"]), ("pytest (s)", lambda r: r["pytest_s"]),
            ("busy core-seconds", lambda r: r["busy"])]  # fmt: skip
    kinds = sorted(
        {k for rs in runs for r in rs for k in r["kinds"]}, key=lambda k: -runs[-1][0]["kinds"].get(k, 0)
    )
    rows += [(f"CPU s: {k}", lambda r, k=k: r["kinds"].get(k, 0.0)) for k in kinds]
    for what, get in rows:
        meds = [statistics.median(get(r) for r in rs) for rs in runs]
        ratio = (
            f" | {meds[1] / meds[0]:.2f}x"
            if len(meds) == 2 and meds[0]
            else (" | -" if len(meds) == 2 else "")
        )
        print(f"| {what} | " + " | ".join(f"{m:.1f}" for m in meds) + ratio + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each suite (their median)")
    ap.add_argument("--against", metavar="REF", help="also run this git revision's suite, alternating")
    ap.add_argument("extra", nargs="*", help="more pytest arguments (after --)")
    args = ap.parse_args()
    print(machine(), flush=True)
    env = {**os.environ}
    env.pop("PREFECT_API_URL", None)  # each suite starts what it starts
    mine: list[dict] = []
    theirs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="genzoo-against-") as code_dir:
        other = None
        if args.against:
            other = revision(args.against, Path(code_dir))
            share_venv(other)
            path = [str(other.parent / "pkg"), env.get("PYTHONPATH")]  # its package first, for every process
            other_env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, path))}
            warm(other, other_env, args.extra)
        warm(ROOT, env, args.extra)
        for i in range(args.repeats):
            order = ["mine"] if other is None else ["theirs", "mine"] if i % 2 == 0 else ["mine", "theirs"]
            for who in order:
                if who == "mine":
                    mine.append(run_suite(ROOT, env, args.extra))
                    print(line(f"run {i}, this checkout", mine[-1]), flush=True)
                else:
                    theirs.append(run_suite(other, other_env, args.extra))
                    print(line(f"run {i}, {args.against}", theirs[-1]), flush=True)
    if theirs:
        table([args.against, "this checkout"], [theirs, mine])
    else:
        table(["this checkout"], [mine])
    if any(r["rc"] != 0 for r in mine + theirs):
        sys.exit(1)


if __name__ == "__main__":
    main()
