"""The private local Ray the pipeline starts: Ray 2.60 opens some sockets off loopback whatever
the settings, so its token authentication must be on, and a call without the token refused."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

DRIVER = """
import json, os, sys
from genzoo.flows.cluster import connected
from genzoo.tasks.config import validate
with connected(validate({"models": {"vae": {}}, "ray": {"num_cpus": 1}})) as ray:
    print(json.dumps({"gcs": ray.get_runtime_context().gcs_address}), flush=True)
    sys.stdin.readline()
"""

CLIENT = """
import ray, sys
ray.init(address=sys.argv[1], log_to_driver=False)
print("nodes", len(ray.nodes()))
"""


def ray_sockets() -> list[str]:
    """Listening TCP sockets of Ray's processes: 'address process'."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines()
    rows = [(line.split()[3], line.split()[-1]) for line in out if "users:" in line]
    names = ("gcs_server", "raylet", "ray::", "python", "default_worker")
    return [f"{addr} {proc}" for addr, proc in rows if any(n in proc for n in names)]


def test_local_ray_requires_its_token_where_it_listens_off_loopback():
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        gcs = json.loads(driver.stdout.readline())["gcs"]  # Ray picks the machine's address here
        sockets = ray_sockets()
        off_loopback = [s for s in sockets if not s.startswith(("127.0.0.1:", "[::1]:"))]
        print(f"GCS {gcs}; Ray sockets off loopback:", *off_loopback, sep="\n  ")
        assert any(s.split()[0].endswith(":" + gcs.rsplit(":", 1)[1]) for s in sockets), sockets

        no_token = {**env, "RAY_AUTH_MODE": "disabled"}
        no_token.pop("RAY_AUTH_TOKEN", None)
        refused = subprocess.run(
            [sys.executable, "-c", CLIENT, gcs], env=no_token, capture_output=True, text=True, timeout=120
        )
        assert refused.returncode != 0
        assert "InvalidAuthToken" in refused.stderr or "Authentication" in refused.stderr, refused.stderr[
            -2000:
        ]

        with_token = subprocess.run(
            [sys.executable, "-c", CLIENT, gcs],
            env={**env, "RAY_AUTH_MODE": "token"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert with_token.returncode == 0 and "nodes 1" in with_token.stdout, with_token.stderr[-2000:]
    finally:
        driver.stdin.close()
        driver.wait(timeout=120)
