"""A real two-node Ray cluster on loopback (`ray start --head`, then a second node joining
it): the pipeline's fan-out joins it and the families train on both nodes."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import yaml

from tests.conftest import tiny_params
from tests.test_services import free_port

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def ray_cli(*args, env):
    r = subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, f"ray {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def stop_cluster(port: int) -> None:
    """Stop this cluster's processes only (``ray stop --force`` would stop every Ray on the
    machine, a parallel test's too): those whose command line names its GCS port, and their
    children (the agents, which rename themselves)."""
    import re
    import signal
    import time

    mark = re.compile(rf"(gcs[-_]address=|ray\.address=)\S*:{port}\b|gcs_server_port={port}\b")
    parent, mine = {}, set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parent[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if mark.search(cmd):
            mine.add(int(proc.name))
    while grown := {pid for pid, pp in parent.items() if pp in mine} - mine:
        mine |= grown
    mine.discard(os.getpid())
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in mine:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        time.sleep(2 if sig == signal.SIGTERM else 0)
    # and the address its `ray start --head` left for `auto` (as `ray stop` removes it): a stale one
    # would send a later `--ray-address auto` on this machine to a head that is gone
    from ray._private.services import find_bootstrap_address

    if (find_bootstrap_address(None) or "").endswith(f":{port}"):
        from ray._common.utils import reset_ray_address

        reset_ray_address()


def test_fan_out_runs_on_both_nodes_of_a_two_node_cluster(tmp_path):
    assert not ray.is_initialized()
    port = free_port()
    # Ray 2.60 turns token authentication on for `ray start --head`; every node and the
    # driver then need RAY_AUTH_MODE=token to join
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    try:
        ray_cli("start", "--head", f"--port={port}", "--include-dashboard=false", *common, env=env)
        ray_cli("start", f"--address=127.0.0.1:{port}", *common, env=env)
        raw = tiny_params(tmp_path, steps=150, families=["vae", "gan", "pixelcnn"])
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
        # the driver in its own process: Ray reads RAY_AUTH_MODE when it is imported
        r = subprocess.run(
            [
                str(BIN / "genzoo"),
                "run",
                "-q",
                "--json",
                "--params",
                "params.yaml",
                "--ray-address",
                f"127.0.0.1:{port}",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        trained = json.loads(r.stdout.strip().splitlines()[-1])["families"]
        nodes = {f: m["ray_node"] for f, m in trained.items()}
        assert len(set(nodes.values())) == 2, nodes  # 1 CPU per node: the three cannot share one
        for fam in nodes:
            assert (tmp_path / "runs" / fam / "model.safetensors").exists()
        status = ray_cli("status", f"--address=127.0.0.1:{port}", env=env)
        assert "2 node" in status or status.count("node_") >= 2, status  # the cluster outlived the flow
    finally:
        stop_cluster(port)


def test_an_address_that_is_no_ray_address_is_one_line():
    """`--ray-address 127.0.0.1:6391x` (a typo) went to Ray, which printed two tracebacks of a port
    it could not read, in a failed flow run: refused before anything starts, saying what to give."""
    from genzoo.flows import cluster
    from genzoo.tasks.errors import UsageError

    for bad in ("127.0.0.1:6391x", "127.0.0.1", "ray://:10001", "head:0", "head:70000", "ray://head:1x"):
        with pytest.raises(UsageError, match=r"not a Ray address; give the head's host:port"):
            cluster.check_reachable(bad)
    with pytest.raises(
        UsageError, match="the Ray dashboard's address .*, not the cluster's; give .* host:6379"
    ):
        cluster.check_reachable("http://127.0.0.1:8265")  # (RAY_ADDRESS as `ray job submit` reads it)
    for fine in ("local", "anyscale://mine"):  # Ray's (and its client plugins') to resolve
        cluster.check_reachable(fine)
    with socket.socket() as listening:  # well-formed addresses where something answers: no refusal
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        for fine in (f"127.0.0.1:{port}", f"localhost:{port}"):
            cluster.check_reachable(fine)


def test_auto_with_the_address_a_stopped_head_left_fails_at_once(monkeypatch):
    """`--ray-address auto` joins, as Ray resolves it, the one live cluster here, else what the last
    `ray start --head` wrote in /tmp/ray/ray_current_cluster; a head stopped by its pids (README's
    advice on a shared machine) leaves that behind, and Ray waited on it without a word past 80 s.
    No cluster here at all: Ray's own error (with genzoo's hint); one that answers: joined."""
    import ray._private.services as services

    from genzoo.flows import cluster
    from genzoo.tasks.errors import Unreachable

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(services, "find_gcs_addresses", lambda: [])  # no live GCS on this machine
    with socket.socket() as bound:  # bound, not listening: Linux refuses a connection there
        bound.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{bound.getsockname()[1]}"
        monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: dead)
        t0 = time.monotonic()
        with pytest.raises(Unreachable, match=rf"Ray cluster at auto \({dead}, the address the last `ray"):
            cluster.check_reachable("auto")
        assert time.monotonic() - t0 < 10
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: None)
    cluster.check_reachable("auto")  # nothing started here: Ray says so itself
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        alive = f"127.0.0.1:{listening.getsockname()[1]}"
        # one live cluster: Ray joins it whatever the file says, and so does the check
        monkeypatch.setattr(services, "find_gcs_addresses", lambda: [alive])
        monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: "127.0.0.1:1")
        cluster.check_reachable("auto")


def test_an_address_passed_over_for_the_processs_own_ray_is_said(tmp_path, monkeypatch):
    """A Python user's ray.init() before the pipeline: the run uses that Ray, and an address asked
    for (argument, ray.address, RAY_ADDRESS) was passed over without a word; none asked, nothing said."""
    import logging.handlers

    from genzoo.flows import cluster
    from genzoo.tasks.config import validate

    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # (the caller's Ray: _used calls none of it)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    params = validate(tiny_params(tmp_path, families=["gan"]))
    said = logging.handlers.BufferingHandler(100)
    logging.getLogger("genzoo.cluster").addHandler(said)
    try:
        with cluster.connected(params, "10.0.0.7:6379"):
            pass
        lines = [r.getMessage() for r in said.buffer]
        assert len(lines) == 1 and lines[0].startswith(
            "10.0.0.7:6379 asked for, but this process already runs a Ray"
        )
        said.buffer.clear()
        with cluster.connected(params):
            pass
        assert said.buffer == []
        monkeypatch.setenv("RAY_ADDRESS", "head:6379")
        with cluster.connected(params):
            pass
        assert [r.getMessage()[:9] for r in said.buffer] == ["head:6379"]
    finally:
        logging.getLogger("genzoo.cluster").removeHandler(said)


def test_a_ray_client_address_without_rays_client_extra_is_one_line(monkeypatch):
    """`ray://head:10001` (infra/README, params.yaml) needs `ray[client]`, which `make install`
    does not install: Ray said so in two tracebacks; genzoo says it in one line (`genzoo run`
    checks it before Prefect starts)."""
    import importlib.util

    from genzoo.flows import cluster
    from genzoo.tasks.errors import UsageError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "grpc" else real(name, *a)
    )
    with pytest.raises(UsageError, match=r"ray://127.0.0.1:1: a Ray Client address needs Ray's client extra"):
        cluster.check_reachable("ray://127.0.0.1:1")
    assert "pip install 'ray[client]==" in str(
        pytest.raises(UsageError, cluster.check_reachable, "ray://h:1").value
    )
