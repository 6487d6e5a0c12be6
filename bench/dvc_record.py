"""How long `genzoo run` takes to record its stages in dvc.lock: ``python -m genzoo.flows.record``
(dvc.yaml and dvc.lock read and written once) against ``dvc commit --force`` of the same stages
(each target parsing both files anew), in a project where a run has been recorded.

    cd <a project after `genzoo run`> && python <genzoo>/bench/dvc_record.py            # median of 5
    python bench/dvc_record.py --repo /path/to/project --repeats 7

Each repeat times both commands, taking turns at going first, as fresh processes (as the
pipeline starts them), on every stage dvc.lock records; both must leave dvc.lock byte for byte
as it was (checked after each). The figures are medians, the ratio the median of each repeat's
own ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import machine  # noqa: E402


def timed(cmd: list[str], repo: Path, lock: bytes) -> float:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed: {proc.stderr.strip()[-500:]}")
    if "genzoo.flows.record" in cmd and (refused := json.loads(proc.stdout.splitlines()[-1])["refused"]):
        raise SystemExit(f"genzoo.flows.record refused {refused}: record the project's run first")
    if (repo / "dvc.lock").read_bytes() != lock:
        (repo / "dvc.lock").write_bytes(lock)  # the project's record as it was
        raise SystemExit(f"{' '.join(cmd[:4])} ... changed dvc.lock: record the project's run first")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=Path.cwd(), help="a project whose run is recorded")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    repo = args.repo.resolve()
    if not (repo / "dvc.lock").exists():
        raise SystemExit(f"{repo / 'dvc.lock'}: no record here (run `genzoo run` in {repo} first)")
    lock = (repo / "dvc.lock").read_bytes()
    stages = list(yaml.safe_load(lock)["stages"])
    ways = {
        "genzoo.flows.record": [sys.executable, "-m", "genzoo.flows.record", *stages],
        "dvc commit --force": [sys.executable, "-m", "dvc", "commit", "--force", *stages],
    }
    print(
        f"machine: {machine()}\n{repo}: {len(stages)} stages, dvc.lock {len(lock) / 1024:.0f} KiB\n",
        flush=True,
    )
    times: dict[str, list[float]] = {name: [] for name in ways}
    ratios = []
    for r in range(args.repeats):
        order = list(ways) if r % 2 == 0 else list(reversed(ways))
        for name in order:
            times[name].append(timed(ways[name], repo, lock))
        ratios.append(times["genzoo.flows.record"][-1] / times["dvc commit --force"][-1])
        print(f"repeat {r + 1}: " + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items()), flush=True)
    print("\n| command | median (s) |\n|---|---|")
    for name, t in times.items():
        print(f"| {name} | {statistics.median(t):.2f} |")
    print(f"\nratio (record / dvc commit), median of the repeats' own: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
