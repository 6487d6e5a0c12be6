"""The genzoo pipeline as a Prefect flow: prepare -> train every family in parallel on Ray (the
evaluator, and the generators trained on real subsets for the usefulness measurement, beside
them) -> evaluate each family (and its anomaly-detection benchmark) as soon as it is trained,
and measure whether its samples help a downstream classifier -> the synthetic dataset -> the
report -> record the outputs in DVC.

Each family is one Prefect task run (its own state, logs and retries in the UI) whose work
runs as a Ray task with the family's resources. A family whose outputs were made from the
current params, data and code is skipped (the same rule as ``dvc status``), so a re-run with
nothing changed trains nothing and a change to one family re-trains only that family.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from pydantic import Field

from genzoo import models
from genzoo.flows import cluster
from genzoo.tasks.config import Params, load_params
from genzoo.tasks.prepare import prepare
from genzoo.tasks.train import up_to_date
from genzoo.tasks.usefulness import families as usefulness_families

Family = Literal[tuple(models.REGISTRY)]  # the UI shows a pick list

# ----------------------------------------------------------------------------- retries

# errnos worth another try (flaky disk or network share); ENOSPC, ENOENT, EACCES are not
TRANSIENT_ERRNOS = {errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.ESTALE, errno.EINTR}


def is_transient(exc: BaseException | None) -> bool:
    """Retry flaky I/O and lost connections; a real bug (ValueError, KeyError, ...) fails once."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return True
    try:
        from ray.exceptions import NodeDiedError, ObjectLostError, WorkerCrashedError
    except ImportError:
        return False
    return isinstance(exc, NodeDiedError | WorkerCrashedError | ObjectLostError)


def _retry_transient(task, task_run, state) -> bool:
    exc = state.result(raise_on_failure=False)
    return is_transient(exc if isinstance(exc, BaseException) else None)


RETRY = dict(
    retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_retry_transient, cache_policy=NO_CACHE
)

# ----------------------------------------------------------------------------- one run at a time


class PipelineBusy(RuntimeError):
    """Another pipeline run holds this project's runs folder."""


@contextmanager
def exclusive(runs_dir: str | Path):
    """Hold ``<runs_dir>/.pipeline.lock`` for the run; a second run fails at once, clearly."""
    path = Path(runs_dir) / ".pipeline.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise PipelineBusy(
                f"{path}: another genzoo pipeline is running on this folder ({f.read().strip()}); "
                "wait for it or stop it"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- tasks


@task(name="prepare", **RETRY)
def prepare_task(params: Params) -> dict[str, Any]:
    manifest = prepare(params)
    get_run_logger().info(
        "prepared %s: %s", manifest["source"], {s: v["n"] for s, v in manifest["splits"].items()}
    )
    return manifest


@task(name="train", task_run_name="train-{family}", **RETRY)
def train_task(params: Params, family: str, parent_run_id: str | None = None) -> dict[str, Any]:
    logger = get_run_logger()
    done = up_to_date(params, family)
    if done is not None:
        logger.info("%s: up to date (same params, data and code), not retrained", family)
        return {**done, "cached": True}
    run_id, uri, c = None, None, None
    if params.run.track:
        from genzoo.tasks import tracking
        from genzoo.tasks.train import start_family_run

        c, uri = tracking.client(), tracking.tracking_uri()
        run_id = start_family_run(c, params, family, parent_run_id)
    tags = {"genzoo.prefect_flow_run": str(flow_run.id or "")}
    import ray

    ref = cluster.submit_training(params, family, run_id=run_id, tracking_uri=uri, tags=tags)
    try:
        metrics = ray.get(ref)
    except BaseException:
        if c is not None:  # the worker may have died before it could end its run
            tracking.close_run(c, run_id, "FAILED")
        raise
    logger.info(
        "%s: %d steps in %.1f s on %s%s",
        family,
        metrics["steps"],
        metrics["train_seconds"],
        metrics["host"],
        f", test {metrics['test_bpd']:.3f} bits/dim ({metrics['bpd_estimator']})"
        if "test_bpd" in metrics
        else "",
    )
    return {**metrics, "cached": False}


@task(name="record-in-dvc", **RETRY)
def record_in_dvc(
    families: list[str], after: list[str], detected: list[str] = (), useful: list[str] = ()
) -> list[str]:
    """``dvc commit`` the stages this run produced, so ``dvc status`` calls them up to date."""
    stages = ["prepare", *(f"train@{f}" for f in families), *(f"detect@{f}" for f in detected)]
    stages += ["usefulness-reference", *(f"usefulness@{f}" for f in useful)] if useful else []
    for name in ["evaluate", *after]:
        for st in DVC_STAGES.get(name, []):
            stages += [st.format(family=f) for f in families] if "{family}" in st else [st]
    cmd = [sys.executable, "-m", "dvc", "commit", "--force", *stages]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if proc.returncode != 0:
        raise RuntimeError(
            f"dvc commit {' '.join(stages)} failed: {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return stages


def _tracking_uri(params: Params) -> str | None:
    if not params.run.track:
        return None
    from genzoo.tasks import tracking

    return tracking.tracking_uri()


@task(name="evaluator", **RETRY)
def evaluator_task(params: Params) -> dict[str, Any]:
    """The evaluator and the reference rows (cached), as a Ray task beside the trainings."""
    import ray

    ref = cluster.submit(params, "evaluator", "evaluator", "genzoo.tasks.evaluate:evaluator_stage", params)
    metrics = ray.get(ref)
    get_run_logger().info("evaluator: test accuracy %.4f", metrics["test_accuracy"])
    return metrics


@task(name="evaluate", task_run_name="evaluate-{family}", **RETRY)
def evaluate_task(params: Params, family: str) -> dict[str, Any]:
    """``family``'s sample quality (cached), as a Ray task as soon as its training is done."""
    import ray

    fn = "genzoo.tasks.evaluate:evaluate_family"
    q = ray.get(cluster.submit(params, family, f"evaluate-{family}", fn, params, family,
                               tracking_uri=_tracking_uri(params)))  # fmt: skip
    get_run_logger().info(
        "%s: FD %.3f ± %.3f, precision %.3f, recall %.3f, %.0f images/s",
        family, q["fd"], q["ci95"]["fd"], q["precision"], q["recall"], q["images_per_second"],
    )  # fmt: skip
    keys = ("fd", "kid", "precision", "recall", "density", "coverage", "class_accuracy", "images_per_second")
    out = {k: q[k] for k in keys} | {"fd_ci95": q["ci95"]["fd"]}
    if family in params.detect.families:  # anomaly detection by likelihood, on the same worker slot
        a = ray.get(
            cluster.submit(
                params, family, f"detect-{family}", "genzoo.tasks.detect:run_benchmark", params, family
            )
        )
        out["anomaly_auroc"] = {name: st["likelihood"]["auroc"] for name, st in a["sets"].items()}
        get_run_logger().info("%s: anomaly AUROC (likelihood) %s", family, out["anomaly_auroc"])
    return out


@task(name="usefulness-reference", **RETRY)
def usefulness_reference_task(params: Params) -> dict[str, Any]:
    """Real data alone and PCA + KDE on the same subsets (cached), as a Ray task."""
    import ray

    fn = "genzoo.tasks.usefulness:reference"
    ref = ray.get(cluster.submit(params, "evaluator", "usefulness-reference", fn, params))
    get_run_logger().info(
        "usefulness reference: real %s",
        {p: {c: round(r["mean"], 4) for c, r in per.items()} for p, per in ref["real"].items()},
    )
    return {"real": ref["real"], "pca_kde_tstr": ref["pca_kde"]["tstr"]}


@task(name="train-subsets", task_run_name="train-subsets-{family}", **RETRY)
def subsets_task(params: Params, family: str) -> dict[str, Any]:
    """``family`` trained on each real subset only (cached), as a Ray task beside the trainings."""
    import ray

    fn = "genzoo.tasks.usefulness:train_subsets"
    return ray.get(cluster.submit(params, family, f"train-subsets-{family}", fn, params, family))


@task(name="usefulness", task_run_name="usefulness-{family}", **RETRY)
def usefulness_task(params: Params, family: str) -> dict[str, Any]:
    """Train-on-synthetic accuracy and the augmentation lift of ``family`` (cached)."""
    import ray

    fn = "genzoo.tasks.usefulness:measure_family"
    u = ray.get(cluster.submit(params, family, f"usefulness-{family}", fn, params, family,
                               tracking_uri=_tracking_uri(params)))  # fmt: skip
    lifts = {
        p: {c: round(v["lift"]["mean"], 4) for c, v in per.items()} for p, per in u["augmentation"].items()
    }
    get_run_logger().info(
        "%s: train-on-synthetic accuracy %s; lift %s",
        family, {c: round(v["mean"], 4) for c, v in u["tstr"].items()}, lifts,
    )  # fmt: skip
    return {"tstr": {c: v["mean"] for c, v in u["tstr"].items()}, "lift": lifts}


@task(name="augment", **RETRY)
def augment_task(params: Params, req: Any = None) -> str:
    """A labelled synthetic dataset (default: the params' ``augment`` block)."""
    from genzoo.tasks.augment import generate

    path = generate(params, req)
    manifest = json.loads((path / "manifest.json").read_text())
    get_run_logger().info(
        "%s: %d images from %s, per class %s, filters %s",
        path, manifest["n"], ", ".join(manifest["families"]), manifest["counts_per_class"],
        manifest["filters"]["rejected"],
    )  # fmt: skip
    return str(path)


@task(name="augment-dataset", **RETRY)
def augment_stage(params: Params, trained: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's synthetic dataset: params.yaml's ``augment`` block."""
    path = Path(augment_task.fn(params))
    manifest = json.loads((path / "manifest.json").read_text())
    return {"path": str(path), "n": manifest["n"], "families": list(manifest["families"]),
            "sha256": manifest["sha256"]}  # fmt: skip


@task(name="report", **RETRY)
def report_task(params: Params, trained: dict[str, Any]) -> dict[str, Any]:
    """The HTML report of what was trained and evaluated (runs/report/index.html)."""
    from genzoo.tasks.report import build_report

    summary = build_report(params)
    t = summary["targets"]
    get_run_logger().info(
        "report: %s; best %s at %.2fx the real-vs-real floor",
        Path(params.run.runs_dir) / "report" / "index.html",
        t["best_family"],
        t["best_ratio_to_floor"],
    )
    return summary


# Evaluation runs per family as soon as the family is trained (the evaluator beside the
# trainings). The stages after that, in order, are Prefect tasks called as
# ``stage(params, trained)`` with ``trained`` = {family: metrics}; what each returns lands in
# the flow's result under its name.
AFTER_TRAINING: list[Callable[..., Any]] = [augment_stage, report_task]
# the DVC stages each produces, per family (recorded by `dvc commit` after a run)
DVC_STAGES = {
    "evaluate": ["evaluator", "evaluate@{family}"],
    "augment-dataset": ["augment"],
    "report": ["report"],
}


def _dvc_matches(params: Params, params_file: str, overrides: list[str], profile: str | None) -> bool:
    """Whether this run's outputs are what ``dvc repro`` would make (same params.yaml, default
    paths): only then are they recorded in dvc.lock."""
    if overrides or profile or not Path("dvc.yaml").exists() or not Path(".dvc").is_dir():
        return False
    if Path(params_file).resolve() != Path("params.yaml").resolve():
        return False
    return params.run.runs_dir == "runs" and params.data.prepared_dir == "data/prepared"


def _longest_first(params: Params, families: list[str]) -> list[str]:
    """Longest expected training first (last measured time, else steps): fewer idle workers."""

    def cost(f: str) -> float:
        try:
            return json.loads((Path(params.run.runs_dir) / f / "metrics.json").read_text())["train_seconds"]
        except (OSError, ValueError, KeyError):
            return float(params.train_config(f).steps)

    return sorted(families, key=cost, reverse=True)


# ----------------------------------------------------------------------------- the flow


@flow(name="genzoo-pipeline", log_prints=True)
def pipeline(
    params_file: Annotated[str, Field(description="params file, relative to the project")] = "params.yaml",
    families: Annotated[
        list[Family] | None, Field(description="subset of families (default: every family in params)")
    ] = None,
    overrides: Annotated[
        list[str] | None, Field(description="dotted key=value overrides, e.g. models.vae.train.steps=300")
    ] = None,
    profile: Annotated[
        str | None, Field(description="override set from params.yaml's profiles, e.g. quick")
    ] = None,
    ray_address: Annotated[
        str | None,
        Field(description="Ray cluster to join (default: ray.address, RAY_ADDRESS, else a local Ray)"),
    ] = None,
    record_dvc: Annotated[
        bool, Field(description="dvc commit the outputs when params.yaml was used as is")
    ] = True,
) -> dict[str, Any]:
    """Prepare the data, train every family in parallel on Ray, run the stages after training."""
    logger = get_run_logger()
    overrides = list(overrides or [])
    params = load_params(params_file, overrides, profile)  # fails here, before any compute
    chosen = list(families or params.families)
    unknown = [f for f in chosen if f not in params.models]
    if unknown:
        raise ValueError(
            f"families: {', '.join(unknown)} not in {params_file} (has {', '.join(params.families)})"
        )
    if params.run.track:
        from genzoo.tasks import tracking

        tracking.preflight()
    t0 = time.perf_counter()
    with exclusive(params.run.runs_dir):
        params_abs = cluster.absolute(params)
        parent, c = None, None
        if params.run.track:
            c = tracking.client()
            experiment = tracking.prepare_store()
            runs_dir = params_abs.run.runs_dir
            for rid in tracking.close_stale(c, runs_dir):
                logger.warning("MLflow run %s was left RUNNING by a killed pipeline: marked KILLED", rid)
            tags = {
                "genzoo.runs_dir": runs_dir,
                "genzoo.families": ",".join(chosen),
                "genzoo.git_commit": tracking.git_commit(),
                "genzoo.prefect_flow_run": str(flow_run.id or ""),
            }
            parent = tracking.start_run(c, experiment, "pipeline", tags=tags).info.run_id
        try:
            with cluster.connected(params, ray_address):
                cluster.check_fits(params, [*chosen, "evaluator"])
                prepare_task(params_abs)
                evaluator = evaluator_task.submit(params_abs)
                order = _longest_first(params, chosen)
                useful = [f for f in usefulness_families(params) if f in chosen]
                # generators trained on real subsets start with the trainings (they need no model)
                subsets = {f: subsets_task.submit(params_abs, f) for f in useful}
                futures = {f: train_task.submit(params_abs, f, parent) for f in order}
                reference = usefulness_reference_task.submit(params_abs) if useful else None
                evaluations = {
                    f: evaluate_task.submit(params_abs, f, wait_for=[futures[f], evaluator]) for f in order
                }
                usefulness = {
                    f: usefulness_task.submit(params_abs, f, wait_for=[futures[f], subsets[f], reference])
                    for f in useful
                }
                trained = {f: fut.result() for f, fut in futures.items()}
                evaluator.result()
                evaluated = {f: fut.result() for f, fut in evaluations.items()}
                measured = {f: fut.result() for f, fut in usefulness.items()}
            result: dict[str, Any] = {"trained": trained, "evaluate": evaluated, "usefulness": measured}
            for stage in AFTER_TRAINING:
                result[stage.name] = stage(params_abs, trained)
            if record_dvc and _dvc_matches(params, params_file, overrides, profile):
                # the models are made and tracked whatever happens here: a failed record is
                # reported (`dvc status` will call the stages stale), not a failed pipeline
                detected = [f for f in chosen if f in params.detect.families]
                after = [st.name for st in AFTER_TRAINING]
                state = record_in_dvc(chosen, after, detected, useful, return_state=True)
                if state.is_failed():
                    logger.error(
                        "outputs not recorded in dvc.lock (run `dvc commit` yourself): %s", state.message
                    )
                result["dvc_committed"] = state.result() if state.is_completed() else []
            elif record_dvc:
                logger.info("not recorded in dvc.lock: this run's params differ from params.yaml as is")
        except BaseException:
            if c is not None:
                c.set_terminated(parent, "FAILED")
            raise
        if c is not None:
            tracking.set_tags(c, parent, {f"genzoo.cached.{f}": str(m["cached"]) for f, m in trained.items()})
            c.set_terminated(parent, "FINISHED")
            result["mlflow_run_id"] = parent
    result["pipeline_seconds"] = round(time.perf_counter() - t0, 1)
    retrained = [f for f, m in trained.items() if not m["cached"]]
    logger.info(
        "pipeline done in %.1f s: trained %s, up to date %s",
        result["pipeline_seconds"],
        retrained or "none",
        [f for f in trained if f not in retrained] or "none",
    )
    return result


@flow(name="genzoo-train-family", log_prints=True)
def train_one(
    family: Family,
    params_file: str = "params.yaml",
    overrides: Annotated[list[str] | None, Field(description="dotted key=value overrides")] = None,
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Prepare (if needed) and train one family on Ray."""
    return pipeline(params_file=params_file, families=[family], overrides=overrides, ray_address=ray_address)


@flow(name="genzoo-sample", log_prints=True)
def sample(
    family: Annotated[Family | None, Field(description="use the model trained in runs/<family>/")] = None,
    model: Annotated[
        str | None, Field(description="or a registered version models:/<family>/<version>, or a model.json")
    ] = None,
    n: Annotated[int, Field(gt=0, description="number of images")] = 100,
    cls: Annotated[str | None, Field(description="class name or index (default: the label prior)")] = None,
    out: Annotated[
        str | None, Field(description="output path without suffix (default: samples/<name>)")
    ] = None,
    seed: Annotated[int, Field(ge=0, description="same seed, same images")] = 0,
    params_file: str = "params.yaml",
) -> dict[str, Any]:
    """Draw labelled images from a trained model into ``<out>.npz`` (images, labels) + ``.png``."""
    from genzoo.tasks.sample import class_names, load_model, resolve_class, sample_to_file

    if not family and not model:
        raise ValueError("give family (a model in runs/<family>/) or model (models:/<family>/<version>)")
    params = load_params(params_file)
    net = load_model(model or family, params.run.runs_dir)
    cls_index = resolve_class(net, cls, class_names(params.data.prepared_dir))
    npz, png = sample_to_file(
        net, n, out or f"samples/{family or net.family}", cls=cls_index, seed=seed, progress=False
    )
    get_run_logger().info("%d images from %s -> %s", n, model or f"runs/{family}", npz)
    return {"npz": str(npz), "png": str(png), "n": n}


@flow(name="genzoo-augment", log_prints=True)
def augment(
    families: Annotated[
        list[Literal[(*models.REGISTRY, "best")]] | None,
        Field(description="trained families, or best (default: params.yaml's augment block)"),
    ] = None,
    per_class: Annotated[int | None, Field(gt=0, description="images per class from each family")] = None,
    name: Annotated[str | None, Field(description="dataset folder: data/augment/<name>/")] = None,
    seed: Annotated[int | None, Field(ge=0, description="same seed, same dataset")] = None,
    min_confidence: Annotated[
        float | None, Field(ge=0, lt=1, description="keep images the evaluator labels this surely")
    ] = None,
    reject_copies: Annotated[bool | None, Field(description="drop near-copies of training images")] = None,
    png: Annotated[bool | None, Field(description="also png/<class>/<i>.png")] = None,
    out_dir: Annotated[str | None, Field(description="parent folder of the datasets (data/augment)")] = None,
    params_file: str = "params.yaml",
) -> dict[str, Any]:
    """Write a labelled synthetic dataset (images.npz + manifest.json) from trained families;
    what is not given comes from params.yaml's ``augment`` block."""
    from genzoo.tasks.augment import request

    params = load_params(params_file)
    req = request(params, families=families, per_class=per_class, name=name, seed=seed, out_dir=out_dir,
                  min_confidence=min_confidence, reject_copies=reject_copies, png=png)  # fmt: skip
    path = Path(augment_task(params, req))
    manifest = json.loads((path / "manifest.json").read_text())
    return {"path": str(path), "n": manifest["n"], "sha256": manifest["sha256"]}
