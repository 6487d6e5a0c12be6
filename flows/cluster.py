"""Ray: where the families train. Locally a private Ray (pinned CPUs, no dashboard, loopback);
``ray.address`` in params, the flow's ``ray_address`` or ``RAY_ADDRESS`` joins a cluster.

The local Ray listens on loopback only (GCS, raylet, workers, the runtime-env agent, the
autoscaler monitor's metrics) and runs with Ray's token authentication on, always: an
inherited ``RAY_AUTH_MODE=disabled`` (or any mode but ``token``) is overridden for genzoo's
own Ray, with a warning; the token file is kept owner-only (0600). See :func:`local_ray_env`.

Workers run plain functions, passed by reference (``tasks.train.train_family`` and the
stages after it): no Prefect inside a worker, so no worker ever starts a Prefect server of
its own. A training reports its step, loss and ETA to a small actor the driver reads
(:class:`genzoo.flows.board.ProgressBoard`), so the driver's log shows each family's progress live.

Paths and the MLflow store are made absolute on the driver, so a worker finds them whatever
its working directory (on a multi-node cluster they must be on storage every node mounts,
and genzoo installed on every node).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import secrets
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from genzoo.models.trainer import Callback
from genzoo.tasks.config import Params
from genzoo.tasks.errors import GenzooError, Unreachable, UsageError

log = logging.getLogger("genzoo.cluster")

# Ctrl-C on the driver (`genzoo run`'s SIGINT handler calls `interrupt`): the Ray tasks the
# stages wait on are cancelled and every wait ends within POLL_S, instead of the run waiting
# out the tasks in Ray's own processes (the keyboard's SIGINT does not reach them) or hanging
# on a Ray the unwinding driver has already shut down
STOP = threading.Event()
POLL_S = 0.5
_WAITING: dict[Any, int] = {}  # the refs the stages' threads wait on (how many waits on each)
_WAITING_LOCK = threading.RLock()  # re-entrant: the SIGINT handler may run while the main thread holds it


class Interrupted(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C) while this thread waited on a Ray task: cancelled."""


def interrupt() -> None:
    """Stop the run: set :data:`STOP` and cancel every task a stage waits on (its worker killed)."""
    STOP.set()
    with _WAITING_LOCK:
        refs = list(_WAITING)
    for ref in refs:
        _cancel(ref)


def _cancel(ref: Any) -> None:
    import ray

    if ray.is_initialized():  # never ray's auto-init: it would join whatever Ray it finds, or hang
        try:
            ray.cancel(ref, force=True)
        except Exception as e:  # ended meanwhile, or Ray shutting down: nothing left to stop
            log.debug("cancelling %s: %s", ref, e)


@contextmanager
def _waiting_on(ref: Any) -> Any:
    with _WAITING_LOCK:
        _WAITING[ref] = _WAITING.get(ref, 0) + 1
    try:
        yield
    finally:
        with _WAITING_LOCK:
            if _WAITING[ref] == 1:
                del _WAITING[ref]
            else:
                _WAITING[ref] -= 1


def _abandon(limit_s: float = 5.0) -> None:
    """A run leaving its Ray on an exception (Ctrl-C, a stage's error): stop the tasks other
    stages still wait on and let their threads leave ``ray.wait`` (each within POLL_S) before
    Ray shuts down; a thread still inside it as Ray shuts down never returns, and the flow's
    task runner would wait on that thread for good."""
    interrupt()
    time.sleep(2 * POLL_S)  # a thread waiting its turn to submit sees the stop (it polls every POLL_S)
    deadline = time.monotonic() + limit_s
    while _WAITING and time.monotonic() < deadline:
        time.sleep(0.05)


def _ready(ref: Any, timeout: float) -> bool:
    """Whether ``ref``'s task has ended, waiting at most ``timeout`` s; once :data:`STOP` is
    set, the task is cancelled and :class:`Interrupted` raised."""
    import ray

    if STOP.is_set():
        _cancel(ref)
        raise Interrupted()
    if not ray.is_initialized():  # shut down under this wait: only an unwinding driver does that
        raise Interrupted() if STOP.is_set() else RuntimeError(f"Ray shut down while waiting on {ref}")
    done, _ = ray.wait([ref], timeout=timeout)
    return bool(done)


def absolute(params: Params) -> Params:
    """``params`` with every path absolute (resolved against the driver's directory)."""
    data = params.data.model_copy(
        update={k: str(Path(getattr(params.data, k)).resolve()) for k in ("raw_dir", "prepared_dir")}
    )
    run = params.run.model_copy(
        update={k: str(Path(getattr(params.run, k)).resolve()) for k in ("runs_dir", "checkpoints_dir")}
    )
    return params.model_copy(update={"data": data, "run": run})


def token_file() -> Path | None:
    """Where Ray reads its token (``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``); None when
    ``RAY_AUTH_TOKEN`` holds the token itself."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def owner_only_token(create: bool = True) -> Path | None:
    """Make sure Ray's token file exists (``create``) and only its owner can read it: a new one is
    written 0600 (in a 0700 folder when genzoo makes the folder); an existing one readable by
    others is narrowed to 0600. Returns the file (None when the token is in ``RAY_AUTH_TOKEN``,
    or there is none and ``create`` is off)."""
    path = token_file()
    if path is None or not (create or path.is_file()):
        return None
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            try:
                os.chmod(path, 0o600)
            except OSError as e:  # another user's file, a read-only secret mount: Ray may still use it
                log.warning("Ray token %s is readable by others (mode %o) and cannot be narrowed (%s)", path,
                            mode, e.strerror)  # fmt: skip
                return path
            log.warning("Ray token %s was readable by others (mode %o): now 0600", path, mode)
        return path
    with os.fdopen(fd, "w") as f:  # Ray's own format: 32 random bytes as hex
        f.write(secrets.token_hex(32))
    log.info("wrote a new Ray token to %s (mode 0600)", path)
    return path


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_ray_env():
    """The process settings genzoo's private Ray starts under, restored on exit:

    - ``RAY_AUTH_MODE=token``: token authentication on, whatever was inherited. Ray's default is
      token today, but ``RAY_AUTH_MODE=disabled`` in a user's shell would turn it off silently;
      genzoo overrides it for its own Ray and says so (a Ray joined by address keeps the
      user's settings: that cluster's token is the user's to give).
    - loopback: Ray resolves a node address of 127.0.0.1 to the machine's own address unless
      ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (its single-machine mode, the default on macOS
      and Windows), so GCS, raylet, workers and agents would listen on every interface.
      Set for the workers through the environment and for this process through
      ``ray_constants.ENABLE_RAY_CLUSTER`` (read when ``ray`` was imported).
    - ``AUTOSCALER_METRIC_PORT``: a free port for the autoscaler monitor's metrics (Ray's fixed
      44217 is taken by any other Ray on the machine, and the monitor then serves none).
    """
    from ray._private import ray_constants
    from ray._raylet import Config

    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.lower() != "token":
        log.warning(
            "RAY_AUTH_MODE=%s ignored for genzoo's local Ray: it runs with token authentication "
            "(RAY_AUTH_MODE=token); to run without it, start your own Ray and pass its address",
            mode,
        )
    keys = ("RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "AUTOSCALER_METRIC_PORT")
    saved = {k: os.environ.get(k) for k in keys}
    saved_cluster = ray_constants.ENABLE_RAY_CLUSTER
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if not saved["AUTOSCALER_METRIC_PORT"]:  # Ray's fixed 44217 clashes with any other Ray here
        os.environ["AUTOSCALER_METRIC_PORT"] = str(free_loopback_port())
    ray_constants.ENABLE_RAY_CLUSTER = False
    Config.initialize("")  # this process's cached Ray config reads RAY_AUTH_MODE anew (as Ray does)
    try:
        owner_only_token()
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_cluster
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        Config.initialize("")


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once, naming the address, when nothing listens at a Ray cluster's ``host:port``
    (or ``ray://host:port``): ``ray.init`` would wait for it for minutes, printing only Ray's
    reconnect warnings. ``local`` is Ray's to resolve; ``auto`` is resolved as Ray does (the
    one live cluster here, else the address the last ``ray start --head`` on this machine left
    in ``/tmp/ray/ray_current_cluster``) and checked like any other: a head stopped since (by
    its pids, as on a shared machine) left that address behind, and Ray waited on it without
    end. Anything else that is no ``host:port`` is refused in one line (Ray's: two tracebacks of
    a port it could not read)."""
    if address == "auto":
        from ray._private import services

        env = os.environ.get("RAY_ADDRESS", "")
        if env not in ("", "auto"):  # Ray's rule: the variable wins over auto
            return check_reachable(env, timeout)
        try:  # as Ray resolves it: the one live GCS here, else what the last `ray start --head` left
            found = services.get_ray_address_from_environment("auto", None)
        except ConnectionError:
            return  # no cluster here: Ray says so itself (with genzoo's hint)
        host, _, port = str(found).rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        except (OSError, ValueError) as e:
            why = getattr(e, "strerror", None) or e
            raise Unreachable(
                f"Ray cluster at auto ({found}, the address the last `ray start --head` on this machine "
                f"left in /tmp/ray/ray_current_cluster): nothing answers there ({why}); start it again, "
                "or give the running cluster's address (--ray-address HOST:6379)"
            ) from None
        return
    if address in ("auto", "local"):
        return
    scheme = address.partition("://")[0] if "://" in address else None
    if scheme in ("http", "https"):
        raise UsageError(
            f"{address}: the Ray dashboard's address (what `ray job submit` takes), not the cluster's; "
            "give the head's GCS address, host:6379"
        )
    if scheme not in (None, "ray"):  # a Ray Client plugin's (anyscale://...): Ray's to resolve
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not (sep and host.strip("[]") and port.isdecimal() and 0 < int(port) < 65536):
        raise UsageError(
            f"{address}: not a Ray address; give the head's host:port (GCS, 6379 unless `ray start "
            "--port` chose another), ray://host:10001 (Ray Client) or auto (the cluster `ray start` left "
            "on this machine)"
        )
    if address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
        from importlib.metadata import version

        raise UsageError(  # Ray's own: two tracebacks ending in "requires pip package ray[client]"
            f"{address}: a Ray Client address needs Ray's client extra, not installed here: "
            f"pip install 'ray[client]=={version('ray')}' (or, on a node of the cluster, give its "
            "GCS address, host:6379)"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise Unreachable(
            f"Ray cluster at {address}: nothing answers there ({e.strerror or e}); start it "
            "(`ray start --head`, see README: On a cluster) or leave out --ray-address / RAY_ADDRESS / "
            "ray.address for a local Ray"
        ) from None


@contextmanager
def _sigterm_kept():
    """``ray.init`` sets SIGTERM's handler to its own ``sys.exit``: a handler the caller had set
    is put back after it. Prefect's: a cancel from the UI (the runner's SIGTERM) then reaches the
    flow as TerminationSignal and the run ends CANCELLED, its Ray tasks stopped, where Ray's
    ``SystemExit`` crashed it; a caller's ``SIG_IGN`` is kept too. SIGTERM with no handler set
    keeps Ray's (the driver exits cleanly)."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if callable(before) or before == signal.SIG_IGN:
            signal.signal(signal.SIGTERM, before)


def _auth_error() -> tuple[type[BaseException], ...]:
    """Ray's error for token mode with no token found (from Ray 2.52; none before)."""
    import ray.exceptions

    found = getattr(ray.exceptions, "AuthenticationError", None)
    return (found,) if found else ()


def _join(address: str) -> None:
    """``ray.init`` on the cluster at ``address``; a refusal as one error that says what to do."""
    import ray

    check_reachable(address)
    owner_only_token(
        create=False
    )  # a cluster's token, copied here readable by all (`ray get-auth-token`'s umask)
    try:
        with _sigterm_kept():
            ray.init(address=address, namespace="genzoo", log_to_driver=False)
    except _auth_error() as e:  # token mode, and no token where Ray looks for one (Ray >= 2.52)
        said = str(getattr(e, "message", e)).split(". ")[0]
        where = os.environ.get("RAY_AUTH_TOKEN_PATH") or "~/.ray/auth_token (or RAY_AUTH_TOKEN)"
        raise Unreachable(
            f"Ray cluster at {address}: not joined, no token ({said}); put the cluster's token (its "
            f"head's ~/.ray/auth_token) in {where}"
        ) from None
    except ConnectionError as e:
        if "could not find any running ray instance" in str(e).lower():  # (`auto` with no cluster here)
            hint = "; start one (`ray start --head`) or give its address (--ray-address HOST:6379)"
        elif os.environ.get("RAY_AUTH_MODE", "").lower() != "token":  # a token-auth cluster asks for one
            hint = (
                "; a cluster with token authentication (what `ray start --head` sets up where a token "
                "exists or RAY_AUTH_MODE=token) admits "
                "only clients with RAY_AUTH_MODE=token and its token (~/.ray/auth_token, or RAY_AUTH_TOKEN)"
            )
            from genzoo.flows.serve import ROOTS_ENV

            if os.environ.get(ROOTS_ENV):  # a deployment's run: its environment is genzoo serve's
                hint += "; from the Prefect UI, start genzoo serve with RAY_AUTH_MODE=token"

        else:  # Ray says no more than that it could not connect when the token is wrong
            path = token_file()  # (RAY_AUTH_TOKEN_PATH's file, where it is given)
            given = (
                "RAY_AUTH_TOKEN"
                if path is None
                else ("~/.ray/auth_token" if path == Path.home() / ".ray" / "auth_token" else str(path))
            )
            hint = f"; with RAY_AUTH_MODE=token: is the token in {given} the cluster's (its head's "
            hint += "~/.ray/auth_token)?"
        raise Unreachable(
            f"Ray cluster at {address}: could not join ({str(e).splitlines()[0]}){hint}"
        ) from None


@contextmanager
def _used(ray: Any, started: bool) -> Any:
    """A run's use of ``ray``: leaving on an exception, the tasks its stages wait on are stopped
    and the waits ended first (:func:`_abandon`); a Ray it ``started`` is shut down after; its
    stop ends with it (a later use of Ray in the process, a caller's ``submit``, is not stopped)."""
    try:
        yield
    except BaseException:
        _abandon()
        raise
    finally:
        if started:
            ray.shutdown()
        STOP.clear()


def _say_if_not_asked(ray: Any, asked: str) -> None:
    """A warning where a run asked for a cluster (``--ray-address``, ``ray.address``,
    ``RAY_ADDRESS``) but the process already runs a Ray (a Python user's ``ray.init()``), which
    it uses: the address was passed over without a word."""
    if not asked:
        return
    try:
        current = ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - (which Ray: a detail of the warning)
        current = None
    if current and asked.removeprefix("ray://") == current:
        return
    log.warning(
        "%s asked for, but this process already runs a Ray (%s): the run uses that one (ray.shutdown() "
        "first to join %s)", asked, current or "ray.init() before", asked,
    )  # fmt: skip


@contextmanager
def connected(params: Params, address: str | None = None):
    """Join the cluster at ``address`` / ``ray.address`` / ``RAY_ADDRESS``, else start a local
    Ray sized by ``ray.*``; a Ray this started is shut down on exit, one already up is kept."""
    import ray

    STOP.clear()  # no earlier run's stop holds for this one
    if ray.is_initialized():  # the caller's Ray: left running, this run's tasks on it stopped
        _say_if_not_asked(ray, (address or params.ray.address or os.environ.get("RAY_ADDRESS") or "").strip())
        with _used(ray, started=False):
            yield ray
        return
    address = (address or params.ray.address or os.environ.get("RAY_ADDRESS") or "").strip()
    if address:  # (a space pasted around it in the UI's form: not part of it)
        _join(address)
        log.info("joined Ray cluster at %s: %s", address, ray.cluster_resources())
        with _used(ray, started=True):
            yield ray
        return
    with local_ray_env():
        with _sigterm_kept():
            ray.init(
                address="local",  # always a new private Ray, never one a `ray start` left on this machine
                # null: Ray's own count, which honours a container's CPU quota (os.cpu_count() is
                # the host's: 64 one-thread tasks on 2 CPUs' worth under docker run --cpus=2)
                num_cpus=params.ray.num_cpus,
                num_gpus=params.ray.num_gpus,
                object_store_memory=params.ray.object_store_mb * 2**20,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                namespace="genzoo",
                log_to_driver=False,
                configure_logging=False,
                # Ray re-runs a task its memory monitor killed without end by default (the run would
                # hang on a family that never fits); here such a task is re-run ray.max_retries times
                _system_config={"task_oom_retries": params.ray.max_retries},
            )
        log.info(
            "started a local Ray on %s (loopback only, token authentication): %s",
            ray.get_runtime_context().gcs_address,
            ray.cluster_resources(),
        )
        with _used(ray, started=True):
            yield ray


def check_fits(params: Params, families: list[str]) -> None:
    """Fail before any compute when no node of the cluster could ever hold a family's task
    (it would wait forever): names the ``ray.resources`` key and what the nodes have."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    for family in families:
        res = params.resources(family)
        need = {"CPU": res.num_cpus, "GPU": res.num_gpus}
        if res.memory_mb:
            need["memory"] = res.memory_mb * 2**20
        if not any(all(node.get(k, 0) >= v for k, v in need.items() if v) for node in nodes):
            have = [{k: node.get(k, 0) for k in need} for node in nodes]
            raise ValueError(
                f"ray.resources.{family}: no Ray node can hold num_cpus={res.num_cpus}, "
                f"num_gpus={res.num_gpus}, memory_mb={res.memory_mb} (nodes have {have})"
            )


class OutOfMemory(GenzooError, MemoryError):
    """A task needed more memory than its ``ray.resources.<family>.memory_mb``."""


def get(ref: Any, family: str) -> Any:
    """``ray.get(ref)`` of ``family``'s task; a task that Ray's memory monitor killed (the node
    ran short of memory, every retry spent) fails with :class:`OutOfMemory` naming the family
    and what to change, as one past its ``memory_mb`` does."""
    import ray

    with _waiting_on(ref):
        while not _ready(ref, POLL_S):
            pass
        try:
            return ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            if STOP.is_set():  # cancelled by this run's stop: ended like every other wait on it
                raise Interrupted() from None
            raise
        except ray.exceptions.OutOfMemoryError as e:
            seen = re.search(r"was \S+ used / \S+ limit", str(e))
            raise OutOfMemory(
                f"{family}: killed by Ray's memory monitor, the node running short of memory"
                f"{f' ({seen[0]})' if seen else ''}, after ray.max_retries re-runs: reserve memory for it "
                f"(ray.resources.{family}.memory_mb) or run fewer tasks at once (ray.num_cpus, "
                f"ray.resources.{family}.num_cpus)"
            ) from e


class _OverMemory(BaseException):
    """Raised inside a task's thread by its :class:`MemoryGuard` (a BaseException, so no
    ``except Exception`` in the task swallows it)."""


class MemoryGuard:
    """Hold a task to ``budget`` bytes of resident memory (RSS) above its worker's RSS when the
    guard starts. A thread reads the RSS every ``interval`` seconds; past the budget it raises
    :class:`_OverMemory` in the guarded thread (``PyThreadState_SetAsyncExc``: it lands at the
    thread's next Python instruction, so one large torch op may overshoot before it does), once:
    the task's cleanup runs with its memory still held. Resident memory is what a machine runs
    out of (an address-space limit would also count what a Ray worker reserves but never
    touches)."""

    def __init__(self, budget: int, interval: float = 0.02):
        import psutil

        self._proc = psutil.Process()
        self.budget, self.interval = budget, interval
        self.start_rss = self._proc.memory_info().rss
        self.peak = self.start_rss
        self.tripped = False
        self._target = threading.get_ident()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="genzoo-memory-guard", daemon=True)

    def __enter__(self) -> MemoryGuard:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:  # no exception is raised in the guarded thread once it has left
            self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        import ctypes

        limit = self.start_rss + self.budget
        while not self._stop.wait(self.interval):
            rss = self._proc.memory_info().rss
            self.peak = max(self.peak, rss)
            if rss <= limit:
                continue
            with self._lock:
                if self._stop.is_set():
                    return
                self.tripped = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._target), ctypes.py_object(_OverMemory)
                )
            return  # once: the memory stays up while the task unwinds, and its cleanup must run


def _on_node(
    fn: Callable[..., Any], tracking_uri: str | None, *args, memory: tuple[str, int] | None = None
) -> Any:
    """Run ``fn(*args)`` in a Ray worker, MLflow pointed where the driver's is. With ``memory``
    (``(family, memory_mb)``) the task may hold at most that much resident memory above its
    worker's (a :class:`MemoryGuard`, torch already loaded: Ray's ``memory`` resource only
    schedules, and its OOM killer acts on the whole node); past it this task alone fails with
    :class:`OutOfMemory`. Such a task runs in a worker of its own (``max_calls=1``), so the
    memory it held leaves with the worker."""
    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    import sys

    from genzoo.tasks.layout import GPU_UNASSIGNED

    ray = sys.modules.get("ray")  # (in a Ray worker; the tests call this function outside one too)
    # a task Ray gave no GPU runs `run.device: auto` on the CPU: Ray 2.60 no longer hides the node's
    # GPUs from it, and it took one no task had reserved beside one that had
    unassigned = GPU_UNASSIGNED.set(bool(ray and ray.is_initialized() and not ray.get_gpu_ids()))
    try:
        return _guarded(fn, args, memory)
    finally:
        GPU_UNASSIGNED.reset(unassigned)


def _guarded(fn: Callable[..., Any], args: tuple, memory: tuple[str, int] | None) -> Any:
    """``fn(*args)``, held to ``memory`` (``(family, memory_mb)``) where given (:func:`_on_node`)."""
    if memory is None:
        return fn(*args)
    import torch  # noqa: F401  (part of every worker's baseline, not of the task's budget)

    family, mb = memory
    guard = MemoryGuard(mb * 2**20)
    try:
        with guard:
            return fn(*args)
    except (_OverMemory, MemoryError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and "can't allocate memory" not in str(e):
            raise
        seen = (
            f"reached {(guard.peak - guard.start_rss) / 2**20:.0f} MB"
            if guard.tripped
            else (f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else 'allocation failed'}")
        )
        raise OutOfMemory(
            f"{family}: ran out of memory: the task may use ray.resources.{family}.memory_mb={mb} MB "
            f"above its worker's start ({seen})"
        ) from None


def train_here(
    params: Params, family: str, run_id: str | None, tags: dict[str, str], board: Any = None
) -> dict[str, Any]:
    """Train ``family`` in this worker, its MLflow run tagged with the Ray node and host; with
    a ``board`` (a :class:`~genzoo.flows.board.ProgressBoard` actor) the training reports its
    progress to it."""
    import ray

    from genzoo.tasks.train import train_family

    node = ray.get_runtime_context().get_node_id()
    where = {"genzoo.ray_node": node, "genzoo.host": socket.gethostname()}
    callbacks = [ReportProgress(board, family)] if board is not None else []
    metrics = train_family(
        params, family, progress=False, callbacks=callbacks, run_id=run_id, tags={**tags, **where}
    )
    return {**metrics, "ray_node": node, "host": where["genzoo.host"]}


def submit(
    params: Params, family: str, name: str, fn: Callable[..., Any], *args, tracking_uri: str | None = None
) -> Any:
    """Run ``fn(*args)`` as a Ray task named ``name`` with ``family``'s resources; returns the
    ObjectRef. A dead worker or node is re-run by Ray up to ``ray.max_retries`` times
    (training resumes from its checkpoint, finished work is skipped); an exception is a bug
    or bad input, not Ray's to retry."""
    if STOP.is_set():  # Ctrl-C: a stage that starts while the run unwinds sends nothing to Ray
        raise Interrupted()
    res = params.resources(family)
    options: dict[str, Any] = {
        "num_cpus": res.num_cpus,
        "num_gpus": res.num_gpus,
        "max_retries": params.ray.max_retries,
        "retry_exceptions": False,
        "name": name,
    }
    limit = None
    if res.memory_mb:
        options["memory"] = res.memory_mb * 2**20
        limit = (family, res.memory_mb)
    # with a memory limit, a worker of its own (max_calls=1): the limit leaves with it
    return _remote(bool(limit)).options(**options).remote(fn, tracking_uri, *args, memory=limit)


@functools.cache
def _remote(own_worker: bool) -> Any:
    """``_on_node`` as one Ray remote function per kind, made once: Ray queues each remote
    function's tasks apart and serves those queues in no set order, so a remote function made
    per call would let a task submitted last start first (the fan-out's longest-first order)."""
    import ray

    return ray.remote(max_calls=1)(_on_node) if own_worker else ray.remote(_on_node)


class InOrder:
    """Ray submissions in a set order from several threads. Ray starts queued tasks of one
    remote function in the order they reach it (see :func:`_remote`), but the flow's Prefect
    tasks reach it from their own threads, each after work of its own (a cache check, an
    MLflow run to open): left alone, which family trains first is a race, and a long chain
    (a family whose usefulness measurement waits on it) can start last and run alone at the
    end. ``with order.turn(name):`` waits until every name listed before ``name`` has had its
    turn (submitted, skipped or failed), then lets it go; names not listed go at once. A turn
    that waits ``timeout_s`` goes anyway: a task that never came (Prefect gave up on it) costs
    its successors that wait, never the run. ``passed``: the names in the order they went."""

    def __init__(self, names: list[str], timeout_s: float = 30.0) -> None:
        self.names, self.timeout_s = list(names), timeout_s
        self.passed: list[str] = []
        self._done: set[str] = set()
        self._changed = threading.Condition()

    @contextmanager
    def turn(self, name: str) -> Any:
        before = self.names[: self.names.index(name)] if name in self.names else []
        deadline = time.monotonic() + self.timeout_s
        with self._changed:
            while not self._done.issuperset(before) and time.monotonic() < deadline:
                if STOP.is_set():  # Ctrl-C: nothing more goes to Ray
                    raise Interrupted()
                self._changed.wait(POLL_S)
            if not self._done.issuperset(before):
                log.warning("%s: submitted after waiting %.0f s for %s", name, self.timeout_s,
                            ", ".join(n for n in before if n not in self._done))  # fmt: skip
            self.passed.append(name)
        try:
            yield
        finally:
            with self._changed:
                self._done.add(name)
                self._changed.notify_all()


def submit_training(
    params: Params,
    family: str,
    *,
    run_id: str | None,
    tracking_uri: str | None,
    tags: dict[str, str],
    board: Any = None,
) -> Any:
    """``family``'s training as a Ray task (``train-<family>``); returns the ObjectRef."""
    return submit(params, family, f"train-{family}", train_here, params, family, run_id, tags, board,
                  tracking_uri=tracking_uri)  # fmt: skip


def task_spans(since: float) -> list[dict[str, Any]]:
    """The Ray tasks that started after ``since`` (epoch seconds), from Ray's own task events
    (``ray.timeline``): ``{"name", "worker", "start", "end"}``, times in epoch seconds."""
    import ray

    quiet = logging.getLogger("ray._private.state")  # a notice about where events will be read
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        events = ray.timeline()
    except Exception as e:  # a Ray that keeps no task events (a client connection, ...): no timeline
        log.warning("no Ray task timeline: %s: %s", type(e).__name__, e)
        return []
    finally:
        quiet.setLevel(level)
    spans = []
    for e in events:
        cat = str(e.get("cat", ""))
        actor_call = "." in cat  # ProgressBoard.report ...: bookkeeping, not work
        if e.get("ph") == "X" and cat.startswith("task::") and not actor_call and e["ts"] / 1e6 >= since:
            start = e["ts"] / 1e6
            spans.append({"name": cat.removeprefix("task::"), "worker": f"{e['pid']} {e['tid']}",
                          "start": start, "end": start + e["dur"] / 1e6})  # fmt: skip
    return sorted(spans, key=lambda sp: sp["start"])


# ----------------------------------------------------------------------------- progress


@contextmanager
def progress_board():
    """A :class:`~genzoo.flows.board.ProgressBoard` actor for one pipeline run (no CPU of its
    own), killed on exit."""
    import ray

    from genzoo.flows.board import ProgressBoard  # torch-free: the actor's process imports only it

    board = ray.remote(num_cpus=0, max_restarts=0)(ProgressBoard).remote()
    try:
        yield board
    finally:
        ray.kill(board)


class ReportProgress(Callback):
    """Trainer callback in the worker: each log step's step, loss, speed and ETA go to the
    board. Fire and forget: a board that is gone (the driver died) never fails the training."""

    def __init__(self, board: Any, family: str):
        from genzoo.models.base import ExactLikelihood, LikelihoodBound, families_with

        self.board, self.family = board, family
        likelihood = family in families_with(ExactLikelihood | LikelihoodBound)
        self.scored = "test likelihood and sampling speed" if likelihood else "sampling speed"

    def on_start(self, info: dict[str, Any]) -> None:
        self.t0, self.start, self.steps = time.monotonic(), info.get("start_step", 0), info["steps"]

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        losses = {k: v for k, v in metrics.items() if k not in ("lr", "val")}
        if not losses:  # a validation-only log
            return
        name = next(iter(losses))
        elapsed = time.monotonic() - self.t0
        rate = (step - self.start) / elapsed if elapsed > 0 else 0.0
        row = {"step": step, "steps": self.steps, "loss_name": name, "loss": float(losses[name]),
               "steps_per_s": rate, "eta_s": (self.steps - step) / rate if rate > 0 else None}  # fmt: skip
        self._send(row)

    def on_end(self, result: Any) -> None:
        # what follows the last step (the test likelihood, every class summed out; the sampling
        # speed) took minutes on 28x28 images with nothing said
        note = f"trained ({result.steps} steps); measuring its {self.scored}"
        self._send({"step": result.steps, "steps": self.steps, "note": note})

    def _send(self, row: dict[str, Any]) -> None:
        try:
            self.board.report.remote(self.family, row)
        except Exception as e:  # the driver, and its board, are gone: keep training
            log.debug("progress report for %s dropped: %s", self.family, e)


def progress_line(family: str, row: dict[str, Any]) -> str:
    """``vae: step 150/600 (25%), neg_elbo 41.2, 12.3 steps/s, ETA 0:37`` (or the row's note)"""
    if row.get("note"):
        return f"{family}: {row['note']}"
    eta = row.get("eta_s")
    eta_text = "?" if eta is None else f"{int(eta) // 60}:{int(eta) % 60:02d}"
    return (
        f"{family}: step {row['step']}/{row['steps']} ({100 * row['step'] / row['steps']:.0f}%), "
        f"{row['loss_name']} {row['loss']:.4g}, {row['steps_per_s']:.1f} steps/s, ETA {eta_text}"
    )


def wait_reporting(ref: Any, board: Any, family: str, report: Callable[[str], None], every: float) -> Any:
    """``ray.get(ref)``, calling ``report(line)`` every ``every`` seconds with ``family``'s
    latest progress on ``board`` (when it moved)."""
    import ray

    shown, due = None, time.monotonic() + every
    with _waiting_on(ref):  # the board's reads too: Ray must not shut down under any of them
        while not _ready(ref, min(every, POLL_S)):
            if time.monotonic() < due:
                continue
            due = time.monotonic() + every
            try:
                row = ray.get(board.read.remote(family), timeout=min(every, 5.0))
            except Exception as e:  # a lost board costs the progress lines, never the training
                log.debug("progress of %s unreadable: %s", family, e)
                continue
            if row is not None and (row["step"], row.get("note")) != shown:
                shown = row["step"], row.get("note")
                report(progress_line(family, row))
        return get(ref, family)
