"""`genzoo run` starts the Prefect server its flow talks to first thing, so that the server's
start overlaps the run's imports and checks (flows/serve.py ``temporary_server``). The tests
that run a flow or read a profile do so in a process of their own: Prefect reads its settings
once per process."""

import json
import os
import subprocess
import sys
import time

import psutil

RUN = """
import json, os, signal, sys
from genzoo.flows.serve import temporary_server
ready = temporary_server()
from prefect import flow, get_client
api = ready()
@flow
def where():
    with get_client(sync_client=True) as c:
        return str(c.api_url)
children = [p.pid for p in __import__("psutil").Process().children()]
import httpx
stranger = httpx.post(api + "/flow_runs/filter", json={}).status_code  # no secret: another local user
print(json.dumps({"api": api, "flow": where(), "children": children, "env": os.environ["PREFECT_API_URL"],
                  "stranger": stranger}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no atexit: the server must go by itself
"""


def env_without_api(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_UI_URL")}
    return {**env, "PREFECT_HOME": str(tmp_path / "prefect")}


def test_the_flow_runs_on_the_server_started_first_which_goes_when_its_process_is_killed(tmp_path):
    """The flow talks to the server genzoo started, which answers only clients holding the run's
    secret (this process and its children), and goes when its process is killed."""
    # output to files, not pipes: a server left running would hold a pipe open, and the test hang
    with open(tmp_path / "out", "w") as so, open(tmp_path / "err", "w") as se:
        subprocess.run([sys.executable, "-c", RUN], env=env_without_api(tmp_path), stdout=so, stderr=se,
                       timeout=300)  # fmt: skip
    stdout, stderr = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    out = json.loads(stdout.strip().splitlines()[-1])
    assert out["api"].startswith("http://127.0.0.1:") and out["api"].endswith("/api")
    assert out["flow"].rstrip("/") == out["api"] == out["env"]  # the flow used it, and its children will
    assert out["stranger"] == 401  # a client without the run's secret is refused
    assert "Starting temporary server" not in stderr  # Prefect did not start a second one
    assert "View at" not in stderr  # no link to a UI this server does not serve
    assert "401" not in stderr and "Unauthorized" not in stderr  # its logs and events got through
    assert len(out["children"]) == 1
    deadline = time.monotonic() + 30
    while psutil.pid_exists(out["children"][0]) and psutil.Process(out["children"][0]).status() != "zombie":
        assert time.monotonic() < deadline, "the temporary server outlived the process that started it"
        time.sleep(0.2)


def test_a_server_named_by_a_profile_is_left_alone(tmp_path):
    """A Prefect profile names the user's server: ready() stops the one it started and Prefect
    keeps the profile's URL; with PREFECT_API_URL set, nothing starts at all."""
    (tmp_path / "prefect").mkdir()
    (tmp_path / "prefect" / "profiles.toml").write_text(
        'active = "mine"\n[profiles.mine]\nPREFECT_API_URL = "http://127.0.0.1:9/api"\n'
    )
    code = (
        "import psutil\nfrom genzoo.flows.serve import temporary_server\nready = temporary_server()\n"
        "started = len(psutil.Process().children())\n"
        "from prefect.settings import get_current_settings\n"
        "print(started, ready(), get_current_settings().api.url, len(psutil.Process().children()))\n"
    )
    env = env_without_api(tmp_path)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["1", "None", "http://127.0.0.1:9/api", "0"], r.stdout + r.stderr
    env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["0", "None", "http://127.0.0.1:9/api", "0"], r.stdout + r.stderr


def test_a_server_that_cannot_start_leaves_prefect_to_start_its_own(monkeypatch, caplog):
    """Where genzoo's server exits at once (here its program is replaced by one that exits),
    ready() says so as soon as it has exited and points nothing at it: the flow call then
    starts Prefect's own."""
    from genzoo.flows import serve

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(serve, "_TEMPORARY", "import sys; sys.exit(3)")
    ready = serve.temporary_server()
    t0 = time.monotonic()
    assert ready() is None and "PREFECT_API_URL" not in os.environ
    assert time.monotonic() - t0 < 30  # seen as it exits, not after the 180 s start-up wait
    assert "did not start; Prefect starts its own" in caplog.text
