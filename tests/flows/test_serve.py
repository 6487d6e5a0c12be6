"""`make serve`: a real Prefect server on loopback serving the genzoo deployments; a run
triggered through the API (as the UI's Run button does) completes, and one cancelled (the UI's
Cancel) ends CANCELLED with its training stopped."""

import base64
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from genzoo.flows.serve import healthy
from tests.conftest import tiny_params
from tests.test_services import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def environment_put_back():
    """serve() points this process at the server it joined (``PREFECT_API_URL``, its auth string)
    and Prefect's global settings with it; monkeypatch's ``delenv`` of a variable not set records
    nothing to put back, so a later test in this worker called a server on port 1. The whole
    environment as it was, and the settings read from it (set up first, torn down last)."""
    before = dict(os.environ)
    yield
    for key in set(os.environ) - set(before):
        del os.environ[key]
    os.environ.update(before)
    import prefect.context

    if refresh := getattr(prefect.context, "refresh_global_settings_context", None):
        refresh()


def api_post(api: str, path: str, body: dict | None = None) -> list[dict]:
    """POST ``body`` (default ``{}``) to the Prefect API's ``path`` (a filter), with the CSRF
    token the server asks for; the rows it returns."""
    token = _answer(urllib.request.Request(f"{api}/csrf-token?client=t"))["token"]  # (written to its db)
    headers = {"Content-Type": "application/json", "Prefect-Csrf-Token": token, "Prefect-Csrf-Client": "t"}
    data = json.dumps(body or {}).encode()
    return _answer(urllib.request.Request(f"{api}/{path}", data=data, headers=headers))


def _answer(req: urllib.request.Request):
    """``req``'s JSON answer. A 503 (the server's SQLite database locked by a served run's writes
    for longer than its timeout: nothing was done) or a 429 or 502 is tried again after a pause,
    up to 5 times, as Prefect's own client does."""
    for attempt in range(6):
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            if e.code not in (429, 502, 503) or attempt == 5:
                raise
            time.sleep(2**attempt)


FINAL = ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")


def run_deployment(api: str, name: str, parameters: dict, wait_s: float = 300) -> dict:
    """A flow run of deployment ``name`` (``flow/deployment``) with ``parameters``, created as the
    UI's Run button creates it (``create_flow_run``); with ``wait_s``, the run once it has ended."""
    flows = {f["id"]: f["name"] for f in api_post(api, "flows/filter")}
    (dep,) = [d for d in api_post(api, "deployments/filter") if f"{flows[d['flow_id']]}/{d['name']}" == name]
    run = api_post(api, f"deployments/{dep['id']}/create_flow_run", {"parameters": parameters})
    deadline = time.monotonic() + wait_s
    while wait_s and run["state_type"] not in FINAL:
        assert time.monotonic() < deadline, run["state_type"]
        time.sleep(0.5)
        (run,) = api_post(api, "flow_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}})
    return run


def served(api: str) -> set[str]:
    """The deployments the server lists, as ``flow/deployment`` names (none while it is not up
    or does not answer yet)."""
    try:
        flows = {f["id"]: f["name"] for f in api_post(api, "flows/filter")}
        return {f"{flows.get(d['flow_id'])}/{d['name']}" for d in api_post(api, "deployments/filter")}
    except (OSError, ValueError):  # refused, an HTTP error or a half-started answer while it starts
        return set()


def test_make_serve_serves_deployments_that_run_to_completion(tmp_path):
    port = free_port()
    pfile = tmp_path / "params.yaml"
    raw = tiny_params(tmp_path, steps=4, families=["gan", "vae"])
    pfile.write_text(yaml.safe_dump(raw))
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # for the run that tracks (the cancelled one)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PATH": f"{BIN}:{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": mlflow_uri}  # fmt: skip
    env.pop("PREFECT_API_URL", None)
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 (closed in finally, after the server)
    # Ctrl+C's default action, as in a terminal (a CI runner starts background commands with SIGINT
    # ignored, which they inherit): set in the child by a wrapper that then runs make
    default_sigint = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execvp(sys.argv[1], sys.argv[1:])"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            default_sigint,
            "make",
            "-s",
            "serve",
            f"PREFECT_PORT={port}",
            f"ARGS=--params {pfile}",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/api"
    client_env = {**env, "PREFECT_API_URL": api, "COLUMNS": "240"}  # rich tables, not truncated

    def prefect(*args, timeout=60):
        return subprocess.run(
            [str(BIN / "prefect"), *args], env=client_env, capture_output=True, text=True, timeout=timeout
        )

    try:
        names = (
            "genzoo-pipeline/pipeline",
            "genzoo-train-family/train-family",
            "genzoo-augment/augment",
            "genzoo-sample/sample",
            "genzoo-judge/judge",
        )
        deadline = time.monotonic() + 240  # prefect.serve registers the deployments one at a time
        while not set(names) <= served(api):  # (through the API: a `prefect` command each poll costs 3 s)
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, (
                "no server / deployments:\n" + (tmp_path / "serve.log").read_text()
            )
            time.sleep(2)
        listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout.splitlines()
        local = [line.split()[3] for line in listening if line.split()[3].endswith(f":{port}")]
        assert local and all(a.startswith("127.0.0.1:") for a in local), local

        # a second `make serve` on this port is refused at once (joining, it would have paused the
        # first one's deployments on its way out: Prefect's runner pauses all it served)
        second = subprocess.run(
            [str(BIN / "genzoo"), "serve", "--port", str(port), "--params", str(pfile)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert second.returncode == 2 and "served by another process" in second.stderr, second.stderr
        assert not any(d["paused"] for d in api_post(api, "deployments/filter"))

        # the UI's form: the deployment's parameter schema lists the flow's typed parameters
        schemas = {d["name"]: d["parameter_openapi_schema"] for d in api_post(api, "deployments/filter")}
        form = json.dumps(schemas["train-family"])
        assert "family" in schemas["train-family"]["properties"] and "pixelcnn" in form, form

        r = prefect(
            "deployment",
            "run",
            "genzoo-train-family/train-family",
            "-p",
            "family=gan",
            "--watch",
            timeout=400,
        )
        assert r.returncode == 0 and "Completed" in r.stdout + r.stderr, r.stdout + r.stderr
        assert (tmp_path / "runs" / "gan" / "model.safetensors").exists()
        # its stages are its own, on the page the UI opens for it (not in a subflow a click away)
        family_run = re.search(r"UUID: ([0-9a-f-]{36})", r.stdout).group(1)
        tasks = {t["name"] for t in api_post(api, "task_runs/filter") if t["flow_run_id"] == family_run}
        assert {"prepare", "train-gan", "evaluate-gan", "report"} <= tasks, tasks
        assert not (tmp_path / "runs" / "vae").exists()

        # the other runs as the UI's Run button makes them (the `prefect` command above costs 3 s)
        run = run_deployment(
            api, "genzoo-sample/sample", {"family": "gan", "n": 12, "out": str(tmp_path / "drawn")}
        )
        assert run["state_type"] == "COMPLETED", run["state"]
        import numpy as np

        with np.load(tmp_path / "drawn.npz") as z:
            assert z["images"].shape == (12, 1, 8, 8) and z["labels"].shape == (12,)
        # and shown in its Artifacts tab (the UI's browser cannot open the file)
        (art,) = api_post(api, "artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})
        png = base64.b64encode((tmp_path / "drawn.png").read_bytes()).decode()
        assert art["key"] == "samples" and f"](data:image/png;base64,{png})" in art["data"], art["data"][:300]
        run = run_deployment(api, "genzoo-augment/augment", {
            "families": ["gan"], "per_class": 2, "name": "from-ui", "out_dir": str(tmp_path / "aug"),
        })  # fmt: skip
        assert run["state_type"] == "COMPLETED", run["state"]
        with np.load(tmp_path / "aug" / "from-ui" / "images.npz") as z:
            assert z["images"].dtype == np.uint8 and z["labels"].tolist() == sorted(list(range(10)) * 2)
        runs = [x["state_type"] for x in api_post(api, "flow_runs/filter")]
        assert runs.count("COMPLETED") == 3, runs  # train-family (no subflow), sample, augment

        # a study from the UI: its raters' links in the run's Artifacts tab (the only place they
        # are shown: the study keeps their hashes, and a served run's result is not kept)
        run = run_deployment(api, "genzoo-judge/judge", {
            "families": ["gan"], "per_family": 2, "pairs": 0, "raters": 2, "name": "from-ui",
        })  # fmt: skip
        assert run["state_type"] == "COMPLETED", run["state"]
        judged = run["id"]
        (art,) = api_post(api, "artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [judged]}}})
        assert (
            art["type"] == "markdown"
            and len(re.findall(r"http://127\.0\.0\.1:8400/r/\S+>", art["data"])) == 2
        )

        # bad params in the form: the run fails on them at once, one line in its log and as its
        # state's message (Prefect logged a traceback of them; its engine's own report of a failed
        # run, with a traceback of its own, follows any run that fails)
        run = run_deployment(api, "genzoo-train-family/train-family", {
            "family": "gan", "overrides": ["models.gan.train.lr=-1"],
        })  # fmt: skip
        bad, state = run["id"], run["state"]
        assert run["state_type"] == "FAILED" and "models.gan.train.lr" in state["message"], state
        deadline = time.monotonic() + 30  # the run's logs reach the server in batches, after its state
        while True:  # (the engine's "Finished in state" is its last)
            rows = api_post(api, "logs/filter", {"logs": {"flow_run_id": {"any_": [bad]}}})
            logged = [(x["level"], x["message"]) for x in rows]
            if any(m.startswith("Finished in state") for _, m in logged):
                break
            assert time.monotonic() < deadline, logged
            time.sleep(0.5)
        errors = [m for level, m in logged if level >= logging.ERROR]
        assert errors[0] == state["message"] and "Traceback" not in errors[0], errors
        assert not any("Encountered exception during execution" in m for m in errors), errors

        def training(family: str, overrides: list[str], wait: bool = True) -> str:
            """A long pipeline run of ``family`` from its deployment, once it has written a
            checkpoint of its own (on its private local Ray; ``wait``): its flow run's id."""
            run = run_deployment(
                api, "genzoo-pipeline/pipeline", {"families": [family], "overrides": overrides}, wait_s=0
            )
            if wait:
                checkpointed(family, set())
            return run["id"]

        def checkpointed(family: str, before: set) -> None:
            """Until ``family`` has a checkpoint not in ``before`` (a set of paths)."""
            deadline = time.monotonic() + 180
            while not set((tmp_path / "ckpt" / family).glob("*/step-*.pt")) - before:
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(1)

        def logs(run_id: str) -> list[str]:
            return [
                x["message"]
                for x in api_post(api, "logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}})
            ]

        def flow_run(run_id: str) -> dict:
            (run,) = api_post(api, "flow_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
            return run

        def last_checkpoint() -> int:
            steps = [int(p.stem.split("-")[1]) for p in (tmp_path / "ckpt" / "vae").glob("*/step-*.pt")]
            return max(steps, default=0)

        # Cancel in the UI: the runner's SIGTERM reaches the flow as Prefect's TerminationSignal
        # (Ray's own handler, set by ray.init, made it a SystemExit: the run CRASHED, MLflow FAILED)
        gan_before = set((tmp_path / "ckpt" / "gan").glob("*/step-*.pt"))
        dataset = tmp_path / "augment" / raw["augment"]["name"] / "manifest.json"  # the train-family run's
        dataset_made = dataset.stat().st_mtime_ns
        run_id = training("vae", ["train.steps=100000", "run.track=true"])
        cancel = {"state": {"type": "CANCELLING", "name": "Cancelling"}}  # what the UI's Cancel sends
        states = lambda: {x["id"]: x["state_type"] for x in api_post(api, "flow_runs/filter")}  # noqa: E731

        def cancelled(run_id: str) -> None:
            assert api_post(api, f"flow_runs/{run_id}/set_state", cancel)["status"] == "ACCEPT"
            deadline = time.monotonic() + 90
            while (state := states()[run_id]) not in FINAL:
                assert time.monotonic() < deadline, state
                time.sleep(1)
            assert state == "CANCELLED", (tmp_path / "serve.log").read_text()[-3000:]

        # while it trains, a run of another deployment that writes the folder waits for it, saying
        # who holds it (it failed after ~15 s, naming a pid), and Cancel stops the wait; a second
        # run of the same deployment waits its turn, scheduled (the next section's run)
        waiter = run_deployment(
            api, "genzoo-augment/augment", {"families": ["gan"], "per_class": 1}, wait_s=0
        )
        holder = f"Prefect flow run '{flow_run(run_id)['name']}' ({run_id})"
        deadline = time.monotonic() + 120
        while not any(
            "another genzoo run holds this folder" in m and holder in m for m in logs(waiter["id"])
        ):
            assert time.monotonic() < deadline, (
                logs(waiter["id"]),
                (tmp_path / "serve.log").read_text()[-3000:],
            )
            time.sleep(1)
        interrupted = training("gan", ["train.steps=100000"], wait=False)
        deadline = time.monotonic() + 60
        while flow_run(interrupted)["state_name"] != "AwaitingConcurrencySlot":
            assert time.monotonic() < deadline, flow_run(interrupted)["state"]
            time.sleep(1)
        cancelled(waiter["id"])
        assert states()[interrupted] == "SCHEDULED" and dataset.stat().st_mtime_ns == dataset_made
        cancelled(run_id)
        stopped_at = last_checkpoint()
        time.sleep(3)  # training ran ~20 steps/s with a checkpoint every 10 steps: none comes now
        assert last_checkpoint() == stopped_at < 100000
        import mlflow

        c = mlflow.MlflowClient(mlflow_uri)
        runs = c.search_runs([e.experiment_id for e in c.search_experiments()])
        assert {r.info.run_name: r.info.status for r in runs} == {"pipeline": "KILLED", "vae": "KILLED"}

        # Ctrl+C on `make serve` mid-run (the whole group, as a terminal sends it): Prefect's runner
        # kills the flow runs it started on its way out, and one on the private local Ray, itself
        # stopping Ray, was killed before it recorded how it ended: RUNNING for good. Now Crashed.
        checkpointed("gan", gan_before)  # the queued run, started once the slot was free
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
        import sqlite3

        (db,) = (tmp_path / "prefect" / "genzoo").glob("*.db")  # the project's own database
        with sqlite3.connect(db) as con:
            states = {
                str(i).replace("-", ""): t for i, t in con.execute("SELECT id, state_type FROM flow_run")
            }
        assert states[interrupted.replace("-", "")] == "CRASHED", (tmp_path / "serve.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        log.close()
    time.sleep(1)
    assert not healthy(api), "the Prefect server outlived `make serve`"


def test_a_serve_killed_at_once_leaves_no_run_running_nor_its_slot_taken(tmp_path):
    """`genzoo serve` and everything it started killed at once (SIGKILL, an OOM kill, a reboot)
    left its run RUNNING in the project's database, holding the pipeline deployment's one slot:
    every later Run click waited as AwaitingConcurrencySlot for good. The next `genzoo serve`
    (its own server) marks such runs Crashed, which gives the slot back."""
    from tests.conftest import descendants

    port, api = free_port(), None
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(tiny_params(tmp_path, steps=100000, families=["gan"])))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_RUNNER_POLL_FREQUENCY", None)  # (the 31 s below is past its 30 s window)
    api = f"http://127.0.0.1:{port}/api"
    procs = []

    def kill_tree(root: int) -> None:
        """SIGKILL ``root`` and all below it, again while any is left (Ray may start more)."""
        for _ in range(20):
            tree = [root, *descendants(root)]
            for pid in tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if not descendants(root):
                return
            time.sleep(0.2)

    def start() -> subprocess.Popen:
        with open(tmp_path / "serve.log", "a") as log:
            argv = [str(BIN / "genzoo"), "serve", "--port", str(port), "--params", str(pfile)]
            proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        procs.append(proc)
        deadline = time.monotonic() + 240  # serving: its "Prefect UI:" line and the deployments (the
        while (tmp_path / "serve.log").read_text().count("Prefect UI: ") < len(procs) or (  # first's
            "genzoo-pipeline/pipeline" not in served(api)  # are in the database before the second serves)
        ):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(1)
        return proc

    def running(run_id: str) -> dict:
        deadline = time.monotonic() + 120
        while (run := api_post(api, "flow_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})[0])[
            "state_type"
        ] != "RUNNING":
            assert time.monotonic() < deadline, (run["state"], (tmp_path / "serve.log").read_text()[-3000:])
            time.sleep(1)
        return run

    try:
        first = start()
        left = running(run_deployment(api, "genzoo-pipeline/pipeline", {"families": ["gan"]}, wait_s=0)["id"])
        kill_tree(first.pid)  # serve, its server, the run, its Ray
        first.wait(30)
        deadline = time.monotonic() + 30
        while healthy(api):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        time.sleep(31)  # as after a reboot: a serve started sooner is refused (its runner polled just now)
        start()
        (was,) = api_post(api, "flow_runs/filter", {"flow_runs": {"id": {"any_": [left["id"]]}}})
        assert was["state_type"] == "CRASHED" and "SIGKILL" in was["state"]["message"], was["state"]
        running(run_deployment(api, "genzoo-pipeline/pipeline", {"families": ["gan"]}, wait_s=0)["id"])
    finally:
        for proc in procs:
            if proc.poll() is None:
                below = descendants(proc.pid)  # (the server, in a session of its own, too)
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:  # a slow way out: it and all it started
                    kill_tree(proc.pid)
                    for pid in below:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
    time.sleep(1)
    assert not healthy(api), "the Prefect server outlived `genzoo serve`"


def test_every_deployment_form_describes_each_parameter_and_picks_families_and_profiles():
    """The UI's run form: a one-line description under every field, and pick lists of the
    families in the registry and of the profiles in params.yaml."""
    from genzoo import models
    from genzoo.flows.pipeline import augment, judge_study, pipeline, sample, train_one
    from genzoo.flows.serve import deployments

    profiles = sorted(yaml.safe_load((ROOT / "params.yaml").read_text())["profiles"])
    families = sorted(models.REGISTRY)

    def enum(prop: dict) -> list[str]:
        (choice,) = [s for s in prop.get("anyOf", [prop]) if s.get("type") != "null"]
        return sorted((choice.get("items") or choice)["enum"])

    served = {d.name: d.flow_name for d in deployments()}
    flows = {fl.name: fl for fl in (pipeline, train_one, augment, sample, judge_study)}
    forms = {name: flows[flow_name].parameters.properties for name, flow_name in served.items()}
    assert set(forms) == {"pipeline", "train-family", "augment", "sample", "judge"}
    for name, props in forms.items():
        undescribed = [p for p, s in props.items() if not s.get("description", "").strip()]
        assert not undescribed, f"{name}: {undescribed}"
        assert all("\n" not in s["description"] for s in props.values()), name
    assert enum(forms["pipeline"]["families"]) == families
    assert enum(forms["pipeline"]["profile"]) == profiles
    assert enum(forms["train-family"]["family"]) == families
    assert enum(forms["train-family"]["profile"]) == profiles
    assert (
        enum(forms["augment"]["profile"]) == enum(forms["judge"]["profile"]) == profiles
    )  # after a quick run
    assert enum(forms["sample"]["family"]) == families
    assert enum(forms["augment"]["families"]) == sorted([*families, "best"])
    assert enum(forms["judge"]["families"]) == sorted([*families, "all"])
    assert enum(forms["augment"]["formats"]) == ["hf", "imagefolder", "npz"]
    assert "label" in forms["sample"]  # the class to draw (a parameter named `cls` would be dropped)


def test_serve_beyond_loopback_without_basic_auth_refuses_to_start(tmp_path):
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PATH": f"{BIN}:{os.environ['PATH']}"}
    for k in ("PREFECT_API_URL", "PREFECT_SERVER_API_AUTH_STRING"):
        env.pop(k, None)
    r = subprocess.run(
        [str(BIN / "genzoo"), "serve", "--host", "0.0.0.0", "--port", str(port)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode != 0
    assert "PREFECT_SERVER_API_AUTH_STRING=user:password" in r.stdout + r.stderr, r.stdout + r.stderr
    listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
    assert f":{port} " not in listening


def test_server_beyond_loopback_demands_basic_auth_csrf_and_its_own_origin(tmp_path, monkeypatch):
    """``--host 0.0.0.0`` with Prefect's basic auth: through this machine's own address a call
    without the credential gets 401, a write without a CSRF token 403, and a foreign origin no
    CORS grant."""
    import base64
    import urllib.error
    import urllib.request

    from genzoo.flows.serve import reachable_name, start_server, stop
    from tests.flows.test_ray_security import own_addresses

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "genzoo:s3cret-word")
    monkeypatch.delenv("PREFECT_SERVER_CORS_ALLOWED_ORIGINS", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    port = free_port()
    server = start_server("0.0.0.0", port)
    try:
        addr = own_addresses()[0]
        api = f"http://{addr}:{port}/api"
        auth = {"Authorization": "Basic " + base64.b64encode(b"genzoo:s3cret-word").decode()}

        def call(path, method="POST", headers=None, data=b"{}"):
            headers = {"Content-Type": "application/json", **(headers or {})}
            body = data if method == "POST" else None
            req = urllib.request.Request(f"{api}{path}", data=body, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, dict(r.headers), r.read()
            except urllib.error.HTTPError as e:
                return e.code, dict(e.headers), e.read()

        assert call("/flow_runs/filter")[0] in (401, 403)  # neither credential nor CSRF token
        assert call("/csrf-token?client=genzoo-test", method="GET")[0] == 401
        status, _, body = call("/csrf-token?client=genzoo-test", method="GET", headers=auth)
        assert status == 200, (status, body)
        token = {"Prefect-Csrf-Token": json.loads(body)["token"], "Prefect-Csrf-Client": "genzoo-test"}
        assert call("/flow_runs/filter", headers=token)[0] == 401  # a CSRF token is no credential
        bad = {"Authorization": "Basic " + base64.b64encode(b"genzoo:wrong").decode()}
        assert call("/flow_runs/filter", headers={**token, **bad})[0] == 401
        status, _, body = call("/flow_runs/filter", headers=auth)
        assert status == 403 and b"CSRF" in body.upper(), (status, body)  # CSRF protection is on
        assert call("/flow_runs/filter", headers={**token, **auth})[0] == 200

        preflight = {"Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization"}  # fmt: skip
        _, headers, _ = call("/flow_runs/filter", method="OPTIONS",
                             headers={**preflight, "Origin": "http://evil.example"})  # fmt: skip
        assert headers.get("access-control-allow-origin") not in ("*", "http://evil.example"), headers
        own = f"http://{addr}:{port}"
        _, headers, _ = call("/flow_runs/filter", method="OPTIONS", headers={**preflight, "Origin": own})
        assert headers.get("access-control-allow-origin") == own, headers
        # the UI's page, opened from another machine, calls the API by this machine's name (it was
        # told 127.0.0.1: that browser's own loopback)
        req = urllib.request.Request(f"{own}/ui-settings", headers=auth)
        with urllib.request.urlopen(req, timeout=10) as r:
            told = json.load(r)["api_url"]
        assert told == f"http://{reachable_name()}:{port}/api"
        assert not socket.gethostbyname(told.split("//")[1].rsplit(":", 1)[0]).startswith("127."), told
    finally:
        stop(server)


def test_served_deployments_refuse_paths_outside_the_project(tmp_path, monkeypatch):
    """In a flow run of `genzoo serve` (GENZOO_SERVE_ROOTS set by serve()), a path parameter or a
    params path leaving the project is refused before any work, links followed."""
    from genzoo.flows.pipeline import augment, pipeline, sample
    from genzoo.flows.serve import ROOTS_ENV

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    pfile = project / "params.yaml"
    pfile.write_text(yaml.safe_dump(tiny_params(project, steps=4, families=["gan"])))
    (project / "link").symlink_to(elsewhere)
    monkeypatch.chdir(project)
    monkeypatch.setenv(ROOTS_ENV, str(project))

    cases = [
        (sample.fn, {"family": "gan", "out": str(elsewhere / "x")}, "out="),
        (sample.fn, {"family": "gan", "out": "link/x"}, "out="),
        (sample.fn, {"model": str(elsewhere / "model.json")}, "model="),
        (augment.fn, {"families": ["gan"], "out_dir": "../elsewhere"}, "out_dir="),
        (pipeline.fn, {"overrides": [f"run.runs_dir={elsewhere}"]}, "run.runs_dir="),
        (pipeline.fn, {"overrides": ["data.prepared_dir=/tmp"]}, "data.prepared_dir="),
        (pipeline.fn, {"params_file": str(elsewhere / "params.yaml")}, "params_file="),
    ]
    (elsewhere / "params.yaml").write_text(pfile.read_text())
    for fn, kwargs, key in cases:
        with pytest.raises(ValueError, match="outside the project") as e:
            fn(**{"params_file": str(pfile), **kwargs})
        assert key in str(e.value), (kwargs, e.value)
    assert list(elsewhere.iterdir()) == [elsewhere / "params.yaml"]  # nothing written there
    assert not (project / "runs").exists()
    # a file of secrets outside the project as the params of every flow: refused before it is read
    # (its errors quoted what it holds: `db_password: unknown key ... (got 'hunter2')`)
    secret = elsewhere / "secret.yaml"
    secret.write_text("db_password: hunter2\n")
    from genzoo.flows.pipeline import judge_study, train_one

    for fn, kwargs in ((pipeline.fn, {}), (train_one.fn, {"family": "gan"}), (sample.fn, {"family": "gan"}),
                       (augment.fn, {}), (judge_study.fn, {})):  # fmt: skip
        for given in (str(secret), "../elsewhere/secret.yaml"):
            with pytest.raises(ValueError, match="params_file=.*outside the project") as e:
                fn(params_file=given, **kwargs)
            assert "hunter2" not in str(e.value), fn

    monkeypatch.delenv(ROOTS_ENV)  # the CLI and Python are not confined (the user's own paths)
    from genzoo.flows.serve import confine

    confine(None, out=str(elsewhere / "x"))


def test_each_projects_server_keeps_its_own_database(tmp_path, monkeypatch):
    """Two projects served on two ports shared Prefect's one database: each listed the other's
    runs, and a run clicked in one UI was picked up by the other project's `genzoo serve`. The
    server genzoo starts gets a database of the project's own, unless the user chose one."""
    from genzoo.flows.serve import project_database

    for key in ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL"):
        monkeypatch.delenv(key, raising=False)
    a, b = project_database(tmp_path / "a"), project_database(tmp_path / "b")
    url = "PREFECT_SERVER_DATABASE_CONNECTION_URL"
    assert a[url].startswith("sqlite+aiosqlite:///") and a[url].endswith(".db")
    assert a != b and project_database(tmp_path / "a") == a  # one per project, the same each time
    assert "/a-" in a[url] and Path(a[url].removeprefix("sqlite+aiosqlite:///")).parent.is_dir()
    monkeypatch.setenv(url, "postgresql+asyncpg://u:p@db/prefect")  # the user's own: left alone
    assert project_database(tmp_path / "a") == {}


def test_a_server_it_starts_goes_down_on_ctrl_c_while_starting_and_on_a_refusal(tmp_path, monkeypatch):
    """Ctrl+C while `genzoo serve` waited for its Prefect server (up to 180 s on a first start)
    left the server running (in a session of its own, no signal reached it): a later `make serve`
    of any project joined it. So did a refusal after it started (another serve of this project
    on another port: the same database), which the check skipped for a server it had started."""
    import subprocess
    import time as time_module

    from genzoo.flows import serve as S
    from genzoo.tasks.errors import UsageError

    started, popen = [], subprocess.Popen

    def server(cmd, **kw):  # a stand-in for `prefect server start`, in a session of its own as that one
        started.append(popen(["sleep", "120"], start_new_session=True))
        return started[-1]

    monkeypatch.setattr(S.subprocess, "Popen", server)
    monkeypatch.setattr(S, "port_taken", lambda host, port: False)
    monkeypatch.setattr(S, "healthy", lambda api: False)
    sleep, calls = time_module.sleep, []

    def ctrl_c_once(seconds):
        calls.append(seconds)
        if len(calls) == 1:
            raise KeyboardInterrupt
        sleep(seconds)

    monkeypatch.setattr(S.time, "sleep", ctrl_c_once)
    with pytest.raises(KeyboardInterrupt):
        S.start_server("127.0.0.1", 1)
    monkeypatch.setattr(S.time, "sleep", sleep)
    assert started[0].wait(10) is not None  # stopped

    def interrupted(host, port):
        raise KeyboardInterrupt

    monkeypatch.setattr(S, "start_server", interrupted)  # Ctrl+C before it serves: `interrupted`, 130
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(tmp_path, families=["gan"])))
    with pytest.raises(KeyboardInterrupt):
        S.serve(port=1)
    monkeypatch.undo()
    monkeypatch.setattr(S.subprocess, "Popen", server)
    monkeypatch.setattr(S, "port_taken", lambda host, port: False)
    # started, then refused: another serve of this project serves the deployments
    ready = iter([False, True, True])
    monkeypatch.setattr(S, "healthy", lambda api: next(ready, True))
    monkeypatch.setattr(S, "served_elsewhere", lambda api, names: "genzoo-pipeline/pipeline polled 3 s ago")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(tmp_path, families=["gan"])))
    term = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(
            UsageError, match="served by another process .*another genzoo serve of this project"
        ):
            S.serve(port=1)
    finally:
        signal.signal(signal.SIGTERM, term)
    assert len(started) == 2 and started[1].wait(10) is not None


def test_the_runner_polls_for_runs_every_2_s_unless_told_otherwise(tmp_path, monkeypatch):
    """A Run click in the UI starts within 2 s: `genzoo serve` asks Prefect's runner to poll
    every 2 s (Prefect's default is 10), unless PREFECT_RUNNER_POLL_FREQUENCY says otherwise."""
    import prefect

    from genzoo.flows import serve as S

    served_with = []
    monkeypatch.setattr(prefect, "serve", lambda *deployments, **kw: served_with.append((deployments, kw)))
    monkeypatch.setattr(S, "healthy", lambda api: True)  # a server is up at PREFECT_API_URL
    monkeypatch.setattr(S, "served_elsewhere", lambda api, names: None)  # serving nothing yet
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    monkeypatch.setenv(S.ROOTS_ENV, "")  # serve() sets it: restored after the test
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(tmp_path, families=["gan"])))
    monkeypatch.delenv("PREFECT_RUNNER_POLL_FREQUENCY", raising=False)
    term = signal.getsignal(signal.SIGTERM)
    try:
        S.serve()
        monkeypatch.setenv("PREFECT_RUNNER_POLL_FREQUENCY", "7")
        S.serve()
        assert signal.getsignal(signal.SIGTERM) is term  # its SIGTERM-stops-it handler, put back after it
    finally:
        signal.signal(signal.SIGTERM, term)
    assert [kw["query_seconds"] for _, kw in served_with] == [2, None]  # None: Prefect reads its setting
    # set in a Prefect profile (`prefect config set`), not the environment: the same
    home = tmp_path / "prefect-home"
    home.mkdir()
    (home / "profiles.toml").write_text(
        'active = "mine"\n[profiles.mine]\nPREFECT_RUNNER_POLL_FREQUENCY = "5"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    read = "from genzoo.flows.serve import poll_frequency as f; print(f())"
    for profiles, seen in ((home / "profiles.toml", "5.0"), (tmp_path / "none.toml", "None")):
        where = {"PREFECT_HOME": str(home), "PREFECT_PROFILES_PATH": str(profiles)}
        out = subprocess.run(
            [sys.executable, "-c", read], env={**env, **where}, capture_output=True, text=True, check=True
        ).stdout
        assert out.split() == [seen], out
    assert {d.name for d in served_with[0][0]} == {"pipeline", "train-family", "augment", "sample", "judge"}


def test_ctrl_c_while_serving_lets_the_flow_runs_end_before_the_server_stops(tmp_path, monkeypatch):
    """Ctrl+C on `make serve` mid-run stopped the server at once: the flow run (Ctrl+C reaches it
    too) could not report how it ended, and stayed RUNNING in Prefect and MLflow for good."""
    import subprocess
    import sys as _sys

    import prefect

    from genzoo.flows import serve as S

    server = subprocess.Popen(["sleep", "120"], start_new_session=True)
    runs = []

    def serving(*deployments, **kw):  # a flow run still recording its end when Ctrl+C lands
        runs.append(subprocess.Popen([_sys.executable, "-c", "import time; time.sleep(1.5)"]))
        # and what the first spawned flow run starts, which lives as long as serve: not waited for
        tracker.append(
            subprocess.Popen([_sys.executable, "-c", "import time; time.sleep(60)  # resource_tracker"])
        )
        raise KeyboardInterrupt

    tracker = []

    stop, seen = S.stop, []
    monkeypatch.setattr(S, "stop", lambda proc: seen.append([r.poll() for r in runs]) or stop(proc))
    monkeypatch.setattr(S, "start_server", lambda host, port: server)
    monkeypatch.setattr(S, "healthy", lambda api: False)
    monkeypatch.setattr(S, "served_elsewhere", lambda api, names: None)
    monkeypatch.setattr(prefect, "serve", serving)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv(S.ROOTS_ENV, "")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(tmp_path, families=["gan"])))
    term = signal.getsignal(signal.SIGTERM)
    t0 = time.monotonic()
    try:
        S.serve(port=1)  # Ctrl+C once serving: how serve ends, no error
    finally:
        signal.signal(signal.SIGTERM, term)
        tracker[0].kill()
    assert seen == [[0]] and server.wait(10) is not None  # the run ended, then the server stopped
    assert time.monotonic() - t0 < 20  # (waiting for the tracker too, it ran out the 30 s)
    # a second Ctrl+C while it waits: the server still goes down
    server2 = subprocess.Popen(["sleep", "120"], start_new_session=True)
    monkeypatch.setattr(S, "start_server", lambda host, port: server2)

    def impatient(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(S, "flow_runs_end", impatient)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)  # (serve set it for its runner)
    try:
        with pytest.raises(KeyboardInterrupt):
            S.serve(port=1)
    finally:
        signal.signal(signal.SIGTERM, term)
        tracker[-1].kill()
    assert server2.wait(10) is not None
