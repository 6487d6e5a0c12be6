"""Train one family on the prepared data (DVC stage ``train@<family>``).

Writes ``<runs_dir>/<family>/``: ``model.json`` + ``model.safetensors`` (the trained model),
``samples.png`` (one row per class), ``loss.png``, ``curve.csv`` and ``log.jsonl`` (training
curves) and ``metrics.json`` (time, speed, test bits/dim with its estimator). Checkpoints live in
``<checkpoints_dir>/<family>/<key>/`` (``layout.checkpoints_key``: the model's fingerprint but
for the checkpoint and sample-grid settings): a re-run with the same data, code and params resumes
from them; any other change starts afresh.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from genzoo import models
from genzoo.metrics.likelihood import bits_per_dim
from genzoo.models.base import (
    ExactLikelihood,
    GenerativeModel,
    LikelihoodBound,
    atomic_write_text,
    likelihood_estimator,
    log_likelihoods,
)
from genzoo.models.trainer import Callback, JsonlLogger, excluded_error
from genzoo.tasks.config import Params, ParamsError, stage_args
from genzoo.tasks.data import DataError, data_hash, data_spec, load_split, not_as_asked, read_manifest
from genzoo.tasks.errors import check_output_dir, exit_code
from genzoo.tasks.figures import curve_csv, grid, loss_curve, save_png
from genzoo.tasks.layout import (
    check_outside_source,
    checkpoint_dir,
    checkpoints_key,
    exclusive,
    family_dir,
    family_run_id,
    key_of,
    read_json,
    train_inputs,
    train_variant,
    training_device,
)

# whether a family's outputs are current is provenance (tasks/layout.py), read by `genzoo
# status` too; named here for the pipeline, which asks it before training
from genzoo.tasks.layout import up_to_date as up_to_date

log = logging.getLogger("genzoo.train")


@torch.inference_mode()
def sample_grid(model: GenerativeModel, per_class: int, seed: int) -> torch.Tensor:
    k = model.spec.num_classes
    y = torch.arange(k).repeat_interleave(per_class)
    return model.sample(len(y), y, generator=torch.Generator().manual_seed(seed))


def _at_most(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """At most ``n`` of the images ``x`` (N, C, H, W) with labels ``y`` (N,): a seeded draw, the
    same every run; all of them when they are ``n`` or fewer (or ``n`` is None)."""
    if n is None or len(x) <= n:
        return x, y
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


SPEED_VALUES = 100 * 64  # the sampling-speed figure draws 100 digits, 8 images of 32x32x3


@torch.inference_mode()
def sampling_speed(model: GenerativeModel, n: int | None = None, seed: int = 0) -> float:
    """Images per second over one batch of ``n`` images (default: as many as hold
    ``SPEED_VALUES`` values, 8 to 100: a PixelCNN draws a 32x32x3 image in 3,072 passes)."""
    n = n or max(8, min(100, SPEED_VALUES // model.spec.dims))
    t0 = time.perf_counter()
    model.sample(n, generator=torch.Generator().manual_seed(seed))
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def check_outputs(params: Params) -> None:
    """Where training writes (``run.runs_dir``, ``run.checkpoints_dir``) can be written, checked
    before any of it is: a file on the way or a read-only folder is one line naming the key."""
    check_output_dir(params.run.runs_dir, "run.runs_dir", into=True)
    check_output_dir(params.run.checkpoints_dir, "run.checkpoints_dir", into=True)
    check_outside_source(params)  # samples.png and loss.png in the user's image folder


def say_if_replacing_other_data(params: Params, family: str) -> None:
    """A run on another image folder replaces runs/<family>/ trained on the earlier one: said,
    with where the earlier model stays (MLflow's registry, when tracked)."""
    meta = read_json(family_dir(params, family) / "model.json")
    manifest = read_manifest(params.data.prepared_dir, required=False)
    if not (isinstance(meta, dict) and meta.get("data_sha256") and manifest):
        return
    if meta["data_sha256"] != data_hash(manifest):
        run = family_run_id(params, family)  # the earlier model's MLflow run, when it was tracked
        versions: list[str] | None = None  # (None: not looked up)
        if params.run.track:
            from genzoo.tasks import tracking

            try:  # (a message's detail: never a failed training)
                c = tracking.client()
                if run is None:  # metrics.json removed by a killed training since
                    run = tracking.run_of_model(c, params.run.runs_dir, family, meta.get("fingerprint", ""))
                if run is not None:  # the versions to load it by (models:/vae/1), not a placeholder
                    found = c.search_model_versions(f"run_id='{run}'")
                    versions = [
                        f"models:/{v.name}/{v.version}" for v in sorted(found, key=lambda v: int(v.version))
                    ]
            except Exception as e:
                log.debug("%s: its model's MLflow run not looked up: %s", family, e)
        registered = (
            f"its registered versions: MLflow's registry, under {family}" if versions is None
            else f"registered as {', '.join(versions)}" if versions else "not registered"
        )  # fmt: skip
        kept = (
            f"MLflow keeps it (run {run}; {registered})"
            if run
            else "no MLflow run is recorded for it: to keep it, stop now (Ctrl+C) and copy the folder"
        )
        source = manifest.get("source")  # (the same source with other images: its folder or file changed)
        now = f" (now from {source}: another source, or its images changed since)" if source else ""
        log.warning("%s: replacing %s, trained on other data than the prepared data%s; %s", family,
                    family_dir(params, family), now, kept)  # fmt: skip


def train_family(
    params: Params,
    family: str,
    *,
    progress: bool = True,
    callbacks: list[Callback] = (),
    stop_at: int | None = None,
    parent_run_id: str | None = None,
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Train ``family``; returns its metrics dict (also written to metrics.json). With
    ``run.track`` the run is tracked in MLflow: in ``run_id`` when the caller created it
    (the pipeline does, so a dead worker's run can be closed), else in a new run nested under
    ``parent_run_id``; the trained model is registered under the family's name. metrics.json
    is written last (tracked: after the registration), so a family whose stage died before
    it is not taken for done (``layout.up_to_date``) and is trained again (from its checkpoint)."""
    check_outputs(params)
    check_data(params, family)
    say_if_replacing_other_data(params, family)
    if not params.run.track:
        return _train(params, family, progress=progress, callbacks=callbacks, stop_at=stop_at, final=True)
    from genzoo.tasks import tracking

    c = tracking.client()
    if run_id is None:
        run_id = start_family_run(c, params, family, parent_run_id)
    try:  # the run is closed on every way out: KILLED, FAILED, or FINISHED by finish_family
        if tags:
            tracking.set_tags(c, run_id, tags)
        cbs = [
            *callbacks,
            tracking.MlflowLogger(c, run_id, history=family_dir(params, family) / TRAINING_LOG),
        ]
        metrics = _train(params, family, progress=progress, callbacks=cbs, stop_at=stop_at, final=False)
        if not metrics.get("complete", True):
            tracking.terminate(c, run_id, "KILLED")
            return metrics
        out = family_dir(params, family)
        block = {**params.family_block(family), "data": params.data.model_dump(mode="json")}
        tracking.retry(lambda: c.log_dict(run_id, block, "config.json"), "log_dict")
        version = tracking.finish_family(
            c, run_id, family, out, metrics, registry_about(params, family, metrics)
        )
    except BaseException as e:  # Ctrl-C, or a Ray task cancelled by one: KILLED, as MLflow marks a stop
        with contextlib.suppress(Exception):  # (a lock here: the error that happened is the one to see)
            tracking.terminate(
                c, run_id, "KILLED" if isinstance(e, KeyboardInterrupt | SystemExit) else "FAILED"
            )
        raise
    metrics["mlflow"] = {
        "run_id": run_id,
        "model_uri": f"models:/{family}/{version}",
        "tracking_uri": tracking.tracking_uri(),
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def check_data(params: Params, family: str, read_splits: bool = True) -> None:
    """What training ``family`` needs of the prepared data, checked before anything starts (its
    MLflow run too): the data is there (a DataError naming its manifest), as the params ask,
    ``exclude_classes`` names some of its classes, not all, and (``read_splits``) every split
    reads whole (not needed where the caller has just written them)."""
    manifest = read_manifest(params.data.prepared_dir)
    if other := not_as_asked(params.data, manifest):  # it trained on what was there, "up to date"
        raise DataError(
            f"{params.data.prepared_dir} holds data prepared otherwise than these params ask "
            f"({', '.join(other)}); prepare it first: `{params.command('prepare')}`"
        )
    if problem := excluded_error(params.train_config(family).exclude_classes, int(manifest["num_classes"])):
        own = "exclude_classes" in params.models[family].train
        key = f"models.{family}.train" if own else "train"
        raise ParamsError(f"invalid params: {key}.exclude_classes: {problem}")
    for split in ("train", "val", "test") if read_splits else ():  # found before the MLflow run starts
        if split in manifest["splits"]:
            load_split(params.data.prepared_dir, split)


def close_stale_runs(params: Params) -> list[str]:
    """Mark KILLED the MLflow runs a killed training left RUNNING for this runs folder (a
    ``genzoo train`` or ``dvc repro`` stopped by SIGKILL cannot end its own run). Only while
    holding the folder's run lock, with no pipeline running: then none of them is alive."""
    if not params.run.track:
        return []
    from genzoo.tasks import tracking

    stale = tracking.close_stale(tracking.client(), params.run.runs_dir)
    for rid in stale:
        log.warning("MLflow run %s was left RUNNING by a killed training: marked KILLED", rid)
    return stale


def start_family_run(c, params: Params, family: str, parent_run_id: str | None = None) -> str:
    """Create ``family``'s MLflow run (nested under ``parent_run_id``) with its params."""
    from genzoo.tasks import tracking

    run = tracking.start_run(
        c,
        tracking.prepare_store(),
        family,
        parent_run_id,
        tags={
            "genzoo.family": family,
            **tracking.git_tags(),
            **tracking.folder_tags(params.run.runs_dir),
        },
    )
    tracking.log_params(c, run.info.run_id, params.family_block(family))
    return run.info.run_id


TRAINING_LOG = "log.training.jsonl"  # a training's log as it goes; log.jsonl once its model is saved


def registry_about(params: Params, family: str, metrics: dict[str, Any]) -> dict[str, str]:
    """What a registered version says of itself (its tags and description): the profile and data
    it was trained with and how to train it again, so ``models:/vae/latest`` is not taken for a
    full model when a quick run or another folder made it."""
    profile = params.profile or "none"
    bpd = (
        f"; test {metrics['test_bpd']:.3f} bits/dim ({metrics['bpd_estimator']})"
        if "test_bpd" in metrics
        else ""
    )
    return {
        "genzoo.profile": profile,
        "genzoo.data_source": params.data.source,
        "genzoo.steps": str(metrics["steps"]),
        "genzoo.runs_dir": str(Path(params.run.runs_dir).resolve()),
        "description": f"{family}: {metrics['steps']} steps on {params.data.source}, profile {profile}{bpd}; "
        f"trained again by `{params.command(f'train --family {family}')}`",
    }


def _train(
    params: Params,
    family: str,
    *,
    progress: bool,
    callbacks: list[Callback],
    stop_at: int | None,
    final: bool,
) -> dict[str, Any]:
    """The training and its outputs; metrics.json (the mark of a finished stage) is written
    only when ``final`` (else the caller writes it once the rest of the stage is done)."""
    params.require(family)
    started = time.time()
    device = training_device(params, family)
    x, y, manifest = load_split(params.data.prepared_dir, "train")
    spec = data_spec(manifest)
    cfg = params.train_config(family)
    scored = issubclass(models.REGISTRY[family], ExactLikelihood | LikelihoodBound)
    # its test likelihood comes last: a damaged split is found before the training, not after
    test = _at_most(*load_split(params.data.prepared_dir, "test")[:2], cfg.likelihood_count(spec),
                    params.seed) if scored else None  # fmt: skip
    val_fn = None
    if scored and cfg.eval_every:
        # model selection on the validation split, conditional on labels: one pass per batch
        x_val, y_val = _at_most(
            *load_split(params.data.prepared_dir, "val")[:2], cfg.likelihood_count(spec), params.seed
        )
        val_fn = lambda m: bits_per_dim(log_likelihoods(m, x_val, y_val).mean().item(), spec.dims)  # noqa: E731
    dhash = data_hash(manifest)
    made_with = train_inputs(params, family, manifest)  # model.json keeps them: status says what changed
    fp = key_of(made_with)  # train_key
    out = family_dir(params, family)
    out.mkdir(parents=True, exist_ok=True)
    # this training logs to TRAINING_LOG, started afresh: a resume takes its earlier rows from its
    # checkpoint's copy (never another training's: other params, a profile); it becomes log.jsonl
    # (with log.key, the training its rows are of) only as the weights are saved
    running_log = out / TRAINING_LOG
    running_log.unlink(missing_ok=True)

    def stamp(_) -> dict[str, Any]:
        # the former model's metrics.json and log go just before the new weights replace it: until
        # then (a training cancelled, killed or failing) the former model stays whole, and `status`,
        # the report, `sample` and DVC still read it; after, it is "incomplete" until written anew
        (out / "metrics.json").unlink(missing_ok=True)
        os.replace(running_log, out / "log.jsonl")
        atomic_write_text(out / "log.key", fp)
        return {"fingerprint": fp, "data_sha256": dhash, "class_names": manifest["class_names"],
                "made_with": made_with}  # fmt: skip

    trained, result = train_variant(
        params,
        family,
        x,
        y,
        spec,
        cfg,
        out / "model",
        stamp,
        checkpoint_dir=checkpoint_dir(params, family, checkpoints_key(params, family, manifest)),
        callbacks=[JsonlLogger(running_log), *callbacks],
        progress=progress,
        stop_at=stop_at,
        val_fn=val_fn,
    )
    if not result.finished:  # interrupted on purpose (stop_at): the other outputs left alone
        return {"family": family, "steps": result.steps, "complete": False}
    estimator = likelihood_estimator(trained)
    save_png(
        grid(sample_grid(trained, params.run.samples_per_class, params.seed), params.run.samples_per_class),
        out / "samples.png",
    )
    loss_curve(out / "log.jsonl", out / "loss.png", f"{family} training")
    curve_csv(out / "log.jsonl", out / "curve.csv")

    metrics: dict[str, Any] = {
        "family": family,
        "steps": result.steps,
        "batch_size": result.batch_size,
        "stopped_early": result.steps < cfg.steps,  # train.patience: no better validation for a while
        "train_seconds": round(result.seconds, 2),
        "resumed_from": result.resumed_from,
        "bad_steps": result.bad_steps,
        "samples_per_second": round(sampling_speed(trained, seed=params.seed), 2),
        "parameters": sum(p.numel() for p in trained.parameters()),
        "capabilities": models.capabilities(trained),
        "device": str(device),
        "final": result.last,
    }
    if result.best_step is not None:
        metrics.update(best_step=result.best_step, val_bpd=round(result.best_val, 4))
    if estimator is not None:  # labels marginalised: the unconditional likelihood
        x_test, _ = test
        test_bpd = bits_per_dim(log_likelihoods(trained, x_test).mean().item(), spec.dims)
        metrics.update(test_bpd=round(test_bpd, 4), bpd_estimator=estimator, test_images=len(x_test))
    metrics["span"] = {"start": started, "end": time.time()}  # wall-clock of the whole stage
    if final:
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> None:
    params, family = stage_args(argv, "Train one family (DVC stage 'train@<family>').", "family")
    with exclusive(params.run.runs_dir):
        close_stale_runs(params)
        train_family(params, family)


if __name__ == "__main__":
    sys.exit(exit_code(main, "train"))
