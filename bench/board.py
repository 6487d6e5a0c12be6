"""What the progress board's Ray actor costs a run: its process's CPU seconds and resident
memory once it answers, and the time to its first answer, for the board as genzoo makes it
(``flows/board.py``, which imports nothing heavy) beside the same actor after importing
``genzoo.flows.cluster``, the module the board lived in before (it imports torch through the
trainer). Each repeat starts a fresh local Ray (2 CPUs, as the pipeline starts it) and makes
one board of each kind, alternating which comes first; medians are printed.

    python bench/board.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import machine  # noqa: E402


def _load_cluster(_board) -> bool:
    import genzoo.flows.cluster  # noqa: F401  (what the board's module imported before)

    return "torch" in sys.modules


def _pid_and_torch(_board) -> tuple[int, bool]:
    return os.getpid(), "torch" in sys.modules


def one(ray, old: bool) -> dict[str, float]:
    """One board actor: seconds to its first answer, its process's CPU seconds and RSS (MB)."""
    from genzoo.flows import cluster

    t0 = time.perf_counter()
    with cluster.progress_board() as board:
        if old:
            ray.get(board.__ray_call__.remote(_load_cluster), timeout=120)
        ray.get(board.report.remote("vae", {"step": 1}), timeout=120)
        first = time.perf_counter() - t0
        pid, torch_loaded = ray.get(board.__ray_call__.remote(_pid_and_torch), timeout=120)
        proc = psutil.Process(pid)
        cpu = proc.cpu_times()
        return {"first_s": first, "cpu_s": cpu.user + cpu.system, "rss_mb": proc.memory_info().rss / 2**20,
                "torch": torch_loaded}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from genzoo.flows.cluster import local_ray_env

    print(f"machine: {machine()}")
    runs: dict[str, list[dict]] = {"board (flows/board.py)": [], "board + genzoo.flows.cluster (before)": []}
    names = list(runs)
    for r in range(args.repeats):
        with local_ray_env():  # genzoo's own set-up (token authentication, owner-only token, loopback)
            ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                     log_to_driver=False, configure_logging=False)  # fmt: skip
            try:
                for old in [False, True] if r % 2 == 0 else [True, False]:
                    runs[names[old]].append(one(ray, old))
            finally:
                ray.shutdown()
    print(f"{'actor':<40} {'first answer s':>14} {'CPU s':>7} {'RSS MB':>7} torch loaded")
    med = {}
    for name, rows in runs.items():
        med[name] = {k: statistics.median(row[k] for row in rows) for k in ("first_s", "cpu_s", "rss_mb")}
        m = med[name]
        torch_loaded = "yes" if all(row["torch"] for row in rows) else "no"
        print(f"{name:<40} {m['first_s']:>14.2f} {m['cpu_s']:>7.2f} {m['rss_mb']:>7.0f} {torch_loaded}")
    new, old = (med[n] for n in names)
    print(f"ratio (board / before): first answer {new['first_s'] / old['first_s']:.2f}x, "
          f"CPU {new['cpu_s'] / old['cpu_s']:.2f}x, RSS {new['rss_mb'] / old['rss_mb']:.2f}x "
          f"(medians of {args.repeats})")  # fmt: skip


if __name__ == "__main__":
    main()
