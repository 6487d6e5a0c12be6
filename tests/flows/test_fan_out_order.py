"""The fan-out relies on Ray starting tasks in the order they were submitted (longest training
first, so that the long chains do not start last and leave cores idle at the end)."""

import time
from pathlib import Path

from genzoo.flows import cluster
from genzoo.tasks.config import load_params

ROOT = Path(__file__).resolve().parents[2]


def _stamp(i: int) -> tuple[int, float]:
    time.sleep(0.2)
    return i, time.time()


def test_tasks_start_in_submission_order_on_a_local_ray():
    params = load_params(ROOT / "params.yaml", ["ray.num_cpus=1"])
    with cluster.connected(params) as ray:
        families = ["vae", "gan", "ddpm", "pixelcnn", "realnvp", "vae", "gan", "ddpm"]
        refs = [cluster.submit(params, f, f"task-{i}", _stamp, i) for i, f in enumerate(families)]
        done = sorted(ray.get(refs), key=lambda r: r[1])  # one CPU: one task at a time
    assert [i for i, _ in done] == list(range(len(families)))
