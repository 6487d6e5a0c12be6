"""MLflow tracking: one parent run per pipeline run, a nested run per family with flattened
params, per-step metrics (visible while training), artifacts and tags, and each trained
model registered under its family's name.

The default store is ``sqlite:///<project>/mlflow.db`` with artifacts in
``<project>/mlartifacts`` (both git-ignored); ``MLFLOW_TRACKING_URI`` overrides. The store
and the experiment are created once by the driver before any worker logs (a fresh sqlite
store migrated by several processes at once races), and metric writes are batched
(``log_batch``) and retried when sqlite reports a lock.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genzoo.models.trainer import Callback, TrainResult
from genzoo.tasks.config import flatten
from genzoo.tasks.errors import GenzooError, ModelNotFound, TrackingUnavailable
from genzoo.tasks.layout import FAMILY_OUTPUTS, family_run_id, runs_folder_id

log = logging.getLogger("genzoo.tracking")
EXPERIMENT = "genzoo"
FOLDER_ID = "genzoo.runs_folder_id"  # the runs folder's own id (layout.runs_folder_id)
ARTIFACTS = FAMILY_OUTPUTS  # everything train@<family> writes goes to its run


def tracking_uri(root: str | Path = ".") -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve() / 'mlflow.db'}"


def preflight(uri: str | None = None) -> None:
    """Fail before any training when the tracking server does not answer, naming its URI
    (MLflow's own client would retry each call for minutes)."""
    import urllib.request

    uri = uri or tracking_uri()
    _check_scheme(uri)
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5):
            pass
    except OSError as e:
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} is unreachable ({e}); start it (make mlflow) or "
            "unset MLFLOW_TRACKING_URI to use the project's sqlite store"
        ) from None
    _host_allowed(uri)


def _host_allowed(uri: str) -> None:
    """MLflow 3's server refuses API calls whose Host it does not list (``--allowed-hosts``;
    by default localhost and private addresses), with a 403, yet answers /health: a server
    reached by a DNS name (``http://mlflow:5000``, a Kubernetes service) failed the run at its
    first MLflow call, after Ray started. One API call here, before any work; an answer of
    any other kind (404: no experiment yet; 401: a login the client sends) is the server's."""
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    try:
        url = f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}"
        with urllib.request.urlopen(url, timeout=5):
            return
    except urllib.error.HTTPError as e:
        body = e.read(500).decode("utf-8", "replace")
        if e.code != 403 or "Host header" not in body:
            return
    except OSError:
        return  # (it answered /health a moment ago: MLflow's client says what this is)
    raise TrackingUnavailable(
        f"MLflow tracking server {uri} refuses the host name {urlsplit(uri).hostname!r} "
        f'("{body.strip()}"): start it with --allowed-hosts naming it (MLflow 3 accepts '
        "localhost and private addresses by default), or reach it by an address it accepts"
    )


def _check_scheme(uri: str) -> None:
    """A store URI whose scheme MLflow has no store for (``htp://...``, a typo) refused in one line,
    naming where it came from; MLflow's own: a traceback ending in a KeyError of the scheme."""
    from urllib.parse import urlsplit

    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        known = set(_tracking_store_registry._registry)  # MLflow's and its plugins' schemes
    except (ImportError, AttributeError):  # (another MLflow's layout: its own error then)
        return
    scheme = urlsplit(uri.strip()).scheme.split("+")[0]  # postgresql+psycopg2: postgresql's
    if len(scheme) == 1:  # C:\mlruns, a Windows drive: a path, as MLflow reads it
        scheme = ""
    if scheme not in known:
        named = "MLFLOW_TRACKING_URI=" if os.environ.get("MLFLOW_TRACKING_URI") == uri else ""
        raise TrackingUnavailable(
            f"{named}{uri}: MLflow has no store for {scheme}:// URIs; give http(s)://host:port (make "
            "mlflow), sqlite:///path/mlflow.db, postgresql://... or mysql://..., or unset "
            "MLFLOW_TRACKING_URI for the project's sqlite store"
        )


@functools.cache
def _answered(uri: str) -> bool:
    preflight(uri)  # raises while it does not answer (not cached): the next client asks again
    return True


def client(uri: str | None = None):
    """An MLflow client of ``uri`` (default: the project's store); a tracking server that does
    not answer fails here, once per process, naming it (:func:`preflight`), whichever command
    or stage asked first, instead of MLflow retrying each call for minutes."""
    from mlflow import MlflowClient

    uri = uri or tracking_uri()
    _answered(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def prepare_store(uri: str | None = None, experiment: str = EXPERIMENT, root: str | Path = ".") -> str:
    """Create the store (runs its migrations) and the experiment; returns the experiment id."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is not None:
        mark_model_training(c, exp)
        return exp.experiment_id
    location = None
    if (uri or tracking_uri()).startswith("sqlite:"):
        location = (Path(root).resolve() / "mlartifacts").as_uri()
    return c.create_experiment(experiment, artifact_location=location, tags=EXPERIMENT_KIND)


# MLflow 3's UI opens an experiment in the view its kind tag names (GenAI traces, or model
# training runs with their metrics and charts); without the tag it guesses GenAI
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def mark_model_training(c, exp) -> None:
    """Tag an experiment made before genzoo set its kind (an older store) as model training."""
    for key, value in EXPERIMENT_KIND.items():
        if exp.tags.get(key) != value:
            c.set_experiment_tag(exp.experiment_id, key, value)


def log_summary(c, run_id: str, figures: dict[str, dict[str, Any]]) -> None:
    """The per-family figures on the pipeline's parent run (``vae.fd``, ``gan.train_seconds``),
    so the runs of several pipelines compare at a glance in the MLflow UI."""
    numbers = {
        f: {k: v for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}
        for f, row in figures.items()
    }
    log_numbers(c, run_id, numbers)


def retry(fn: Callable[[], Any], what: str, attempts: int = 8) -> Any:
    """``fn()``, tried again while sqlite reports a lock (other errors raised at once)."""
    for i in range(attempts):
        try:
            return fn()
        except Exception as e:  # sqlite lock errors surface as MlflowException/OperationalError
            if "locked" not in str(e).lower() or i == attempts - 1:
                raise
            time.sleep(0.05 * 2**i)
            log.debug("retrying %s after: %s", what, e)
    return None


def param_strings(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Params as MLflow wants them: dotted keys, string values (lists as JSON)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(param_strings(v, f"{key}."))
        else:
            out[key] = json.dumps(v) if isinstance(v, list | tuple) else str(v)
    return out


def git_tags() -> dict[str, str]:
    """The run's code as git knows it, where the working directory is a git checkout:
    ``genzoo.git_commit`` and ``genzoo.git_dirty`` ("true" when tracked files are changed or
    files git does not ignore are new, dvc.lock aside: the commit alone does not make that code).
    Read without taking git's index lock (a user's git command beside it is not refused)."""

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    # dvc.lock is rewritten by the runs themselves (`dvc commit`): not a change of the code
    changes = git("--no-optional-locks", "status", "--porcelain", "--", ".", ":!dvc.lock")
    return {
        "genzoo.git_commit": commit,
        "genzoo.git_dirty": "unknown" if changes is None else str(bool(changes)).lower(),
    }


class MlflowLogger(Callback):
    """Trainer callback: each log step's metrics go to the run in one ``log_batch``. A training
    resumed from a checkpoint first logs the steps before it from ``history`` (the training's
    running log, which keeps them: its checkpoint's copy): the run that registers the model holds
    its whole curve, not only the steps after the resume (those before are in the interrupted run
    too)."""

    def __init__(self, mlflow_client, run_id: str, history: Path | None = None):
        self.client, self.run_id, self.history = mlflow_client, run_id, history
        self.logged: set[tuple[str, int]] = set()  # (metric, step) this run holds from an earlier try

    def on_start(self, info: dict[str, Any]) -> None:
        start = info.get("start_step", 0)
        try:
            self._log_history(start)
        except Exception as e:  # the earlier steps are a courtesy: the training goes on without them
            log.warning("MLflow run %s: the steps before the checkpoint at %d not copied (%s)", self.run_id,
                        start, str(e).splitlines()[0] if str(e) else type(e).__name__)  # fmt: skip

    def _log_history(self, start: int) -> None:
        from mlflow.entities import Metric

        # a Ray task retried in the same run (its worker died) has logged some steps already:
        # those before the checkpoint are not copied again, nor those after it logged again
        self.logged = {
            (k, m.step)
            for k in self.client.get_run(self.run_id).data.metrics
            for m in self.client.get_metric_history(self.run_id, k)
        }
        if not start:
            return
        retry(lambda: self.client.set_tag(self.run_id, "genzoo.resumed_from_step", str(start)), "set_tag")
        if self.history is None or not self.history.exists():
            return
        rows = [json.loads(line) for line in self.history.read_text().splitlines() if line.strip()]
        ts = int(time.time() * 1000)
        batch = [
            Metric(k, float(v), ts, int(row["step"]))
            for row in rows
            if 0 < row.get("step", 0) <= start
            for k, v in row.items()
            if k != "step" and isinstance(v, int | float) and (k, int(row["step"])) not in self.logged
        ]
        for i in range(0, len(batch), 1000):  # MLflow takes at most 1,000 entities a batch
            part = batch[i : i + 1000]
            retry(lambda p=part: self.client.log_batch(self.run_id, p, synchronous=True), "log_batch")

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = [Metric(k, float(v), ts, step) for k, v in metrics.items() if (k, step) not in self.logged]
        if batch:
            retry(lambda: self.client.log_batch(self.run_id, metrics=batch, synchronous=True), "log_batch")

    def on_end(self, result: TrainResult) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        extra = [Metric("train_seconds", result.seconds, ts, result.steps)]
        retry(lambda: self.client.log_batch(self.run_id, metrics=extra, synchronous=True), "log_batch")


def start_run(
    c, experiment_id: str, name: str, parent: str | None = None, tags: dict[str, str] | None = None
):
    tags = {"mlflow.runName": name, **(tags or {})}
    if parent:
        tags["mlflow.parentRunId"] = parent
    return retry(lambda: c.create_run(experiment_id, run_name=name, tags=tags), "create_run")


def log_numbers(c, run_id: str, values: dict[str, Any], step: int = 0, prefix: str = "") -> None:
    """Every number in ``values`` (nested dicts flattened to dotted keys) in one batch."""
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    batch = [Metric(k, v, ts, step) for k, v in flatten(values, prefix).items()]
    retry(lambda: c.log_batch(run_id, metrics=batch, synchronous=True), "log_batch")


def _stored(held: float | None, value: float) -> bool:
    """Whether a run's latest ``held`` value of a metric is ``value`` as MLflow stored it (NaN is
    NaN; a SQL store keeps an infinity as the largest double of its sign)."""
    if held is None:
        return False
    if math.isnan(value) or math.isinf(value):
        big = math.isinf(held) or abs(held) >= sys.float_info.max
        return math.isnan(held) if math.isnan(value) else big and (held > 0) == (value > 0)
    return held == value


def log_stage(
    params,
    family: str,
    numbers: dict[str, Any] | None = None,
    *,
    prefix: str = "",
    artifact: Path | None = None,
    artifact_path: str | None = None,
) -> None:
    """A later stage's figures (every number in ``numbers``, under ``prefix``) and its output
    file, in the MLflow run of ``family``'s training, so one run holds all of a family's
    figures. Nothing when tracking is off or the family was trained without it. A figure the run
    holds already, unchanged, is not logged again (`genzoo judge results` twice: one row each)."""
    if not params.run.track or (run_id := family_run_id(params, family)) is None:
        return
    from mlflow.exceptions import MlflowException

    c = client()
    try:
        run = retry(lambda: c.get_run(run_id), "get_run")
    except MlflowException as e:  # a model trained elsewhere (`dvc pull`): its run is in that store
        if e.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        run = None
    if run is None or run.info.lifecycle_stage != "active":  # (a deleted run takes no figures)
        log.warning(
            "%s: its training's MLflow run %s is %s (%s%s): its figures are not logged to MLflow here",
            family, run_id, "deleted" if run else "not in this store", tracking_uri(),
            "" if run else "; the model was trained with another store, e.g. pulled with `dvc pull`",
        )  # fmt: skip
        return
    latest = run.data.metrics
    if numbers:
        changed = {k: v for k, v in flatten(numbers, prefix).items() if not _stored(latest.get(k), v)}
        if changed:
            log_numbers(c, run_id, changed)
    if artifact is not None:
        retry(lambda: c.log_artifact(run_id, str(artifact), artifact_path=artifact_path), "log_artifact")


def finish_family(
    c, run_id: str, family: str, out_dir: Path, metrics: dict[str, Any], about: dict[str, str] | None = None
) -> str:
    """Log the family's artifacts and final numbers, register the model; returns its version.
    ``about``: the version's tags (``genzoo.profile``, ...) and, under ``description``, the text
    the registry shows for it."""
    # final numbers, not nested logs; train_seconds is the trainer's (MlflowLogger.on_end logged it)
    top = {k: v for k, v in metrics.items() if not isinstance(v, dict) and k != "train_seconds"}
    log_numbers(c, run_id, top, step=int(metrics.get("steps", 0)))
    for name in ARTIFACTS:
        if name != "metrics.json" and (out_dir / name).exists():
            path, where = str(out_dir / name), "model" if name.startswith("model.") else None
            retry(lambda p=path, w=where: c.log_artifact(run_id, p, artifact_path=w), "log_artifact")
    retry(lambda: c.log_dict(run_id, metrics, "metrics.json"), "log_dict")  # the file comes last, after this
    if not retry(lambda: c.search_registered_models(f"name='{family}'"), "search_registered_models"):
        try:
            c.create_registered_model(family, description=f"genzoo {family} models")
        except Exception as e:  # created by a concurrent worker meanwhile
            if "already exists" not in str(e).lower():
                raise
    meta = json.loads((out_dir / "model.json").read_text())
    for key in ("fingerprint", "data_sha256"):
        retry(lambda key=key: c.set_tag(run_id, f"genzoo.{key}", meta.get(key, "")), "set_tag")
    run = retry(lambda: c.get_run(run_id), "get_run")
    about = dict(about or {})
    description = about.pop("description", None)
    version = retry(
        lambda: c.create_model_version(
            family,
            source=f"{run.info.artifact_uri}/model",
            run_id=run_id,
            tags=about,
            description=description,
        ),
        "create_model_version",
    )
    terminate(c, run_id, "FINISHED")
    return version.version


def terminate(c, run_id: str, status: str) -> None:
    """Close ``run_id`` as ``status``, retried while sqlite reports a lock (several families ending
    at once: a FINISHED run left RUNNING, its model registered, metrics.json unwritten)."""
    retry(lambda: c.set_terminated(run_id, status), "set_terminated")


def registered_version(c, uri: str):
    """The MLflow model version ``uri`` names: ``models:/<name>/<version>``, ``models:/<name>/latest``
    (the highest version) or ``models:/<name>@<alias>`` (as MLflow writes them); one that does
    not exist raises :class:`ModelNotFound` listing the versions and aliases there are."""
    from mlflow.exceptions import MlflowException

    ref = uri.removeprefix("models:/")
    name, at, alias = ref.partition("@")
    version = None
    if not at:
        name, _, version = ref.partition("/")
    if not name or not (version or alias) or "/" in alias:
        raise ValueError(
            f"{uri}: expected models:/<family>/<version>, models:/<family>/latest or models:/<family>@<alias>"
        )

    def versions() -> list:
        try:
            return c.search_model_versions(f"name='{name}'")
        except MlflowException:
            return []

    try:
        if alias:
            return c.get_model_version_by_alias(name, alias)
        if version == "latest":
            if found := versions():
                return max(found, key=lambda v: int(v.version))
        else:
            return c.get_model_version(name, version)
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
    known = versions()
    have = f"no versions of {name}"
    if not known:  # a name the store has no model of (models:/vea/1): the names it has
        from genzoo.tasks.config import did_you_mean

        try:
            names = sorted(m.name for m in c.search_registered_models())
        except MlflowException:
            names = []
        if names:  # (a name with no versions left is among them: no hint to itself)
            near = did_you_mean([name], [n for n in names if n != name])
            have += f"; registered models: {', '.join(names)}{near}"
    if known:
        have = f"versions of {name}: {', '.join(map(str, sorted(int(v.version) for v in known)))}"
        try:
            aliases: list[str] | None = sorted(c.get_registered_model(name).aliases or {})
        except MlflowException:
            aliases = None  # (unknown: not said to be none)
        if aliases:
            have += f"; aliases: {', '.join(aliases)}"
        elif alias and aliases == []:
            have += "; no aliases"
    what = f"no alias {alias!r} of {name}" if alias and known else "no such registered model version"
    raise ModelNotFound(f"{uri}: {what} in {tracking_uri()} ({have})")


def download_registered(uri: str, dst: str | Path | None = None) -> Path:
    """A registered model version (see :func:`registered_version`) -> a local folder holding
    model.json + model.safetensors."""
    store = tracking_uri()
    if store.startswith("sqlite:") and _missing_sqlite(store):
        # (MLflow would make an empty store there, in whichever folder this runs from, and find no model)
        raise ModelNotFound(
            f"{uri}: no MLflow store at {store} to read it from (the working directory's mlflow.db, unless "
            "MLFLOW_TRACKING_URI names another): run from the project's folder, or set MLFLOW_TRACKING_URI"
        )
    preflight()
    mv = registered_version(client(), uri)
    import mlflow.artifacts

    dst = Path(dst or tempfile.mkdtemp(prefix="genzoo-model-"))
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=mv.source, dst_path=str(dst), tracking_uri=tracking_uri()
    )
    return Path(local)


def log_params(c, run_id: str, block: dict[str, Any]) -> None:
    from mlflow.entities import Param

    params = [Param(k, v[:6000]) for k, v in param_strings(block).items()]
    retry(lambda: c.log_batch(run_id, params=params, synchronous=True), "log_params")


def set_tags(c, run_id: str, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    batch = [RunTag(k, str(v)) for k, v in tags.items()]
    retry(lambda: c.log_batch(run_id, tags=batch, synchronous=True), "set_tags")


def close_run(c, run_id: str, status: str = "FAILED") -> None:
    """End a run its worker could not end (killed, lost node): never left RUNNING."""
    if c.get_run(run_id).info.status == "RUNNING":
        retry(lambda: c.set_terminated(run_id, status), "set_terminated")


def _missing_sqlite(uri: str) -> bool:
    """A sqlite URI whose database file is not there (its path as SQLAlchemy reads it: relative to
    the working directory, percent-decoded, without ``?...``); in-memory is never missing."""
    from sqlalchemy.engine import make_url

    try:
        db = make_url(uri).database
    except Exception:  # (MLflow says what is wrong with it)
        return False
    return bool(db) and db != ":memory:" and not db.startswith("file:") and not Path(db).is_file()


def _quoted(value: str) -> str:
    """``value`` as a string of MLflow's search filter: in single quotes, or double ones when it
    holds a single quote (a folder /home/o'brien/runs made the filter invalid); one holding both
    cannot be searched for."""
    if "'" in value and '"' in value:
        raise GenzooError(f"{value}: a path with both ' and \" cannot be searched for in MLflow; rename it")
    return f'"{value}"' if "'" in value else f"'{value}'"


def folder_tags(runs_dir: str | Path) -> dict[str, str]:
    """The tags that tie a run to its runs folder: its path, and the folder's own id (another
    machine's folder at the same path, logging to the same server, is another folder)."""
    own = runs_folder_id(runs_dir)
    return {"genzoo.runs_dir": str(Path(runs_dir).resolve())} | ({FOLDER_ID: own} if own else {})


def _of_folder(c, runs_dir: str | Path, query: str, **kw) -> list:
    """The runs of this runs folder that ``query`` finds too (a run without the folder id, from
    before genzoo tagged it, by its path alone)."""
    exp = c.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return []
    tags = folder_tags(runs_dir)
    own = tags.get(FOLDER_ID)  # (unknown: by the path alone)
    query = f"tags.`genzoo.runs_dir` = {_quoted(tags['genzoo.runs_dir'])} and {query}"
    return [
        r
        for r in c.search_runs([exp.experiment_id], query, **kw)
        if own is None or r.data.tags.get(FOLDER_ID, own) == own
    ]


def run_of_model(c, runs_dir: str, family: str, fingerprint: str) -> str | None:
    """The finished run that trained ``family``'s model of ``fingerprint`` (model.json's) into
    ``runs_dir``, newest first; None when there is none. What metrics.json records, found again
    when a training of other settings that was killed had already removed that file."""
    if not fingerprint:
        return None
    query = (
        f"tags.`genzoo.family` = {_quoted(family)} and "
        f"tags.`genzoo.fingerprint` = {_quoted(fingerprint)} and attributes.status = 'FINISHED'"
    )
    found = _of_folder(c, runs_dir, query, max_results=100, order_by=["attributes.start_time DESC"])
    return found[0].info.run_id if found else None


def close_stale(c, runs_dir: str) -> list[str]:
    """Mark KILLED the runs a killed pipeline left RUNNING for ``runs_dir`` (call only while
    holding that folder's pipeline lock: then no live run can be writing there)."""
    stale = [
        r.info.run_id for r in _of_folder(c, runs_dir, "attributes.status = 'RUNNING'", max_results=1000)
    ]
    for rid in stale:
        retry(lambda rid=rid: c.set_terminated(rid, "KILLED"), "set_terminated")
    return stale
