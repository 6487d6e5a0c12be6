"""The Prefect UI: a local Prefect server on 127.0.0.1 and the deployments people run from it.

``genzoo serve`` (``make serve``) starts ``prefect server start`` on 127.0.0.1:4200 unless
``PREFECT_API_URL`` names a server already up, then serves five deployments from this
process: the whole pipeline, one family, a synthetic dataset, sampling from a model, and a
human-evaluation study. Open the UI,
pick a deployment, fill its parameter form, run. Ctrl+C stops both.

The server it starts has CSRF protection on and accepts cross-origin requests only from its own
origin. It listens on loopback; ``--host`` anything else refuses to start unless Prefect's basic
auth is set (``PREFECT_SERVER_API_AUTH_STRING=user:password``; the UI then asks for it and this
process's client sends it as ``PREFECT_API_AUTH_STRING``): the deployments run code on this machine.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import ipaddress
import logging
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("genzoo.serve")


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def answers(api_url: str) -> bool:
    """Something answers at ``api_url``: False only where nothing listens there, the host is
    unknown or it times out. An HTTP error is an answer (Prefect Cloud asks for its key), and so is
    a TLS failure (a server with a private CA, which Prefect's own settings may trust)."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=10):
            return True
    except urllib.error.HTTPError:
        return True
    except urllib.error.URLError as e:
        return isinstance(e.reason, ssl.SSLError)
    except OSError:
        return False


def check_api() -> None:
    """The Prefect server the user named (``PREFECT_API_URL``, or the active Prefect profile's)
    answers: ``genzoo run`` fails on one line before any work where it does not, not in a
    traceback from inside Prefect's engine. No server named: nothing to check (a temporary one)."""
    url = os.environ.get("PREFECT_API_URL")
    where, unset = "PREFECT_API_URL", "unset PREFECT_API_URL"
    if not url:
        from prefect.settings import get_current_settings

        url, where = get_current_settings().api.url, "the Prefect profile's PREFECT_API_URL"
        unset = "`prefect config unset PREFECT_API_URL` (or `prefect profile use` another profile)"
    if url and not answers(url):
        from genzoo.tasks.errors import Unreachable

        raise Unreachable(
            f"{where}={url}: no Prefect server answers there; start it (make serve), or {unset} "
            "and genzoo run starts a temporary one"
        )


def port_taken(host: str, port: int) -> bool:
    """Another program listens on ``host:port`` (a bind there fails)."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]  # the address the server binds (a wildcard too: one taken on loopback blocks it)
    except OSError:
        return False  # an unknown host: the server's own start says so
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind(addr)
        except OSError as e:  # in use; an address not of this machine is the server's own start to say
            return e.errno == errno.EADDRINUSE
    return False


def poll_frequency() -> float | None:
    """PREFECT_RUNNER_POLL_FREQUENCY where the user set it, in the environment or the active
    Prefect profile (`prefect config set`); None where Prefect's default stands."""
    with contextlib.suppress(ValueError):
        if os.environ.get("PREFECT_RUNNER_POLL_FREQUENCY"):
            return float(os.environ["PREFECT_RUNNER_POLL_FREQUENCY"])
    from prefect.settings import get_current_settings

    runner = get_current_settings().runner
    return float(runner.poll_frequency) if "poll_frequency" in runner.model_fields_set else None


def served_elsewhere(api: str, names: list[str], within: float | None = None) -> str | None:
    """A deployment of ``names`` (``flow/deployment``) that another process serves on the
    server at ``api``: the first whose runner polled it in the last ``within`` seconds (default
    30, or three polls of :func:`poll_frequency` where that is longer), with how long
    ago; None when none. (Prefect's runner pauses every deployment it served when it stops: a
    second `genzoo serve` joining the server would pause the first one's on its way out.)"""
    from datetime import datetime, timezone

    from prefect import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from genzoo.tasks.errors import Unreachable

    if within is None:
        within = max(3 * (poll_frequency() or 0), 30.0)
    now = datetime.now(timezone.utc)
    try:
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as c:
            for name in names:
                try:
                    d = c.read_deployment_by_name(name)
                except ObjectNotFound:
                    continue
                if d.last_polled is not None and not d.paused:
                    ago = (now - d.last_polled).total_seconds()
                    if ago < within:
                        return f"{name} polled {max(ago, 0):.0f} s ago"
    except Exception as e:  # httpx's and Prefect's client errors (refused, 401, a server gone since)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise Unreachable(f"{api}: the Prefect API does not answer genzoo's requests ({first})") from None
    return None


AUTH_ENV = "PREFECT_SERVER_API_AUTH_STRING"
ROOTS_ENV = "GENZOO_SERVE_ROOTS"  # set by serve(): the folders a deployment may read and write


def confine(params: Any = None, **paths: str | None) -> None:
    """In a flow run that ``genzoo serve`` started, refuse a path parameter (and every path in
    the params: data folders, data source, runs, checkpoints, augment.out_dir) that resolves,
    links followed, outside the project: the folder ``genzoo serve`` runs in and the folder of
    its params file. Elsewhere (the CLI, Python) a no-op."""
    roots = [Path(r) for r in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if r]
    if not roots:
        return
    named = {k: v for k, v in paths.items() if v}
    if params is not None:
        named |= {f"data.{k}": getattr(params.data, k) for k in ("raw_dir", "prepared_dir")}
        named |= {f"run.{k}": getattr(params.run, k) for k in ("runs_dir", "checkpoints_dir")}
        named["augment.out_dir"] = params.augment.out_dir
        kind, _, where = params.data.source.partition(":")
        if kind in ("npz", "folder") and where:
            named["data.source"] = where
    for key, value in named.items():
        real = Path(value).expanduser().resolve()
        if not any(real.is_relative_to(r) for r in roots):
            raise ValueError(
                f"{key}={value}: outside the project ({', '.join(map(str, roots))}); a deployment "
                "of genzoo serve reads and writes inside the project only"
            )


# addresses that bind every interface
WILDCARD = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    """``host`` (a name or an address) resolves to loopback addresses only."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


def check_exposure(host: str) -> None:
    """Refuse a server reachable from other hosts without Prefect's basic auth."""
    if is_loopback(host):
        return
    if not os.environ.get(AUTH_ENV, "").strip():
        raise ValueError(
            f"--host {host}: the Prefect server would be reachable from other machines, and its "
            f"deployments run code here; set {AUTH_ENV}=user:password (Prefect's basic auth) to "
            "serve beyond loopback, or keep the default --host 127.0.0.1"
        )
    if ":" not in os.environ[AUTH_ENV]:
        raise ValueError(f"{AUTH_ENV}: expected user:password")


def origins(host: str, port: int) -> str:
    """The server's own origins (CORS): the UI it serves calls its API from there only. For a
    wildcard ``host`` these are this machine's names and addresses; ``PREFECT_SERVER_CORS_ALLOWED_ORIGINS``
    set by the user wins."""
    if os.environ.get("PREFECT_SERVER_CORS_ALLOWED_ORIGINS"):
        return os.environ["PREFECT_SERVER_CORS_ALLOWED_ORIGINS"]
    names = {host, "localhost", "127.0.0.1"}
    if host in WILDCARD:
        import psutil

        names.discard(host)
        names |= {socket.gethostname(), reachable_name()}  # (the UI's page calls the latter)
        for addrs in psutil.net_if_addrs().values():
            names |= {a.address for a in addrs if a.family == socket.AF_INET}
    return ",".join(sorted(f"http://{n}:{port}" for n in names))


def project_database(root: Path) -> dict[str, str]:
    """The database setting of the Prefect server `genzoo serve` starts in the project at ``root``:
    a SQLite file of the project's own under Prefect's home, unless the user chose a database
    (``PREFECT_SERVER_DATABASE_CONNECTION_URL``, a profile). Servers of two projects sharing
    Prefect's default one listed each other's runs, and a run clicked in one project's UI was run
    by the other's ``genzoo serve`` (same deployment names), with that project's params."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    url = settings.server.database.connection_url
    default = f"sqlite+aiosqlite:///{settings.home / 'prefect.db'}"
    chosen = [k for k in ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL")
              if os.environ.get(k)]  # fmt: skip
    if chosen or (url is not None and url.get_secret_value() != default):
        return {}
    root = root.resolve()
    key = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    db = settings.home / "genzoo" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', root.name) or 'root'}-{key}.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return {"PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{db}"}


def reachable_name() -> str:
    """This machine as other machines reach it: its full name where that resolves to an address
    other than loopback (often it is ``localhost``), else its first such IPv4 address, else
    127.0.0.1."""
    import psutil

    name = socket.getfqdn()
    try:
        if not socket.gethostbyname(name).startswith("127."):
            return name
    except OSError:
        pass
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    return "127.0.0.1"


def ui_api_url(host: str, port: int) -> str:
    """The API address the UI's page calls from the browser (``PREFECT_UI_API_URL`` when set): on
    a server bound to every interface, this machine's name (127.0.0.1 sent browsers on other
    machines to their own loopback), said in the log with how to change it."""
    if os.environ.get("PREFECT_UI_API_URL"):
        return os.environ["PREFECT_UI_API_URL"]
    if host not in WILDCARD:
        return f"http://{local(host)}:{port}/api"
    url = f"http://{reachable_name()}:{port}/api"
    log.info("the UI calls its API at %s (browsers elsewhere reach this machine by another name: set "
             "PREFECT_UI_API_URL)", url)  # fmt: skip
    return url


def start_server(host: str, port: int, timeout: float = 180.0) -> subprocess.Popen:
    """``prefect server start`` on host:port with telemetry off, CSRF protection on and CORS
    limited to its own origin (basic auth from ``PREFECT_SERVER_API_AUTH_STRING`` when set);
    waits until healthy."""
    check_exposure(host)
    if port_taken(host, port):
        from genzoo.tasks.errors import UsageError

        raise UsageError(
            f"port {port} on {local(host)} is in use by another program (no Prefect server answers "
            f"there): serve on another, genzoo serve --port N (make serve PREFECT_PORT=N)"
        )
    log.info("starting prefect server on %s:%d", host, port)
    env = {
        **os.environ,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": ui_api_url(host, port),
        "PREFECT_SERVER_CSRF_PROTECTION_ENABLED": "true",
        "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": origins(host, port),
        **project_database(Path.cwd()),
    }
    env.pop("PREFECT_API_URL", None)  # the server itself must not point at another API
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
        env=env,
        start_new_session=True,  # stopped as a group with the serving process
    )
    api = f"http://{local(host)}:{port}/api"
    deadline = time.monotonic() + timeout
    try:  # stopped on any way out (Ctrl+C while it starts: in a session of its own, it outlived us)
        while not healthy(api) or proc.poll() is not None:
            if proc.poll() is not None:  # (another server answering there now is not ours)
                from genzoo.tasks.errors import Unreachable

                raise Unreachable(
                    f"prefect server on {local(host)}:{port} exited with code {proc.returncode} before it "
                    "answered (its lines above say why)"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"prefect server on {api} not healthy after {timeout:.0f} s")
            time.sleep(0.5)
    except BaseException:
        stop(proc)
        raise
    return proc


# Prefect's server app as Prefect's temporary server runs it (ephemeral: no UI, only the services
# a temporary server needs), on loopback; it exits when the process that started it is gone
# (even killed), rather than outliving it as an orphan.
_TEMPORARY = """\
import os, sys, threading, time
import uvicorn
from prefect.server.api.server import create_app
parent = os.getppid()
def orphaned():
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)
threading.Thread(target=orphaned, daemon=True).start()
uvicorn.run(create_app(ephemeral=True, final=True), host="127.0.0.1", port=int(sys.argv[1]),
            log_level="error", lifespan="on")
"""


def temporary_server() -> Callable[[], str | None]:
    """Start the Prefect server this process's flow will talk to, first thing, and return
    ``ready()``: call it just before the flow; it waits until the server is healthy and points
    this process (and the processes it starts: Ray's workers) at it (``PREFECT_API_URL``).

    With no Prefect API configured, a flow call starts Prefect's temporary server itself and
    waits for it (6-8 s on 2 cores) after this process's own imports and checks; started
    here, the two overlap. Where an API is configured (``PREFECT_API_URL`` in the environment,
    a Prefect profile, prefect.toml) ``ready()`` stops this one and leaves Prefect's setting
    alone; where this one cannot start, Prefect starts its own as before. Stopped at exit."""
    if os.environ.get("PREFECT_API_URL"):
        return lambda: None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # a secret of this run's for it (basic auth, Prefect's own): other users of the machine reach
    # the port, not this process's environment, which the flow's clients and Ray's workers inherit
    secret = secrets.token_urlsafe(32)
    proc = subprocess.Popen(  # a session of its own, as start_server's: stop() ends its group
        [sys.executable, "-c", _TEMPORARY, str(port)],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "PREFECT_SERVER_API_AUTH_STRING": secret},
    )
    atexit.register(stop, proc)  # before Prefect's log and event workers: they flush first
    api = f"http://127.0.0.1:{port}/api"
    log.debug("starting a temporary Prefect server on %s", api)

    def ready() -> str | None:
        import prefect.context
        from prefect.settings import get_current_settings

        settings = get_current_settings()
        refresh = getattr(prefect.context, "refresh_global_settings_context", None)
        if settings.api.url or refresh is None:  # a profile or prefect.toml names the user's server
            stop(proc)
            return None
        deadline = time.monotonic() + settings.server.ephemeral.startup_timeout_seconds
        while not healthy(api):
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                log.warning(
                    "the temporary Prefect server on %s did not start; Prefect starts its own (without "
                    "a secret: any local user reaches it while the run lasts)",
                    api,
                )
                return None
            time.sleep(0.1)
        os.environ["PREFECT_API_URL"] = api
        os.environ["PREFECT_API_AUTH_STRING"] = secret
        os.environ.setdefault("PREFECT_UI_URL", "")  # it serves no UI: no "View at" links to one
        refresh()  # Prefect read its settings when imported: read them again, with this server's URL
        return api

    return ready


def local(host: str) -> str:
    """The address this machine's clients use for a server bound to ``host``, as a URL writes it
    (an IPv6 address in brackets: http://::1:8400/ is no URL)."""
    return "127.0.0.1" if host in WILDCARD else f"[{host}]" if ":" in host else host


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


# the deployments genzoo serve serves, as flow/deployment
NAMES = [
    "genzoo-pipeline/pipeline",
    "genzoo-train-family/train-family",
    "genzoo-augment/augment",
    "genzoo-sample/sample",
    "genzoo-judge/judge",
]


def deployments(params_file: str = "params.yaml") -> list:
    from genzoo.flows.pipeline import augment, judge_study, pipeline, sample, train_one

    what = [
        (
            pipeline,
            "pipeline",
            "Prepare the data, train every family in parallel on Ray, evaluate, record in DVC.",
        ),
        (train_one, "train-family", "One family through the pipeline: train, evaluate, report, dataset."),
        (augment, "augment", "A labelled synthetic dataset from trained families: data/augment/<name>/."),
        (sample, "sample", "Draw labelled images from a trained family or a registered model into an .npz."),
        (judge_study, "judge", "A human study of the trained families: real or generated? (rater links)"),
    ]
    # those that write the project's folders run one at a time: a second click waits its turn
    # (Scheduled, "AwaitingConcurrencySlot"), as a run of another of them waits for the folder
    # (pipeline.holding)
    one_at_a_time = {"pipeline", "train-family", "augment"}
    return [
        fl.to_deployment(
            name=name,
            parameters={"params_file": params_file},
            description=doc,
            tags=["genzoo"],
            concurrency_limit=1 if name in one_at_a_time else None,
        )
        for fl, name, doc in what
    ]


def serve(host: str = "127.0.0.1", port: int = 4200, params_file: str = "params.yaml") -> None:
    """Start (or join) the Prefect server, then serve the deployments until interrupted. A
    server it started goes down with it on every way out (Ctrl+C or SIGTERM while it starts, a
    refusal after it)."""
    from genzoo.flows.cli import sigterm_stops

    server, serving = None, None
    if not Path(params_file).exists():  # before a server starts for nothing
        raise FileNotFoundError(f"{params_file}: params file not found (run genzoo serve in the project)")
    if os.environ.get(AUTH_ENV) and not os.environ.get("PREFECT_API_AUTH_STRING"):
        os.environ["PREFECT_API_AUTH_STRING"] = os.environ[AUTH_ENV]  # this process's client
    # SIGTERM (a service manager, `kill`) stops like Ctrl+C: the server goes down with us
    with sigterm_stops():
        try:
            api = os.environ.get("PREFECT_API_URL")
            if not api:
                check_exposure(host)
                api = f"http://{local(host)}:{port}/api"
                if not healthy(api):
                    server = start_server(host, port)
                os.environ["PREFECT_API_URL"] = api
                # Prefect reads its settings once, when imported (start_server's project_database
                # imports them): read them again, or prefect.serve would start a temporary server
                import prefect.context

                if refresh := getattr(prefect.context, "refresh_global_settings_context", None):
                    refresh()
            elif not healthy(api):
                from genzoo.tasks.errors import Unreachable

                raise Unreachable(f"PREFECT_API_URL={api}: no healthy Prefect server there")
            # asked of a server it started too: another genzoo serve of this project (on another port,
            # the same database) or one that took the port as this one's server started
            if other := served_elsewhere(api, NAMES):
                from genzoo.tasks.errors import UsageError

                raise UsageError(
                    f"{api.removesuffix('/api')} already has genzoo's deployments served by another process "
                    f"({other}: another genzoo serve of this project?); stop that one first; if it died "
                    "just now (one stopped pauses them), try again in half a minute"
                )
            if server is not None:  # its own server, started just now: no runner runs these deployments'
                # runs, and those a serve killed at once left running hold their deployment's slot
                crashed_runs_end(server, LEFT_RUNNING)
            roots = dict.fromkeys([Path.cwd().resolve(), Path(params_file).resolve().parent])
            os.environ[ROOTS_ENV] = os.pathsep.join(map(str, roots))  # the flow runs confine() to these
            from prefect import serve as prefect_serve

            print(f"Prefect UI: {api.removesuffix('/api')}  (deployments: {', '.join(NAMES)})", flush=True)
            # a Run click in the UI starts within 2 s (Prefect's runner polls every 10 s by default)
            poll = None if poll_frequency() is not None else 2
            import psutil

            serving = {p.pid for p in psutil.Process().children()}  # (what ran before: not its runs)
            prefect_serve(*deployments(params_file), print_starting_message=False, query_seconds=poll)
        except KeyboardInterrupt:
            if serving is None:  # stopped before it served: `interrupted`, 130 (once serving: how it ends)
                raise
        finally:
            if server is not None:
                try:  # (a second Ctrl+C while it waits: the server still goes down)
                    if serving is not None:  # (its runner may have started flow runs)
                        flow_runs_end(server, serving)
                        crashed_runs_end(server)
                finally:
                    stop(server)


# why the runs a genzoo serve killed at once left running are marked Crashed by the next one
LEFT_RUNNING = (
    "left running by a genzoo serve stopped without a word (SIGKILL, a crash, a reboot): nothing runs it "
    "now, and its deployment's one slot was taken"
)


def crashed_runs_end(server: subprocess.Popen | None = None, why: str | None = None) -> list[str]:
    """Record how the runs of the served deployments ended that are still running, pending or
    cancelling once the runner has stopped, while the server this process started is still up:
    Crashed (Cancelled for one being cancelled). Prefect's runner kills the flow runs it started
    on its way out; one on the private local Ray, itself stopping Ray after the Ctrl+C, was
    killed before it could record its end, and stayed RUNNING for good. Only these deployments'
    runs (by id: another flow's deployment of the same name on a shared server is not theirs),
    never forced over an end a run recorded meanwhile; no retries (a server going down under it
    must not hold the way out). ``why``: the states' message, for the runs a serve killed at once
    left running, found as the next one starts (requests retried as usual then); default: a serve
    stopped by Ctrl+C or SIGTERM. Returns the ids of the runs it ended."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_REQUEST_TIMEOUT, PREFECT_CLIENT_MAX_RETRIES, temporary_settings
    from prefect.states import Cancelled, Crashed

    api = os.environ.get("PREFECT_API_URL")  # (serve set it for its runner)
    if not api or (server is not None and server.poll() is not None) or not healthy(api):
        return []  # (the server is gone: nothing to record it in)
    # on the way out no retries (a server going down must not hold it); at the start (``why``
    # given) the client's own, as for any request: a locked database's 503 must not leave the runs
    patient = why is not None
    why = why or "genzoo serve stopped while it ran (Ctrl+C or SIGTERM): its process was stopped with it"
    left = [StateType.RUNNING, StateType.PENDING, StateType.CANCELLING]
    ended: list[str] = []
    try:
        no_retries = {} if patient else {PREFECT_CLIENT_MAX_RETRIES: 0, PREFECT_API_REQUEST_TIMEOUT: 10}
        with temporary_settings(no_retries), get_client(sync_client=True) as client:
            ids = []
            for n in NAMES:  # (one a Ctrl+C kept from being registered: none of its runs to end)
                with contextlib.suppress(Exception):
                    ids.append(client.read_deployment_by_name(n).id)
            if not ids:
                return []
            runs, page = [], 200
            while batch := client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=left))
                ),
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=ids)),
                limit=page,
                offset=len(runs),
            ):
                runs += batch
                if len(batch) < page:
                    break
            for run in runs:
                cancelling = run.state_type == StateType.CANCELLING
                state = Cancelled(message=why) if cancelling else Crashed(message=why)
                try:
                    result = client.set_flow_run_state(run.id, state)
                except Exception as e:  # this one not recorded: the others still are
                    log.warning("flow run %s (%s) not marked %s: %s", run.name, run.id, state.type.value, e)
                    continue
                if result.status.value == "ACCEPT":
                    ended.append(str(run.id))
                    log.warning("flow run %s (%s) marked %s: %s", run.name, run.id, state.type.value, why)
    except Exception as e:  # (the server going down under it: the run's page says the rest)
        log.warning("could not record how the flow runs left running ended: %s", e)
    return ended


def flow_runs_end(server: subprocess.Popen, before: set[int] = frozenset(), timeout: float = 30.0) -> None:
    """Wait (up to ``timeout``) for the flow runs this process started to end, the server still
    up: a Ctrl+C reaches them too, and each records how it ended (KILLED in MLflow, Crashed in
    Prefect) through the server; stopped first, it left them RUNNING in both for good."""
    import psutil

    def flow_run(p: psutil.Process) -> bool:  # not the server, nor multiprocessing's resource tracker
        try:  # (the first spawned run starts the tracker, which lives as long as this process)
            return (
                p.pid != server.pid
                and p.pid not in before
                and "resource_tracker" not in " ".join(p.cmdline())
            )
        except psutil.Error:
            return False

    runs = [p for p in psutil.Process().children() if flow_run(p)]
    if runs:
        log.info("waiting for %d flow run(s) to stop", len(runs))
        psutil.wait_procs(runs, timeout=timeout)
