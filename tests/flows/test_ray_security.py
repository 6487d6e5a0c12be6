"""The private local Ray the pipeline starts (RELIABILITY case 23): every socket its processes
listen on is on loopback and refuses a connection through the machine's own address; no
dashboard; token authentication is on even when the user's shell says ``RAY_AUTH_MODE=disabled``
(genzoo overrides it and says so), a client without the token is refused, and the token file is
owner-only."""

import ipaddress
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from genzoo.flows.cluster import owner_only_token

pytestmark = pytest.mark.slow

DRIVER = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from genzoo.flows.cluster import connected
from genzoo.tasks.config import validate
with connected(validate({"models": {"vae": {}}, "ray": {"num_cpus": 1}})) as ray:
    assert ray.get(ray.remote(lambda: 1).remote()) == 1  # a worker is up and listening too
    print(json.dumps({"gcs": ray.get_runtime_context().gcs_address}), flush=True)
    sys.stdin.readline()
"""

CLIENT = """
import ray, sys
ray.init(address=sys.argv[1], log_to_driver=False)
print("nodes", len(ray.nodes()))
"""


def listening(root: psutil.Process) -> list[tuple[str, int, str]]:
    """(address, port, process) of every listening TCP socket of ``root`` and its descendants."""
    rows = set()
    for p in [root, *root.children(recursive=True)]:
        try:
            monitor = "autoscaler/_private/monitor.py" in " ".join(p.cmdline())
            name = "autoscaler-monitor" if monitor else p.name()
            for c in p.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN:
                    rows.add((c.laddr.ip, c.laddr.port, name))
        except psutil.NoSuchProcess:
            continue
    return sorted(rows)


def is_loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def own_addresses() -> list[str]:
    """This machine's own non-loopback IPv4 addresses (no other host is ever contacted)."""
    return [
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback
    ]


def refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return False
    except OSError:
        return True


def test_local_ray_listens_on_loopback_only_and_requires_its_token(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    # the user's shell turned Ray's token authentication off: genzoo's own Ray keeps it on
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HOME": str(home), "RAY_AUTH_MODE": "disabled"}
    for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        env.pop(k, None)
    err = open(tmp_path / "driver.log", "w")  # noqa: SIM115 (closed in finally)
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
        text=True, env=env,
    )  # fmt: skip
    try:
        line = driver.stdout.readline()
        assert line, (tmp_path / "driver.log").read_text()[-3000:]
        gcs = json.loads(line)["gcs"]
        log = (tmp_path / "driver.log").read_text()
        assert "RAY_AUTH_MODE=disabled ignored" in log, log[-3000:]

        # the autoscaler monitor opens its metrics port (a free one genzoo picks, not Ray's fixed
        # 44217) a moment after ray.init returns: wait for it, so the list is complete
        deadline = time.monotonic() + 60
        while True:
            sockets = listening(psutil.Process(driver.pid))
            metrics = [port for _, port, name in sockets if name == "autoscaler-monitor"]
            if metrics:
                break
            assert time.monotonic() < deadline, f"no autoscaler metrics port: {sockets}"
            time.sleep(0.5)
        print(f"GCS {gcs}; listening sockets of the local Ray:", *sockets, sep="\n  ")
        names = {name for _, _, name in sockets}
        assert {"gcs_server", "raylet"} <= names, sockets  # the list really is Ray's
        assert any(port == int(gcs.rsplit(":", 1)[1]) for _, port, _ in sockets), sockets
        assert is_loopback(gcs.rsplit(":", 1)[0]), gcs
        off = [s for s in sockets if not is_loopback(s[0])]
        assert not off, f"listening off loopback: {off}"
        assert not any("dashboard" in name for name in names), sockets
        ours = own_addresses()
        assert ours, "this machine has no non-loopback address to try"
        answering = [(a, port, name) for a in ours for _, port, name in sockets if not refused(a, port)]
        assert not answering, f"answered through the machine's own address: {answering}"
        # the autoscaler monitor's metrics answer on loopback, and only there
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics[0]}/metrics", timeout=5) as r:
            assert r.status == 200

        token = home / ".ray" / "auth_token"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600, oct(token.stat().st_mode)

        # a client on this machine reaches it on loopback (Ray's single-machine mode, else it
        # would dial the machine's own address, where nothing answers)
        client = {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        no_token = {**client, "RAY_AUTH_MODE": "disabled"}
        r = subprocess.run([sys.executable, "-c", CLIENT, gcs], env=no_token, capture_output=True, text=True,
                           timeout=120)  # fmt: skip
        assert r.returncode != 0
        assert "InvalidAuthToken" in r.stderr or "Authentication" in r.stderr, r.stderr[-2000:]

        r = subprocess.run([sys.executable, "-c", CLIENT, gcs], env={**client, "RAY_AUTH_MODE": "token"},
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0 and "nodes 1" in r.stdout, r.stderr[-2000:]
    finally:
        driver.stdin.close()
        driver.wait(timeout=120)
        err.close()


def test_a_token_file_readable_by_others_is_narrowed_and_a_new_one_is_owner_only(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    shared = tmp_path / "shared_token"
    shared.write_text("a" * 64)
    shared.chmod(0o644)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(shared))
    with caplog.at_level(logging.WARNING, logger="genzoo.cluster"):
        assert owner_only_token() == shared
    assert stat.S_IMODE(shared.stat().st_mode) == 0o600
    assert shared.read_text() == "a" * 64  # narrowed, not replaced
    assert "readable by others" in caplog.text

    fresh = tmp_path / "new" / "auth_token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(fresh))
    assert owner_only_token() == fresh
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert stat.S_IMODE(fresh.parent.stat().st_mode) == 0o700
    assert len(fresh.read_text()) == 64
    # joining a cluster: its token, copied here as `ray get-auth-token` wrote it (0644 under umask 022),
    # is narrowed; none is made where there is none (the cluster's is needed, not a new one)
    from genzoo.flows import cluster

    copied = tmp_path / "copied_token"
    copied.write_text("b" * 64)
    copied.chmod(0o644)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(copied))
    monkeypatch.setattr(cluster, "check_reachable", lambda address: None)
    monkeypatch.setattr("ray.init", lambda **kw: None)
    cluster._join("10.0.0.1:6379")
    assert stat.S_IMODE(copied.stat().st_mode) == 0o600
    copied.chmod(0o644)  # another user's, or a read-only mount: said, and the join goes on
    monkeypatch.setattr(cluster.os, "chmod", lambda *a: (_ for _ in ()).throw(PermissionError(1, "denied")))
    with caplog.at_level(logging.WARNING, logger="genzoo.cluster"):
        cluster._join("10.0.0.1:6379")
    assert "is readable by others (mode 644) and cannot be narrowed" in caplog.text
    monkeypatch.undo()
    monkeypatch.setattr(cluster, "check_reachable", lambda address: None)
    monkeypatch.setattr("ray.init", lambda **kw: None)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "none"))
    cluster._join("10.0.0.1:6379")
    assert not (tmp_path / "none").exists() and owner_only_token(create=False) is None


def test_a_local_ray_takes_rays_own_cpu_count_unless_told(tmp_path, monkeypatch):
    """genzoo passed os.cpu_count(), the host's cores, over Ray's own count, which honours a
    container's CPU quota: under `docker run --cpus=2` on 64 cores, 64 one-thread tasks at once."""
    import ray

    from genzoo.flows import cluster
    from genzoo.tasks.config import validate
    from tests.conftest import tiny_params

    class Started(Exception):
        pass

    seen = []

    def init(**kw):
        seen.append(kw)
        raise Started

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # (under xdist a worker may hold one)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    raw = tiny_params(tmp_path, families=["gan"])
    for asked in (None, 3):
        raw["ray"] = {"num_cpus": asked}
        with pytest.raises(Started), cluster.connected(validate(raw)):
            pass
    assert [kw["num_cpus"] for kw in seen] == [None, 3]
