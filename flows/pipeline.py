"""The genzoo pipeline as a Prefect flow: prepare -> train every family in parallel on Ray (the
evaluator, and the generators trained on real subsets for the usefulness measurement, beside
them) -> evaluate each family (and its anomaly-detection benchmark) as soon as it is trained,
and measure whether its samples help a downstream classifier -> the synthetic dataset -> the
report -> record the outputs in DVC.

Each family is one Prefect task run (its own state, logs and retries in the UI) whose work
runs as a Ray task with the family's resources; while it trains, its step, loss and ETA are
logged every few seconds. A family whose outputs were made from the current params, data and
code is skipped (the same rule as ``dvc status``), so a re-run with nothing changed trains
nothing and a change to one family re-trains only that family.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.exceptions import MissingContextError, TerminationSignal
from prefect.logging.handlers import APILogHandler
from prefect.runtime import flow_run
from prefect.runtime import task_run as this_task_run
from pydantic import Field, WithJsonSchema

from genzoo import models
from genzoo.flows import cluster
from genzoo.flows.serve import confine
from genzoo.tasks import tracking
from genzoo.tasks.augment import check_target, harmful, lift_means
from genzoo.tasks.config import MAX_SEED, Params, did_you_mean, load_params
from genzoo.tasks.data import read_manifest
from genzoo.tasks.detect import run_benchmark
from genzoo.tasks.errors import Unreachable, check_output_dir, user_error
from genzoo.tasks.evaluate import evaluate_family, evaluator_stage
from genzoo.tasks.formats import check_formats
from genzoo.tasks.layout import (
    DATASET_BECAUSE,
    STUDY_BECAUSE,
    check_outside_source,
    evaluation_dir,
    evaluator_dir,
    family_dir,
    newest_checkpoint,
    other_profiles,
    require_trained,
    same_profile,
    shown,
    warn_if_stale,
)
from genzoo.tasks.layout import PipelineBusy as PipelineBusy
from genzoo.tasks.layout import exclusive as exclusive
from genzoo.tasks.prepare import prepare, unseen_by_dvc
from genzoo.tasks.train import check_data, check_outputs, say_if_replacing_other_data, up_to_date
from genzoo.tasks.usefulness import families as usefulness_families
from genzoo.tasks.usefulness import measure_family, reference, train_subsets


def _profiles() -> tuple[str, ...]:
    """The profiles of the project's params.yaml (the working directory's, else the one beside
    this package), for the UI's pick list."""
    for path in (Path("params.yaml"), Path(__file__).resolve().parents[1] / "params.yaml"):
        try:
            names = tuple((yaml.safe_load(path.read_text()) or {}).get("profiles") or {})
        except (OSError, yaml.YAMLError, AttributeError):
            continue
        if names:
            return names
    return ("quick",)


def pick_list(values: tuple[str, ...]) -> Any:
    """A ``Literal`` of ``values`` that the UI's run form shows as a pick list (an enum in the
    schema, even of a single value, which pydantic would write as a ``const``)."""
    return Annotated[Literal[values], WithJsonSchema({"type": "string", "enum": list(values)})]


Family = pick_list(tuple(models.REGISTRY))
Profile = pick_list(_profiles())
PROGRESS_EVERY_S = 10.0  # how often a training's step, loss and ETA are logged


# ----------------------------------------------------------------------------- retries

# errnos worth another try (flaky disk or network share); ENOSPC, ENOENT, EACCES are not
TRANSIENT_ERRNOS = {errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ETIMEDOUT, errno.ESTALE, errno.EINTR}


def is_transient(exc: BaseException | None) -> bool:
    """Retry flaky I/O and lost connections; a real bug (ValueError, KeyError, ...) fails once.
    An error raised in a Ray task arrives as Ray's wrapper of it, which is an ``OSError`` too but
    without its ``errno``: the worker's own exception (``cause``) decides."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and cause is not exc and is_transient(cause):
        return True
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


# the running pipeline's stage spans (each stage's Prefect task appends its own; the task
# runner's threads share the flow's context, so the list is the flow run's own)
_SPANS: ContextVar[list[dict[str, Any]] | None] = ContextVar("genzoo_stage_spans", default=None)
_ORDER: ContextVar[cluster.InOrder | None] = ContextVar("genzoo_submission_order", default=None)


@contextmanager
def _submitting(names: list[str]) -> Iterator[cluster.InOrder]:
    """Inside the block, the stages' Ray tasks named in ``names`` are submitted in that order."""
    order = cluster.InOrder(names)
    token = _ORDER.set(order)
    try:
        yield order
    finally:
        _ORDER.reset(token)


def _turn(name: str) -> Any:
    """The Ray task ``name``'s turn in the fan-out's submission order (none outside one)."""
    order = _ORDER.get()
    return order.turn(name) if order is not None else nullcontext()


@contextmanager
def recording() -> Iterator[list[dict[str, Any]]]:
    """The stage spans of the pipeline run inside the block (``{"name", "start", "end"}``)."""
    spans: list[dict[str, Any]] = []
    token = _SPANS.set(spans)
    try:
        yield spans
    finally:
        _SPANS.reset(token)


def stage(name: str, task_run_name: str | None = None) -> Callable[[Callable[..., Any]], Any]:
    """A pipeline stage: a Prefect task (retried on transient errors, never cached) whose run
    logs one line as it starts and one as it ends, in the console and in the UI, and is
    recorded in the run's timeline."""

    def decorate(fn: Callable[..., Any]) -> Any:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            logger, t0, start = get_run_logger(), time.perf_counter(), time.time()
            logger.info("started")
            out = fn(*args, **kwargs)
            logger.info("done in %.1f s", time.perf_counter() - t0)
            spans = _SPANS.get()
            if spans is not None:
                spans.append({"name": this_task_run.name or name, "start": start, "end": time.time()})
            return out

        return task(name=name, task_run_name=task_run_name or name, **RETRY)(run)

    return decorate


# ----------------------------------------------------------------------------- one run at a time


def holding(runs_dir: str) -> contextlib.AbstractContextManager[None]:
    """The project's runs folder, held for this flow run (:func:`exclusive`), which its holder
    file names. A run started from a deployment (the UI's Run button, a schedule) waits for a
    folder another run holds, saying so in its log, as a second run of the same deployment waits
    for a slot (its concurrency limit); `genzoo run` at a terminal fails at once instead."""
    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx is not None else None
    label = f"Prefect flow run '{run.name}' ({run.id})" if run is not None else ""

    def waiting(who: str) -> None:
        get_run_logger().info(
            "%s: another genzoo run holds this folder (%s): this run waits for it to end (Cancel stops "
            "it)", runs_dir, who,
        )  # fmt: skip

    return exclusive(runs_dir, label, waiting if run is not None and run.deployment_id else None)


# ----------------------------------------------------------------------------- tasks


@stage("prepare")
def prepare_task(params: Params) -> dict[str, Any]:
    manifest = prepare(params)
    get_run_logger().info(
        "prepared %s: %s", manifest["source"], {s: v["n"] for s, v in manifest["splits"].items()}
    )
    return manifest


@stage("train", task_run_name="train-{family}")
def train_task(
    params: Params, family: str, parent_run_id: str | None = None, board: Any = None
) -> dict[str, Any]:
    """``family``'s training as a Ray task; with a progress ``board`` its step, loss and ETA
    are logged every ``PROGRESS_EVERY_S`` seconds while it trains."""

    logger = get_run_logger()
    run_id, c = None, None
    try:  # the family's MLflow run is closed however this ends, its submission included
        with _turn(f"train-{family}"):
            done = up_to_date(params, family, loads=True)
            if done is not None:
                logger.info("%s: up to date (same params, data and code), not retrained", family)
                return {**done, "cached": True}
            if step := newest_checkpoint(params, family):  # the progress lines start there
                logger.info("%s: resuming from its checkpoint at step %d", family, step)
            say_if_replacing_other_data(params, family)  # here: a Ray worker's log reaches no console
            uri = None
            if params.run.track:
                from genzoo.tasks.train import start_family_run

                c, uri = tracking.client(), tracking.tracking_uri()
                run_id = start_family_run(c, params, family, parent_run_id)
            tags = {"genzoo.prefect_flow_run": str(flow_run.id or "")}
            ref = cluster.submit_training(
                params, family, run_id=run_id, tracking_uri=uri, tags=tags, board=board
            )
        if board is None:
            metrics = cluster.get(ref, family)
        else:
            metrics = cluster.wait_reporting(ref, board, family, logger.info, PROGRESS_EVERY_S)
    except BaseException as e:
        if c is not None and run_id is not None:  # the worker may have died before it could end its run
            tracking.close_run(c, run_id, "KILLED" if stopped(e) else "FAILED")
        raise
    logger.info(
        "%s: %d steps in %.1f s on %s%s%s",
        family,
        metrics["steps"],
        metrics["train_seconds"],
        metrics["host"],
        f" (resumed from its checkpoint at step {metrics['resumed_from']})"
        if metrics.get("resumed_from")
        else "",
        f", test {metrics['test_bpd']:.3f} bits/dim ({metrics['bpd_estimator']})"
        if "test_bpd" in metrics
        else "",
    )
    return {**metrics, "cached": False}


@stage("record-in-dvc")
def record_in_dvc(
    families: list[str], after: list[str], detected: list[str] = (), useful: list[str] = (), say: bool = True
) -> list[str]:
    """``dvc commit`` the stages this run produced, so ``dvc status`` calls them up to date
    (``say``: name them; a run failing after them names them as it fails)."""
    stages = ["prepare", *(f"train@{f}" for f in families), *(f"detect@{f}" for f in detected)]
    stages += ["usefulness-reference", *(f"usefulness@{f}" for f in useful)] if useful else []
    for name in ["evaluate", *after]:
        for st in DVC_STAGES.get(name, []):
            stages += [st.format(family=f) for f in families] if "{family}" in st else [st]

    # `dvc commit --force` of them all, dvc.yaml and dvc.lock read and written once (genzoo.flows.record):
    # a stage DVC refuses (a params key missing from params.yaml) is left out, with every stage
    # depending on it; the others are recorded
    cmd = [sys.executable, "-m", "genzoo.flows.record", *stages]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for wait in (2, None):  # once more after DVC's lock, held a moment by another dvc command
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode == 0 or wait is None or "LockError" not in proc.stderr:
            break
        time.sleep(wait)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"dvc commit --force {' '.join(stages)} failed: {last}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    recorded, failed = result["recorded"], result["refused"]
    if failed and not recorded:
        raise RuntimeError(f"dvc commit --force {' '.join(stages)} failed: {_refusals(failed)}")
    if failed:
        get_run_logger().error(
            "outputs not recorded in dvc.lock: %s; once fixed, `dvc commit --force %s` records them; "
            "recorded: %s", _refusals(failed), " ".join(failed), ", ".join(recorded),
        )  # fmt: skip
    elif say:  # (a run of some families records theirs: the others' stages stay as dvc.lock had them)
        get_run_logger().info("recorded in dvc.lock (`dvc status`: up to date): %s", ", ".join(recorded))
    return recorded


def _refusals(failed: dict[str, str]) -> str:
    """The stages DVC refused, grouped by its reason (the first line of it): ``a, b (why); c
    (depends on a stage not recorded)``."""
    by_reason: dict[str, list[str]] = {}
    for name, why in failed.items():
        why = (why.strip().splitlines() or ["refused"])[0].rstrip(".")
        why = "depends on a stage not recorded" if why.startswith("depends on ") else why
        by_reason.setdefault(why, []).append(name)
    return "; ".join(f"{', '.join(names)} ({why})" for why, names in by_reason.items())


def _tracking_uri(params: Params) -> str | None:
    return tracking.tracking_uri() if params.run.track else None


REUSED = " (up to date, not computed again)"


def _unchanged(path: Path) -> Callable[[], str]:
    """Call before a stage that writes ``path`` (its record, written last); the callable returned,
    called after it, gives :data:`REUSED` where the stage found its figures up to date and left
    ``path`` as it was (so that a run with nothing to do says so of every stage), else ``""``."""

    def stamp() -> tuple[int, int] | None:  # (a rewrite replaces the file: another inode)
        try:
            st = path.stat()
            return st.st_ino, st.st_mtime_ns
        except OSError:
            return None

    before = stamp()
    return lambda: REUSED if before is not None and stamp() == before else ""


@stage("evaluator")
def evaluator_task(params: Params) -> dict[str, Any]:
    """The evaluator and the reference rows (cached), as a Ray task beside the trainings."""

    reused = _unchanged(evaluator_dir(params) / "metrics.json")
    with _turn("evaluator"):
        ref = cluster.submit(params, "evaluator", "evaluator", evaluator_stage, params)
    metrics = cluster.get(ref, "evaluator")
    get_run_logger().info("evaluator: test accuracy %.4f%s", metrics["test_accuracy"], reused())
    return metrics


@stage("evaluate", task_run_name="evaluate-{family}")
def evaluate_task(params: Params, family: str) -> dict[str, Any]:
    """``family``'s sample quality (cached), as a Ray task as soon as its training is done."""

    reused = _unchanged(evaluation_dir(params) / family / "quality.json")
    job = cluster.submit(params, family, f"evaluate-{family}", evaluate_family, params, family,
                         tracking_uri=_tracking_uri(params))  # fmt: skip
    q = cluster.get(job, family)
    get_run_logger().info(
        "%s: FD %.3f ± %.3f, precision %.3f, recall %.3f, %.0f images/s%s",
        family, q["fd"], q["ci95"]["fd"], q["precision"], q["recall"], q["images_per_second"], reused(),
    )  # fmt: skip
    keys = ("fd", "kid", "precision", "recall", "density", "coverage", "class_accuracy", "images_per_second")
    out = {k: q[k] for k in keys} | {"fd_ci95": q["ci95"]["fd"]}
    if family in params.detect.families:  # anomaly detection by likelihood, on the same worker slot
        reused = _unchanged(evaluation_dir(params) / family / "anomaly.json")
        job = cluster.submit(params, family, f"detect-{family}", run_benchmark, params, family)
        a = cluster.get(job, family)
        out["anomaly_auroc"] = {name: st["likelihood"]["auroc"] for name, st in a["sets"].items()}
        aurocs = ", ".join(f"{name} {v:.3f}" for name, v in out["anomaly_auroc"].items())
        get_run_logger().info("%s: anomaly AUROC by likelihood: %s%s", family, aurocs, reused())
    return out


@stage("usefulness-reference")
def usefulness_reference_task(params: Params) -> dict[str, Any]:
    """Real data alone and PCA + KDE on the same subsets (cached), as a Ray task."""

    reused = _unchanged(evaluation_dir(params) / "usefulness" / "reference.json")
    with _turn("usefulness-reference"):
        job = cluster.submit(params, "evaluator", "usefulness-reference", reference, params)
    ref = cluster.get(job, "evaluator")
    get_run_logger().info(
        "usefulness reference, real data alone: %s%s",
        "; ".join(f"{_share(p)}: {_accuracies(per)}" for p, per in ref["real"].items()),
        reused(),
    )
    return {"real": ref["real"], "pca_kde_tstr": ref["pca_kde"]["tstr"]}


def _share(p: str) -> str:
    """A real fraction ("0.1") as a log shows it ("10% real")."""
    return f"{float(p) * 100:g}% real"


def _accuracies(per: dict[str, dict[str, float]]) -> str:
    """Each classifier's mean test accuracy, in %."""
    return ", ".join(f"{c} {r['mean'] * 100:.1f}%" for c, r in per.items())


@stage("train-subsets", task_run_name="train-subsets-{family}")
def subsets_task(params: Params, family: str) -> dict[str, Any]:
    """``family`` trained on each real subset only (cached), as a Ray task beside the trainings."""

    u = params.usefulness
    made = [evaluation_dir(params) / family / "subsets" / f"p{p:g}-s{s}.json"
            for p in u.fractions if p < 1 for s in u.subset_seeds]  # fmt: skip
    reused = [_unchanged(path) for path in made]
    with _turn(f"train-subsets-{family}"):
        ref = cluster.submit(params, family, f"train-subsets-{family}", train_subsets, params, family)
    out = cluster.get(ref, family)
    if not made:
        get_run_logger().info(
            "%s: no subset to train (usefulness.fractions holds no fraction below 1)", family
        )
    else:
        n, kept = len(made), sum(bool(r()) for r in reused)
        get_run_logger().info(
            "%s: generators on %d real subset%s: %d trained%s", family, n, "" if n == 1 else "s",
            n - kept, REUSED if kept == n else f", {kept} up to date" if kept else "",
        )  # fmt: skip
    return out


@stage("usefulness", task_run_name="usefulness-{family}")
def usefulness_task(params: Params, family: str) -> dict[str, Any]:
    """Train-on-synthetic accuracy and the augmentation lift of ``family`` (cached)."""

    reused = _unchanged(evaluation_dir(params) / family / "usefulness.json")
    job = cluster.submit(params, family, f"usefulness-{family}", measure_family, params, family,
                         tracking_uri=_tracking_uri(params))  # fmt: skip
    u = cluster.get(job, family)
    lifts = {
        p: {c: round(v["lift"]["mean"], 4) for c, v in per.items()} for p, per in u["augmentation"].items()
    }
    gains = "; ".join(
        f"at {_share(p)} ({_over(per)}): "
        + ", ".join(
            f"{c} {v['lift']['mean'] * 100:+.1f} ± {v['lift']['ci95'] * 100:.1f}" for c, v in per.items()
        )
        for p, per in u["augmentation"].items()
    )
    logger = get_run_logger()
    logger.info(
        "%s: trained on synthetic alone: %s; added to the real images with the dataset's recipe (%s), "
        "accuracy change in points, mean ± 95%% interval: %s%s",
        family, _accuracies(u["tstr"]), u.get("recipe", params.augment.recipe), gains, reused(),
    )  # fmt: skip
    if said := harmful(family, lift_means(u), shown(evaluation_dir(params) / family / "usefulness.json")):
        logger.warning("%s", said)
    return {"tstr": {c: v["mean"] for c, v in u["tstr"].items()}, "lift": lifts}


def _over(per: dict[str, Any]) -> str:
    """What one real share's intervals are taken over: real subsets, or one subset's classifier
    seeds (a share of 100% has one subset whatever the others have)."""
    lift = next(iter(per.values()))["lift"]
    if lift.get("over") == "subsets":
        return f"over {len(lift['per_subset'])} real subsets"
    n = len(lift.get("per_seed", ()))
    return f"over {n} classifier seed{'' if n == 1 else 's'}"


def _augment(params: Params, req: Any = None) -> Path:
    from genzoo.tasks.augment import generate, left_out_by_best

    path = generate(params, req)  # (its warnings are genzoo.augment's, in this log too, and its card's)
    manifest = json.loads((path / "manifest.json").read_text())
    logger = get_run_logger()
    logger.info("%s", dataset_line(path, manifest))
    if note := left_out_by_best(manifest):
        logger.info("%s", note)
    return path


def dataset_line(path: Path, manifest: dict[str, Any]) -> str:
    """The run's line of a dataset written: its size, families, images per class (and what
    capped them), the draws its filters dropped."""
    from genzoo.models.base import DataSpec, by_pixels

    counts = manifest["counts_per_class"]
    per_class = f"{min(counts)}" if min(counts) == max(counts) else f"{min(counts)}-{max(counts)}"
    recipe, capped = manifest.get("recipe") or {}, ""
    if (pixels := recipe.get("sample_pixels")) and recipe.get("per_class"):
        spec = DataSpec(*manifest["shape"], manifest["levels"], manifest["num_classes"])
        if (each := by_pixels(recipe["per_class"], pixels, spec, 10)) < recipe["per_class"]:
            # the quick profile's cap on large images (the card's recipe says per_class), before
            # any class_ratios, of each family's draw
            capped = (
                f"; augment.sample_pixels={pixels} caps each family's draw at {each} of the "
                f"{recipe['per_class']} asked per class (-o augment.sample_pixels=null lifts it)"
            )
    dropped = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in manifest["filters"]["rejected"].items())
    made = f"{manifest['n']} images from {', '.join(manifest['families'])}"
    return f"{path}: {made} ({per_class} per class{capped}); draws dropped: {dropped or 'none'}"


@stage("augment")
def augment_task(params: Params, req: Any = None) -> str:
    """A labelled synthetic dataset (default: the params' ``augment`` block)."""
    return str(_augment(params, req))


@stage("augment-dataset")
def augment_stage(params: Params, trained: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's synthetic dataset: params.yaml's ``augment`` block."""
    path = _augment(params)
    manifest = json.loads((path / "manifest.json").read_text())
    return {"path": str(path), "n": manifest["n"], "families": list(manifest["families"]),
            "sha256": manifest["sha256"]}  # fmt: skip


@stage("report")
def report_task(params: Params, trained: dict[str, Any]) -> dict[str, Any]:
    """The HTML report of what was trained and evaluated (runs/report/index.html)."""
    from genzoo.tasks.report import build_report

    summary = build_report(params)
    t = summary["targets"]
    get_run_logger().info(
        "report: %s; closest to real data by the evaluator's Fréchet distance: %s, %.2fx the "
        "real-vs-real floor",
        report_path(params),
        t["best_family"],
        t["best_ratio_to_floor"],
    )
    return summary


def report_path(params: Params) -> Path:
    return Path(params.run.runs_dir) / "report" / "index.html"


# Evaluation runs per family as soon as the family is trained (the evaluator beside the
# trainings). The stages after that, in order, are Prefect tasks called as
# ``stage(params, trained)`` with ``trained`` = {family: metrics}; what each returns lands in
# the flow's result under its name. The report first: it needs nothing of the dataset, so a
# dataset that cannot be made (its filters reject too many draws) fails the run with the report
# of everything trained and evaluated already written.
AFTER_TRAINING: list[Callable[..., Any]] = [report_task, augment_stage]
# the DVC stages each produces, per family (recorded by `dvc commit` after a run)
DVC_STAGES = {
    "evaluate": ["evaluator", "evaluate@{family}"],
    "augment-dataset": ["augment"],
    "report": ["report"],
}


def _dvc_matches(params: Params, params_file: str, overrides: list[str], profile: str | None) -> bool:
    """Whether this run's outputs are what ``dvc repro`` would make (same params.yaml, default
    paths): only then are they recorded in dvc.lock."""
    return _unrecorded_because(params, params_file, overrides, profile) is None


def _unrecorded_because(
    params: Params, params_file: str, overrides: list[str], profile: str | None
) -> str | None:
    """Why this run's outputs are not what ``dvc repro`` here would make (so not recorded in
    dvc.lock); None where they are."""
    if not Path("dvc.yaml").exists() or not Path(".dvc").is_dir():
        return f"{Path.cwd()} is no DVC project (no dvc.yaml or no .dvc/ here)"
    if overrides or profile:
        return "this run's params are params.yaml's as -o or --profile change them"
    if Path(params_file).resolve() != Path("params.yaml").resolve():
        return f"this run reads {params_file}, not ./params.yaml"
    if params.run.runs_dir != "runs" or params.data.prepared_dir != "data/prepared":
        return "run.runs_dir or data.prepared_dir is not dvc.yaml's (runs, data/prepared)"
    return None


LOOP = ("key", "item")  # dvc.yaml's foreach variables


def _dvc_yaml_reads(text: str) -> list[str]:
    """The params keys dvc.yaml reads itself by ``${...}`` (a foreach's list, a path): without one
    DVC cannot read dvc.yaml at all."""
    return [k for k in re.findall(r"\$\{\s*([A-Za-z_][\w.]*)\s*\}", text) if k.split(".")[0] not in LOOP]


def missing_key_warnings(params_file: str | Path, missing: list[str]) -> list[str]:
    """What a run to be recorded says of ``missing`` (:func:`dvc_params_missing`): a key the stages
    list leaves them (and those after them) unrecorded; a key dvc.yaml reads itself, the whole run."""
    reads = _dvc_yaml_reads(Path("dvc.yaml").read_text())
    itself = [m for m in missing if m.split(" ")[0] in reads]
    listed = [m for m in missing if m not in itself]
    out = []
    if listed:
        out.append(f"{params_file} lacks {', '.join(listed)}, which dvc.yaml's stages list: genzoo runs on "
                   "the default, but DVC will not record the stages that list it in dvc.lock, nor those "
                   "after them; add it")  # fmt: skip
    if itself:
        out.append(f"{params_file} lacks {', '.join(itself)}, which dvc.yaml itself reads (${{...}}): genzoo "
                   "runs on the default, but DVC cannot read dvc.yaml without it and will record nothing of "
                   "this run; add it")  # fmt: skip
    return out


def dvc_params_missing(params: Params, params_file: str | Path = "params.yaml") -> list[str]:
    """The keys ``dvc.yaml``'s stages list (by name: ``models.${key}`` and the like are there by
    construction) or read by ``${...}`` that ``params_file`` lacks, each with the default genzoo
    takes: DVC refuses to record, or run, a stage with a listed key missing (and to read dvc.yaml
    without one it reads), where genzoo runs on its default."""
    text = Path("dvc.yaml").read_text()
    stages = (yaml.safe_load(text) or {}).get("stages") or {}
    raw = yaml.safe_load(Path(params_file).read_text()) or {}
    values = params.model_dump(mode="json")
    listed = [key for body in stages.values() for key in (body.get("do", body) or {}).get("params") or []]
    read = _dvc_yaml_reads(text)
    missing = {}
    for key in [*listed, *read]:
        if not isinstance(key, str) or "${" in key or key in missing:
            continue
        have, default = raw, values
        for part in key.split("."):
            have = have.get(part, KeyError) if isinstance(have, dict) else KeyError
            default = default.get(part) if isinstance(default, dict) else None
        if have is KeyError:
            missing[key] = default
    return [f"{k} (default {json.dumps(v)})" for k, v in sorted(missing.items())]


def dvc_remote_preflight(timeout_s: float = 10.0) -> None:
    """When the project has a default DVC remote, fail before any training when it does not
    answer, naming its URL (``Unreachable``): a local remote whose folder is missing along with
    its parent (an unmounted drive: DVC would create it on the root disk) or is not writable;
    any other remote whose ``exists`` fails or takes over ``timeout_s``. A local remote under
    the user's home may be missing with its parents (the default ``~/.cache/genzoo/dvc-storage``
    on a fresh machine): DVC makes it on the first push."""
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as Timeout

    from dvc.repo import Repo

    with Repo(".") as repo:
        name = repo.config["core"].get("remote")
        if not name:
            return
        url = repo.config["remote"][name]["url"]
        try:
            remote = repo.cloud.get_remote(name)
        except Exception as e:  # its plugin not installed (s3://: dvc-s3), a bad config: said in one line
            raise Unreachable(
                f"DVC remote '{name}' {url}: {e}".rstrip(".")
                + (
                    "; pip install 'dvc[s3]' (its plugin)"
                    if url.startswith("s3://") and "dvc-s3" in str(e)
                    else ""
                )
                + " or run with --no-dvc"
            ) from None
        fs, path = remote.fs, remote.path
    why = None
    if fs.protocol == "local":
        folder = Path(path)
        where = folder if folder.exists() else folder.parent
        home = Path.home().resolve()
        if not where.is_dir() and folder.resolve().is_relative_to(home):
            where = next(p for p in folder.parents if p.exists())  # home itself, at the least
        if not where.is_dir():
            why = f"{folder.parent} does not exist"
        elif not os.access(where, os.W_OK | os.X_OK):
            why = f"{where} is not writable"
    else:
        pool = ThreadPoolExecutor(1)
        try:
            pool.submit(fs.exists, path).result(timeout=timeout_s)
        except Timeout:
            why = f"no answer in {timeout_s:g} s"
        except Exception as e:  # any failure of the remote's file system: say what it was
            why = f"{type(e).__name__}: {e}"
        finally:
            pool.shutdown(wait=False)
    if why:
        raise Unreachable(
            f"DVC remote '{name}' {url} is unreachable ({why}); fix it (dvc remote modify {name} url ...) "
            "or run with --no-dvc"
        )


def _longest_first(params: Params, families: list[str], first: list[str] = ()) -> list[str]:
    """Families in ``first`` (whose usefulness measurement waits on their training), then the
    rest; each group longest expected chain first: the last measured training time, else the
    steps, ties going to the family whose evaluation draws each image in most network passes
    (a DDPM's DDIM steps, twice when guided; one for the others): the long chains start early
    and fewer workers idle at the end (a quick run trains every family 150 steps, and DDPM's
    evaluation then ran alone at the end)."""

    def cost(f: str) -> float:
        try:
            return json.loads((Path(params.run.runs_dir) / f / "metrics.json").read_text())["train_seconds"]
        except (OSError, ValueError, KeyError):
            return float(params.train_config(f).steps)

    def passes(f: str) -> int:
        net = params.net_config(f)
        return getattr(net, "sample_steps", 1) * (2 if getattr(net, "guidance", 1.0) != 1.0 else 1)

    return sorted(families, key=lambda f: (f in first, cost(f), passes(f)), reverse=True)


# ----------------------------------------------------------------------------- the flow's parts


def chosen_families(params: Params, params_file: str, families: list[str] | None) -> list[str]:
    """The families to run (default: every family in params), each one known to params, each once
    (a family picked twice in the UI's form trained twice at once into the same folder)."""
    chosen = list(dict.fromkeys(families or params.families))
    unknown = [f for f in chosen if f not in params.models]
    if unknown:
        raise ValueError(
            f"families: {', '.join(unknown)} not in {params_file} (has {', '.join(params.families)}"
            f"{did_you_mean(unknown, params.families)})"
        )
    return chosen


def stopped(e: BaseException) -> bool:
    """Whether ``e`` ends a run a user stopped (KILLED in MLflow, as it marks such runs) rather
    than one that failed: Ctrl-C, a cancel from the Prefect UI (the runner's SIGTERM reaches the
    flow as TerminationSignal), or a Ray task cancelled by either (Ray may be gone by then)."""
    return isinstance(e, KeyboardInterrupt | TerminationSignal) or cluster.STOP.is_set()


@contextmanager
def parent_run(params: Params, families: list[str]) -> Iterator[str | None]:
    """The pipeline's MLflow run (the families' runs nest under it), or None untracked: its
    id while the pipeline runs, FINISHED when it ends, KILLED when a user stops it (Ctrl-C, a
    cancel in the Prefect UI), FAILED when it raises anything else. Runs a killed
    pipeline left RUNNING for the same folder are marked KILLED first (hold the run lock)."""
    if not params.run.track:
        yield None
        return
    c = tracking.client()
    experiment = tracking.prepare_store()
    runs_dir = params.run.runs_dir
    for rid in tracking.close_stale(c, runs_dir):
        get_run_logger().warning("MLflow run %s was left RUNNING by a killed pipeline: marked KILLED", rid)
    tags = {
        **tracking.folder_tags(runs_dir),
        "genzoo.families": ",".join(families),
        **tracking.git_tags(),
        "genzoo.prefect_flow_run": str(flow_run.id or ""),
        # what made it (its profile, params file and -o's): the runs list's "pipeline" rows told apart,
        # as the run's description in MLflow's UI too
        "genzoo.command": params.command("run"),
        "mlflow.note.content": f"`{params.command('run')}`, families {', '.join(families)}",
    }
    run_id = tracking.start_run(c, experiment, "pipeline", tags=tags).info.run_id
    try:
        yield run_id
    except BaseException as e:
        c.set_terminated(run_id, "KILLED" if stopped(e) else "FAILED")
        raise
    c.set_terminated(run_id, "FINISHED")


def fan_out(params: Params, families: list[str], parent: str | None) -> dict[str, dict[str, Any]]:
    """Every family trained on Ray (longest first; the evaluator and the subset generators
    beside them), each evaluated and measured for usefulness as soon as it is trained.
    Returns ``{"trained": ..., "evaluate": ..., "usefulness": ...}``, each by family, the
    families that ran out of memory (``failed``) and the order the tasks reached Ray
    (``submitted``)."""
    useful = [f for f in usefulness_families(params) if f in families]
    order = _longest_first(params, families, first=useful)
    # what needs no model starts first, as Ray takes tasks in submission order: the generators
    # trained on real subsets and the usefulness reference head the longest chain (-> usefulness
    # of each family), so they do not run alone at the end. The Prefect tasks reach Ray from
    # their own threads, so each waits its turn in this order.
    ahead = ["evaluator", *(f"train-subsets-{f}" for f in useful)]
    ahead += ["usefulness-reference"] if useful else []
    with cluster.progress_board() as board, _submitting([*ahead, *(f"train-{f}" for f in order)]) as turns:
        prepare_task(params)
        for f in families:  # what training asks of the data, before any of it starts (exclude_classes)
            check_data(params, f, read_splits=False)  # (each training reads its splits whole itself)
        evaluator = evaluator_task.submit(params)
        subsets = {f: subsets_task.submit(params, f) for f in useful}
        reference_ = usefulness_reference_task.submit(params) if useful else None
        trainings = {f: train_task.submit(params, f, parent, board) for f in order}
        evaluations = {f: evaluate_task.submit(params, f, wait_for=[trainings[f], evaluator]) for f in order}
        usefulness = {
            f: usefulness_task.submit(params, f, wait_for=[trainings[f], subsets[f], reference_])
            for f in useful
        }
        failed: dict[str, str] = {}
        trained = each_family(trainings, failed)
        evaluator.result()
        evaluated, measured = each_family(evaluations, failed), each_family(usefulness, failed)
        return {  # a family that failed at any step: none of its results (nothing of it promoted)
            "trained": {f: m for f, m in trained.items() if f not in failed},
            "evaluate": {f: m for f, m in evaluated.items() if f not in failed},
            "usefulness": {f: m for f, m in measured.items() if f not in failed},
            "failed": failed,
            "submitted": turns.passed,  # the order the tasks above reached Ray
        }


def each_family(futures: dict[str, Any], failed: dict[str, str]) -> dict[str, Any]:
    """Each family's result of one step (training, evaluation, usefulness), but those of the
    families in ``failed``; a family whose task ran out of memory joins ``failed`` (its message)
    and the others go on: at its evaluation too (its ``memory_mb`` holds there as well), where it
    stopped the whole fan-out and the others' finished work went unrecorded."""
    out = {}
    for f, fut in futures.items():
        if f in failed:  # waited for, not read: a task of it still running would write after the run
            with contextlib.suppress(Exception):
                fut.wait()
            continue
        try:
            out[f] = fut.result()
        except cluster.OutOfMemory as e:  # that family alone: the others go on and are recorded
            failed[f] = str(getattr(e, "cause", None) or e)  # Ray's wrapper adds the worker's traceback
            get_run_logger().error("%s", failed[f])
    return out


def record(
    params: Params, families: list[str], useful: list[str], after: list[str], say: bool = True
) -> list[str]:
    """The stages this run made (``after``: the stages after training that finished),
    ``dvc commit``-ed; a failed record is reported (``dvc status`` will call the stages stale),
    not a failed pipeline: the models are made."""
    detected = [f for f in families if f in params.detect.families]
    state = record_in_dvc(families, after, detected, useful, say, return_state=True)
    if state.is_failed():
        get_run_logger().error(
            "outputs not recorded in dvc.lock (once what DVC says is fixed, the same `dvc commit --force` "
            "records them): %s",
            state.message,
        )
        return []
    return state.result()


Span = dict[str, Any]  # {"name", "start", "end"} (epoch seconds), and "worker" for a Ray task


def write_timeline(params: Params, stages: list[Span], tasks: list[Span], cpus: float, start: float,
                   end: float, submitted: list[str] = ()) -> Path:  # fmt: skip
    """``runs/timeline.json``: what ran where and when in this pipeline run, in the Chrome
    trace format (open it in https://ui.perfetto.dev or chrome://tracing): each Ray task on its
    worker, each stage's Prefect task on the driver, and ``otherData`` with the run's start,
    end, CPUs and the order the fan-out's tasks reached Ray (``bench/profile_run.py`` reads it)."""
    from genzoo.models.base import atomic_write_text

    def event(name: str, pid: str, tid: str, a: float, b: float) -> dict[str, Any]:
        return {"name": name, "cat": pid, "ph": "X", "pid": pid, "tid": tid,
                "ts": round((a - start) * 1e6), "dur": round((b - a) * 1e6)}  # fmt: skip

    events = [event(t["name"], "ray", t["worker"], t["start"], t["end"]) for t in tasks]
    events += [event(st["name"], "driver", st["name"], st["start"], st["end"]) for st in stages]
    trace = {
        "traceEvents": sorted(events, key=lambda e: e["ts"]),
        "displayTimeUnit": "ms",
        "otherData": {
            "start": start,
            "end": end,
            "cpus": cpus,
            "families": list(params.families),
            "submitted": list(submitted),
        },
    }
    path = Path(params.run.runs_dir) / "timeline.json"
    atomic_write_text(path, json.dumps(trace, indent=1))
    return path


def summarize_in_mlflow(params: Params, parent: str, result: dict[str, Any]) -> str:
    """The parent run's per-family figures, which families were up to date, and what the run
    made of them all: its report (``report/``) and its dataset's card and manifest
    (``dataset/``), where those stages ran; its id. (Each family's own run keeps its figures;
    a pipeline's report is its own, not rewritten into earlier pipelines' family runs.)"""
    c = tracking.client()
    tracking.log_summary(c, parent, result["figures"])
    tracking.set_tags(
        c, parent, {f"genzoo.cached.{f}": str(m["cached"]) for f, m in result["trained"].items()}
    )
    made = []  # (folder in the run, file) of the stages that ran
    if "report" in result:
        made += [
            ("report", report_path(params).with_name(n))
            for n in ("index.html", "summary.json", "families.csv")
        ]
    if "augment-dataset" in result:
        made += [
            ("dataset", Path(result["augment-dataset"]["path"]) / n) for n in ("README.md", "manifest.json")
        ]
    for where, f in made:
        if f.is_file():
            tracking.retry(
                lambda w=where, f=str(f): c.log_artifact(parent, f, artifact_path=w), "log_artifact"
            )
    return parent


FIGURES = ("steps", "train_seconds", "test_bpd", "fd", "fd_ci95", "precision", "recall", "class_accuracy")


def figures(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per family: steps, train seconds, test bits/dim (and its estimator) where the family
    has a likelihood, FD with its 95% interval, precision, recall and class accuracy (the share
    of its class-conditional samples the evaluator gives the class they were drawn for)."""
    rows = {}
    for f, m in result["trained"].items():
        row = {**m, **result["evaluate"].get(f, {})}
        rows[f] = {k: row[k] for k in FIGURES if k in row}
        if "bpd_estimator" in m:
            rows[f]["bpd_estimator"] = m["bpd_estimator"]
    return rows


class _RunLog(APILogHandler):
    """Sends genzoo's own log lines (``genzoo.*``: a cluster joined, a stale model drawn from)
    to the flow run's log, the Prefect UI's, beside Prefect's; a line logged outside any run
    context (a thread of its own) is passed over, not warned about."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        if isinstance(sys.exc_info()[1], MissingContextError):
            return
        super().handleError(record)


@contextmanager
def genzoo_lines_in_run_log() -> Iterator[None]:
    """While a flow runs, the ``genzoo.*`` lines the console shows (warnings, and where the
    families run) go to its Prefect log too: a served deployment's reached only the `genzoo serve`
    console."""
    logger, cluster_logger = logging.getLogger("genzoo"), logging.getLogger("genzoo.cluster")
    if any(isinstance(h, APILogHandler) for h in logger.handlers):  # a flow called by another, or
        yield  # Prefect's PREFECT_LOGGING_EXTRA_LOGGERS=genzoo: sent once
        return
    handler, levels = _RunLog(level=logging.INFO), (logger.level, cluster_logger.level)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:  # a deployment's process: `genzoo run`'s policy (cli.cmd_run):
        logger.setLevel(logging.WARNING)  # the stages' own lines are the run logger's, once
        if cluster_logger.level == logging.NOTSET:
            cluster_logger.setLevel(logging.INFO)  # where the families run
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(levels[0])
        cluster_logger.setLevel(levels[1])


def refusing(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A deployment's flow run (the UI's Run button) stopped by input a user can fix (bad
    params, a model not trained, a path outside the project: :func:`user_error`) ends Failed with
    that one line as its message and in its log, where Prefect logged two tracebacks of it; run
    in-process (`genzoo run`, `.fn`) the error goes on to the caller, which words it itself.
    genzoo's own log lines go to the run's log (:func:`genzoo_lines_in_run_log`)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            with genzoo_lines_in_run_log():
                return fn(*args, **kwargs)
        except Exception as e:
            ctx = FlowRunContext.get()
            line = user_error(e)
            served = ctx is not None and ctx.flow_run is not None and ctx.flow_run.deployment_id is not None
            if line is None or not served or stopped(e):  # a cancelled run's own errors stay its own
                raise
            from prefect.states import Failed

            get_run_logger().error("%s", line)
            return Failed(message=line)

    return run


@flow(name="genzoo-pipeline", log_prints=True)
@refusing
def pipeline(
    params_file: str = "params.yaml",
    families: list[Family] | None = None,
    overrides: list[str] | None = None,
    profile: Profile | None = None,
    ray_address: str | None = None,
    record_dvc: bool = True,
) -> dict[str, Any]:
    """Prepare the data, train every family in parallel on Ray, run the stages after training.

    Args:
        params_file: The params file, relative to the project.
        families: The families to run (none given, or an empty list: every family in the params file).
        overrides: Dotted key=value overrides, e.g. models.vae.train.steps=300.
        profile: A named set of overrides from the params file's profiles, e.g. quick.
        ray_address: The Ray cluster to join (default: ray.address, RAY_ADDRESS, else a local Ray).
        record_dvc: Record the outputs in dvc.lock when the params file was used as is.
    """
    overrides = list(overrides or [])
    confine(params_file=params_file)  # before it is read: its errors quote what it holds
    # fails here, before any compute; an -o a family's own key shadows: said of the chosen families
    params = load_params(params_file, overrides, profile, families=list(families) if families else None)
    confine(params, params_file=params_file)  # served deployments stay inside the project
    check_outputs(params)  # before Ray, Prefect's tasks or MLflow's runs start
    check_output_dir(params.data.prepared_dir, "data.prepared_dir")  # (as `genzoo run` checks them)
    check_outside_source(params)
    check_target(params.augment.out_dir, params.augment.name)  # the last stage's folder: an edited card
    check_formats(params.augment.formats)  # its formats' extras (hf: datasets), before any training
    chosen = chosen_families(params, params_file, families)
    if params.run.track:
        tracking.preflight()
    if record_dvc and _dvc_matches(params, params_file, overrides, profile):
        dvc_remote_preflight()
        if warning := unseen_by_dvc(params.data):  # this run's prepare goes into dvc.lock
            get_run_logger().warning("%s", warning)
        for warning in missing_key_warnings(params_file, dvc_params_missing(params, params_file)):
            get_run_logger().warning("%s", warning)  # said before any compute
    t0, started = time.perf_counter(), time.time()
    params_abs = cluster.absolute(params)
    with holding(params.run.runs_dir), recording() as stages, ExitStack() as tracked:
        with cluster.connected(params, ray_address) as ray:
            cluster.check_fits(params, [*chosen, "evaluator"])
            # once the cluster is joined: a refused join or a family too big leaves no empty FAILED run
            parent = tracked.enter_context(parent_run(params_abs, chosen))
            result: dict[str, Any] = fan_out(params_abs, chosen, parent)
            on_ray, cpus = cluster.task_spans(started), ray.cluster_resources().get("CPU", 0)
        done, stopped = [], None
        for after in AFTER_TRAINING:
            try:
                result[after.name] = after(params_abs, result["trained"])
            except Exception as e:  # the stages done before it are recorded first, then the run fails
                stopped = (after.name, e)
                break
            done.append(after.name)
        result["figures"] = figures(result)
        if record_dvc and _dvc_matches(params, params_file, overrides, profile):
            trained, useful = list(result["trained"]), list(result["usefulness"])
            result["dvc_committed"] = record(params, trained, useful, done, say=stopped is None)
        elif record_dvc:
            why = _unrecorded_because(params, params_file, overrides, profile)
            get_run_logger().info("not recorded in dvc.lock: %s", why)
        if parent is not None:
            result["mlflow_run_id"] = summarize_in_mlflow(params_abs, parent, result)
            if (uri := tracking.tracking_uri()).startswith(("http://", "https://")):  # a server's page
                exp = tracking.client(uri).get_run(parent).info.experiment_id
                page = urlsplit(uri)._replace(netloc=urlsplit(uri).netloc.rpartition("@")[2])  # no user:pw
                result["mlflow_url"] = f"{urlunsplit(page).rstrip('/')}/#/experiments/{exp}/runs/{parent}"
        result["timeline"] = str(write_timeline(params, stages, on_ray, cpus, started, time.time(),
                                                    result["submitted"]))  # fmt: skip
        if stopped is not None:
            if result["failed"]:  # often why the stage failed: said, not hidden behind its error
                get_run_logger().error(
                    "families that failed before: %s", "; ".join(result["failed"].values())
                )
            if result.get("dvc_committed"):
                get_run_logger().info("recorded in dvc.lock before %s failed: %s", stopped[0],
                                      ", ".join(result["dvc_committed"]))  # fmt: skip
            raise stopped[1]
        if result["failed"]:  # after the others are recorded; nothing of these was promoted
            raise cluster.OutOfMemory("; ".join(result["failed"].values()))
    result["pipeline_seconds"] = round(time.perf_counter() - t0, 1)
    if "report" in result:
        result["report_path"] = str(report_path(params))
    retrained = [f for f, m in result["trained"].items() if not m["cached"]]
    current = [f for f in result["trained"] if f not in retrained]
    said = [
        f"trained {', '.join(retrained)}" if retrained else "",
        f"up to date: {', '.join(current)}" if current else "",
    ]
    get_run_logger().info(
        "pipeline done in %.1f s: %s",
        result["pipeline_seconds"],
        "; ".join(filter(None, said)) or "no family",
    )
    if FlowRunContext.get() is not None:  # the table `genzoo run` prints, in the run's Artifacts tab
        from prefect.artifacts import create_markdown_artifact

        try:
            create_markdown_artifact(
                figures_markdown(result, params_abs.run.runs_dir),
                key="pipeline-figures",
                description="each family's figures, as genzoo run prints, and its samples",
            )
        except Exception as e:  # the run's work is done and recorded: a lost table is no failure
            get_run_logger().warning("the figures' artifact was not created (%s: %s)", type(e).__name__, e)
    return result


FIGURE_COLUMNS = ("family", "steps", "train s", "FD ± 95%", "precision", "recall", "class acc", "bits/dim")


def figure_cells(result: dict[str, Any]) -> dict[str, list[str]]:
    """Each family's figures from a pipeline run, formatted for :data:`FIGURE_COLUMNS` after the
    family's name (``-`` where a family has none): the console's table and the run's artifact."""
    out = {}
    for f, row in result["figures"].items():
        out[f] = [
            str(row.get("steps", "-")),
            f"{row['train_seconds']:.1f}" if "train_seconds" in row else "-",
            f"{row['fd']:.4f} ± {row['fd_ci95']:.4f}" if "fd" in row else "-",
            f"{row['precision']:.3f}" if "precision" in row else "-",
            f"{row['recall']:.3f}" if "recall" in row else "-",
            f"{100 * row['class_accuracy']:.1f}%" if "class_accuracy" in row else "-",
            f"{row['test_bpd']:.3f} ({row['bpd_estimator']})" if "test_bpd" in row else "-",
        ]
    return out


def figures_markdown(result: dict[str, Any], runs_dir: str | Path | None = None) -> str:
    """A pipeline run's figures as a Markdown table (the UI's Artifacts tab), as `genzoo run`
    prints them, then where the report and the MLflow run are, then (``runs_dir``) each family's
    sample grid, one row per class."""
    rows = ["| " + " | ".join(FIGURE_COLUMNS) + " |", "|" + "---|" * len(FIGURE_COLUMNS)]
    for f, cells in figure_cells(result).items():
        name = f + (" (up to date)" if result["trained"][f].get("cached") else "")
        rows.append("| " + " | ".join([name, *cells]) + " |")
    grids, room = [], EMBED_TOTAL_BYTES
    for f in result["trained"] if runs_dir is not None else []:
        if (png := Path(runs_dir) / f / "samples.png").is_file():
            shown = image_markdown(png, f"{f}'s samples", min(room, EMBED_MAX_BYTES))
            room -= len(shown) * 3 // 4  # (base64: 4 characters a 3 bytes)
            grids += [f"**{f}** (`{png}`)", "", shown, ""]
    return (
        "\n".join([*rows, "", *(f"{k}: `{v}`  " for k, v in run_places(result)), "", *grids]).rstrip() + "\n"
    )


EMBED_MAX_BYTES = 2_000_000  # a larger image is named in an artifact, not embedded in it
EMBED_TOTAL_BYTES = 6_000_000  # the images one artifact embeds, at most (the rest are named)


def image_markdown(png: Path, alt: str, most: int = EMBED_MAX_BYTES) -> str:
    """``png`` inside a Markdown artifact, as a data URI: the Prefect UI shows it though its
    browser cannot reach the file (checked in Chromium on Prefect 3.9's UI); a file over
    ``most`` bytes is named, not embedded."""
    data = png.read_bytes()
    if len(data) > most:
        return f"({len(data) / 1e6:.1f} MB: too large to show here; open `{png}`)"
    return f"![{alt}](data:image/png;base64,{base64.b64encode(data).decode()})"


def run_places(result: dict[str, Any]) -> list[tuple[str, str]]:
    """Where a pipeline run's report and MLflow run are, and its time, as (label, value)."""
    out = [("report", result["report_path"])] if "report_path" in result else []
    if "mlflow_run_id" in result:
        out.append(("MLflow run", result.get("mlflow_url") or result["mlflow_run_id"]))
    return [*out, ("pipeline", f"{result['pipeline_seconds']:.1f} s")]


@flow(name="genzoo-train-family", log_prints=True)
@refusing
def train_one(
    family: Family,
    params_file: str = "params.yaml",
    overrides: list[str] | None = None,
    profile: Profile | None = None,
    ray_address: str | None = None,
) -> dict[str, Any]:
    """One family through the whole pipeline on Ray, as ``genzoo run --families FAMILY``:
    prepare, train (skipped when up to date), the evaluator and its evaluation, the report and
    the synthetic dataset from the families trained, recorded in DVC.

    Args:
        family: The family to train.
        params_file: The params file, relative to the project.
        overrides: Dotted key=value overrides, e.g. models.vae.train.steps=300.
        profile: A named set of overrides from the params file's profiles, e.g. quick.
        ray_address: The Ray cluster to join (default: ray.address, RAY_ADDRESS, else a local Ray).
    """
    # the pipeline's body in this flow run, not a subflow: its stages, logs and progress are on
    # the page the UI opens for this run (as a subflow they were one click away, under a random name)
    return pipeline.fn(params_file=params_file, families=[family], overrides=overrides, profile=profile,
                       ray_address=ray_address)  # fmt: skip


@flow(name="genzoo-sample", log_prints=True)
@refusing
def sample(
    family: Family | None = None,
    model: str | None = None,
    n: Annotated[int, Field(gt=0)] = 64,
    label: str | None = None,
    out: str | None = None,
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0,
    profile: Profile | None = None,
    params_file: str = "params.yaml",
) -> dict[str, Any]:
    """Draw labelled images from a trained model into ``<out>.npz`` (images, labels) + ``.png``.

    Args:
        family: Use the model trained in runs/<family>/.
        model: Or a registered version models:/<family>/<version> (/latest, @alias), or a model.json.
        n: The number of images.
        label: A class name or index (default: drawn from the label prior).
        out: The output path without suffix (default: samples/<family>).
        seed: The sampling seed: same seed, same images.
        profile: The profile the family was trained with, e.g. quick (else the log calls it stale).
        params_file: The params file, relative to the project.
    """
    from genzoo.tasks.sample import check_request, class_names, load_model, resolve_class, sample_to_file

    if bool(family) == bool(model):  # both: one of them would be silently ignored
        raise ValueError("give family (a model in runs/<family>/) or model (models:/<family>/<version>), one")
    confine(params_file=params_file)  # before it is read: its errors quote what it holds
    params = load_params(params_file, None, profile)
    confine(params, params_file=params_file, out=out,
            model=model if model and not model.startswith("models:/") else None)  # fmt: skip
    if family:  # its training command with this run's profile
        require_trained(params, family)
    net = load_model(model or family, params.run.runs_dir)
    names = class_names(params.data.prepared_dir, net) if label is not None else None
    cls_index = resolve_class(net, label, names, flag="label")  # (the form's field: no --class there)
    try:
        logger = get_run_logger()
    except MissingContextError:  # called as a plain function (sample.fn)
        logger = logging.getLogger("genzoo.sample")
    if (
        family in params.models
        and read_manifest(params.data.prepared_dir, required=False)
        and (family_dir(params, family) / "metrics.json").is_file()
    ):  # as `genzoo sample` says it: a quick run's model without the quick profile
        warn_if_stale(params, family, "sampled", logger, other_profiles(params, params_file, None, profile))
    target = check_request(n, out or f"samples/{family or net.family}")  # (x.npz, x.png: x)
    replacing = " (replacing the draw there)" if target.with_name(target.name + ".npz").exists() else ""
    npz, png = sample_to_file(net, n, target, cls=cls_index, seed=seed, progress=False)
    logger.info("%d images from %s -> %s%s", n, model or f"runs/{family}", npz, replacing)
    if FlowRunContext.get() is not None:  # the images themselves, in the run's Artifacts tab
        from prefect.artifacts import create_markdown_artifact

        try:
            create_markdown_artifact(
                f"{n} images from {model or f'runs/{family}'}, seed {seed} -> `{npz}`\n\n"
                + image_markdown(png, f"{n} images from {family or net.family}"),
                key="samples", description=f"the images drawn, by class ({png})",
            )  # fmt: skip
        except Exception as e:  # the images are written: a lost picture is no failure
            logger.warning("the samples' artifact was not created (%s: %s)", type(e).__name__, e)
    return {"npz": str(npz), "png": str(png), "n": n}


@flow(name="genzoo-augment", log_prints=True)
@refusing
def augment(
    families: list[Literal[(*models.REGISTRY, "best")]] | None = None,
    per_class: Annotated[int | None, Field(gt=0)] = None,
    name: str | None = None,
    seed: Annotated[int | None, Field(ge=0, le=MAX_SEED)] = None,
    min_confidence: Annotated[float | None, Field(ge=0, lt=1)] = None,
    reject_copies: bool | None = None,
    png: bool | None = None,
    formats: list[Literal["npz", "imagefolder", "hf"]] | None = None,
    recipe: str | None = None,
    out_dir: str | None = None,
    profile: Profile | None = None,
    params_file: str = "params.yaml",
) -> dict[str, Any]:
    """Write a labelled synthetic dataset (images.npz, image folders, card, manifest.json) from
    trained families; what is not given comes from params.yaml's ``augment`` block.

    Args:
        families: Trained families, or best (default: the augment block's).
        per_class: Images per class from each family.
        name: The dataset's folder: data/augment/<name>/.
        seed: Same seed, same dataset.
        min_confidence: Keep only images the evaluator labels this surely (0-1).
        reject_copies: Drop near-copies of training images.
        png: Deprecated: adds imagefolder to the formats.
        formats: Files to write: npz (always), imagefolder, hf (needs genzoo[hf]).
        recipe: How the images are made and labelled: a name under params.yaml's recipes.
        out_dir: The parent folder of the datasets (default: data/augment).
        profile: The profile the families were trained with, e.g. quick (after a quick run).
        params_file: The params file, relative to the project.
    """
    from genzoo.tasks.augment import request

    confine(params_file=params_file)  # before it is read: its errors quote what it holds
    params = load_params(params_file, None, profile)
    confine(params, params_file=params_file, out_dir=out_dir)
    req = request(params, families=families, per_class=per_class, name=name, seed=seed, out_dir=out_dir,
                  min_confidence=min_confidence, reject_copies=reject_copies, png=png,
                  formats=formats, recipe=recipe)  # fmt: skip
    named = params.families if "best" in req.families else req.families  # models of another profile: refused
    same_profile(params, [f for f in named if f != "best"], "draw a dataset from {it}", params_file, None,
                 profile, because=DATASET_BECAUSE)  # fmt: skip
    with holding(params.run.runs_dir):  # as genzoo run and `genzoo augment` hold it
        path = Path(augment_task(params, req))
    manifest = json.loads((path / "manifest.json").read_text())
    return {"path": str(path), "n": manifest["n"], "sha256": manifest["sha256"]}


@flow(name="genzoo-judge", log_prints=True)
@refusing
def judge_study(
    families: list[Literal[(*models.REGISTRY, "all")]] | None = None,
    per_family: Annotated[int, Field(gt=0, le=1000)] = 20,
    reals: Annotated[int | None, Field(gt=0, le=10000)] = None,
    attention: Annotated[int, Field(ge=0, le=100)] = 3,
    pairs: Annotated[int, Field(ge=0, le=100)] = 5,
    raters: Annotated[int, Field(ge=0, le=100)] = 3,
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0,
    name: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")] = None,
    port: Annotated[int, Field(gt=0, lt=65536)] = 8400,
    profile: Profile | None = None,
    params_file: str = "params.yaml",
) -> dict[str, Any]:
    """Create a human-evaluation study from the trained families (after a pipeline run): real
    test images, each family's samples and attention checks, and raters with their links; serve
    it with `genzoo judge serve`, score it with `genzoo judge results`.

    Args:
        families: Trained families to judge, or all (default: every trained family).
        per_family: Generated images per family, balanced over the classes.
        reals: Real test images (default: as many as per_family).
        attention: Attention checks (noise nobody should call real); raters who fail one are left out.
        pairs: "Which looks more real?" pairs per rater and pair of families (0: none).
        raters: Raters to create; each gets a secret link (listed in this run's Artifacts tab).
        seed: Same seed, same images and orders.
        name: The study's name (default: study-<date>-<time>).
        port: The port of `genzoo judge serve` the links point at.
        profile: The profile the families were trained with, e.g. quick (after a quick run).
        params_file: The params file, relative to the project.
    """
    from genzoo.tasks import judge

    confine(params_file=params_file)  # before it is read: its errors quote what it holds
    params = load_params(params_file, None, profile)
    confine(params, params_file=params_file)  # the study database lives under the runs folder
    url = judge.default_url(params)
    fams = None if not families or "all" in families else list(families)
    # drawn at the settings they were made with, as `genzoo judge create` draws them
    same_profile(params, fams or params.families, "draw {it} for a study", params_file, None, profile,
                 because=STUDY_BECAUSE)  # fmt: skip
    req = judge.request(params, url, name=name, families=fams, per_family=per_family, reals=reals,
                        attention=attention, pairs=pairs, seed=seed, raters=raters)  # fmt: skip
    made = judge.create(params, url, req, port=port)
    links = [f"http://127.0.0.1:{port}/r/{r['token']}" for r in made["raters"]]
    try:
        logger = get_run_logger()
    except MissingContextError:  # called as a plain function (judge_study.fn)
        logger = logging.getLogger("genzoo.judge")
    where = ""
    if links and FlowRunContext.get() is not None:
        # the one place the links are shown: the study keeps only their hashes, and a served
        # run's return value is not kept (Prefect persists no results by default)
        from prefect.artifacts import create_markdown_artifact

        rows = "\n".join(f"| {i + 1} | <{link}> |" for i, link in enumerate(links))
        create_markdown_artifact(
            f"# Raters of study `{made['study']}`\n\nEach link is one rater's password: send each "
            "to one person.\n\n| rater | link |\n|---|---|\n" + rows
            + f"\n\nServe the study with `genzoo judge serve --port {port}`.",
            description=f"the raters' links of study {made['study']}",
        )  # fmt: skip
        where = "; the raters' links are in this run's Artifacts tab"
    logger.info("study %s: %d images, %d raters; serve with `genzoo judge serve --port %d`%s",
                made["study"], made["items"], len(links), port, where)  # fmt: skip
    return {"study": made["study"], "images": made["items"], "links": links}
