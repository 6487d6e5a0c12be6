"""What is trained, from which data and params, whether it is current, and where its MLflow run is."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from genzoo import models
from genzoo.models.base import sha256_file
from genzoo.tasks.config import Params
from genzoo.tasks.data import data_hash, not_as_asked, read_manifest, same_source
from genzoo.tasks.layout import (
    FAMILY_OUTPUTS,
    family_dir,
    newest_checkpoint,
    read_json,
    train_inputs,
    unloadable,
    up_to_date,
)
from genzoo.tasks.tracking import param_strings


def family_status(
    params: Params, family: str, profiles: dict[str, Params] | None = None, busy: bool = False
) -> dict[str, Any]:
    """``family``'s outputs and whether they are current; when they are not, why: other data, or
    params of one of ``profiles`` (the params file's profiles, each applied), or params or code.
    ``busy``: a genzoo command holds the runs folder now (it may be training this family)."""
    out = family_dir(params, family)
    row: dict[str, Any] = {"family": family, "state": "not trained"}
    meta, metrics = read_json(out / "model.json"), read_json(out / "metrics.json")
    metrics = metrics if isinstance(metrics, dict) else None  # valid JSON of another shape: unreadable
    if not isinstance(meta, dict):
        if (out / "model.json").is_file():
            row["state"] = "damaged (model.json cannot be read as a model config: train it again)"
        elif present := [f for f in FAMILY_OUTPUTS if f != "log.jsonl" and (out / f).is_file()]:  # (a
            # log alone is no model's: an earlier genzoo wrote it as a first training went)
            row["state"] = (
                f"incomplete (model.json missing, {', '.join(present)} there: genzoo run or genzoo train "
                "makes it again)"
            )
        elif step := newest_checkpoint(params, family):  # a first one, stopped (or training now)
            row["state"] = (
                f"not trained yet (the command running now may be training it: its last checkpoint is at "
                f"step {step})"
                if busy
                else f"not trained (a training stopped at step {step}: genzoo train or genzoo run resumes it)"
            )
            if not busy and step >= params.train_config(family).steps:  # finished: outputs removed since
                row["state"] = (
                    f"not trained: its outputs are missing, its checkpoint at step {step} is a finished "
                    "training's (`dvc repro` removes a stage's outputs before it runs the stage, and a "
                    f"stage that failed leaves them so): `dvc checkout train@{family}` restores the "
                    "recorded ones, genzoo train makes them from the checkpoint"
                )
        return _coded(row)
    if metrics is None:  # a training removes it as it saves its weights, writes it last
        row["state"] = (
            "incomplete (metrics.json missing or unreadable: a training of it stopped before its end, or "
            "is running; genzoo train or genzoo run trains it again, from its last checkpoint if any)"
        )
        return _coded(row)
    manifest = read_manifest(params.data.prepared_dir, required=False)
    missing = [f for f in FAMILY_OUTPUTS if not (out / f).is_file()]
    if up_to_date(params, family) is not None:
        state = "up to date"
    elif missing:
        state = f"incomplete ({', '.join(missing)} missing: genzoo run or genzoo train makes it again)"
    elif not meta.get("sha256"):
        state = "damaged (model.json records no sha256 of its weights: train it again)"
    elif sha256_file(out / "model.safetensors") != meta.get("sha256"):
        state = "damaged (model.safetensors does not match the sha256 in model.json: train it again)"
    elif manifest and data_hash(manifest) != meta.get("data_sha256"):
        state = "stale (trained on other data than the prepared data)"
    elif manifest is None:  # e.g. a clone that pulled the models only: nothing to check them against
        state = (
            f"not checked: no prepared data in {params.data.prepared_dir} to check it against "
            "(genzoo prepare, or dvc pull prepare)"
        )
    elif made := [name for name, p in (profiles or {}).items() if up_to_date(p, family) is not None]:
        state = f"stale for these params; up to date with {made[0]}"
    else:
        state = f"stale ({changed_since(params, family, meta.get('made_with'), manifest)})"
    if state.startswith(("up to date", "stale for these params")) and (why := unloadable(out / "model.json")):
        # its fingerprint and hash hold; genzoo train and genzoo run load it before taking it for current
        flag = state.partition("up to date with ")[2]  # a quick run's model: trained again with its flag
        state = f"damaged ({why}: train it again{' with ' + flag if flag else ''})"
    row.update(
        state=state,
        trained=time.strftime("%Y-%m-%d %H:%M", time.localtime(_trained_at(metrics, out))),
        steps=metrics.get("steps"),
        test_bpd=metrics.get("test_bpd"),
        bpd_estimator=metrics.get("bpd_estimator"),
        data_sha256=meta.get("data_sha256", "")[:12],
        fingerprint=meta.get("fingerprint"),
    )
    tracked = metrics.get("mlflow")
    if isinstance(tracked, dict) and all(isinstance(tracked.get(k), str) for k in TRACKED):
        row.update(
            mlflow_run=tracked["run_id"], model_uri=tracked["model_uri"], tracking_uri=tracked["tracking_uri"]
        )
    return _coded(row)


TRACKED = ("run_id", "model_uri", "tracking_uri")  # metrics.json's ``mlflow`` record
# a row's state in one word (``code``), for scripts reading ``genzoo status --json``
CODES = (
    ("up to date", "up_to_date"), ("stale", "stale"), ("incomplete", "incomplete"), ("damaged", "damaged"),
    ("not trained", "not_trained"), ("not checked", "not_checked"), ("not in params", "not_in_params"),
)  # fmt: skip


def _coded(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with ``code``: its state's kind (see CODES); numbers that are not finite as None."""
    row["code"] = next(code for prefix, code in CODES if row["state"].startswith(prefix))
    for k, v in row.items():
        if isinstance(v, float) and not math.isfinite(v):
            row[k] = None
    return row


def _trained_at(metrics: dict[str, Any], out: Path) -> float:
    """When the training ended: metrics.json's record (model.json's time is the checkout's after
    `dvc pull` or `dvc checkout`), else model.json's."""
    span = metrics.get("span")
    end = span.get("end") if isinstance(span, dict) else None
    return (
        end
        if isinstance(end, int | float) and not isinstance(end, bool)
        else (out / "model.json").stat().st_mtime
    )


def changed_since(params: Params, family: str, made_with: dict | None, manifest: dict | None,
                  most: int = 8) -> str:  # fmt: skip
    """What changed since ``family`` was trained with ``made_with`` (its model.json's): the
    params keys, old -> new (``train.steps: 300 -> 1200``, ``run.threads: 2 -> 4``), and its code."""
    if not made_with or manifest is None:  # a model from before model.json kept them
        return "params or code changed since"
    now, was = param_strings(train_inputs(params, family, manifest)), param_strings(made_with)
    keys = [k for k in sorted(now.keys() | was.keys()) if k != "data" and now.get(k) != was.get(k)]
    code = "genzoo's code for it changed since" if "code" in keys else ""
    keys = [k for k in keys if k != "code"]
    if not keys:
        return code or "params or code changed since"
    own = {f"train.{k}" for k in params.models[family].train}  # set in the family's own block
    shown = [f"{_param_key(k, family, own)}: {was.get(k, '-')} -> {now.get(k, '-')}" for k in keys[:most]]
    more = f" and {len(keys) - most} more" if len(keys) > most else ""
    return "trained with other params: " + ", ".join(shown) + more + (f"; {code}" if code else "")


def _param_key(key: str, family: str, own: set[str] = frozenset()) -> str:
    """A key of the inputs a model was made with, as params.yaml names it (a train key the
    family's own block sets, ``own``: under ``models.<family>``)."""
    key = key.removeprefix("params.")
    if key in ("threads", "samples_per_class"):
        return f"run.{key}"
    top = ".".join(key.split(".")[:2])
    return f"models.{family}.{key}" if key.startswith("net.") or top in own else key


def running(runs_dir: str | Path) -> str | None:
    """Who holds ``runs_dir``'s run lock (``layout.exclusive``: a `genzoo run`, a training, a DVC
    stage) as its holder file says (``pid 123 since ...``) while that process lives, else None. The
    lock itself is not tried: holding it even an instant could turn away a run starting then. A
    process of that pid started after the holder was written is another one (the pid reused)."""
    import psutil

    try:
        who = (Path(runs_dir) / ".pipeline.holder").read_text().strip()
        # pid 123 since 2026-12-06 14:10:03[, Prefect flow run 'crafty-fox' (<id>)]
        words = who.split(",")[0].split()
        pid, since = int(words[1]), time.mktime(time.strptime(" ".join(words[3:5]), "%Y-%m-%d %H:%M:%S"))
        started = psutil.Process(pid).create_time()
    except (OSError, ValueError, IndexError, OverflowError, psutil.Error):
        return None  # none, a holder killed (-9) before removing it, unreadable
    return who if started <= since + 1 else None  # (since: to the second)


def status(params: Params, profiles: dict[str, Params] | None = None) -> dict[str, Any]:
    """The prepared data and every family's state (``profiles``: see ``family_status``); ``run``:
    the command running on the runs folder now, if any (the states are as of this moment)."""
    data: dict[str, Any] = {"prepared_dir": params.data.prepared_dir, "state": "not prepared"}
    m = read_manifest(params.data.prepared_dir, required=False)
    splits = m.get("splits") if m else None
    readable = m is not None and isinstance(m.get("source"), str) and isinstance(splits, dict)
    if m is not None and not (readable and all(isinstance(v, dict) and "n" in v for v in splits.values())):
        m = None
    if m is None and (Path(params.data.prepared_dir) / "manifest.json").exists():  # there, but not one
        data["state"] = "damaged (manifest.json is not a prepared folder's: genzoo prepare makes it again)"
    if m:
        data.update(state="prepared", source=m["source"], shape=m.get("shape"),
                    splits={s: v["n"] for s, v in splits.items()})  # fmt: skip
        if not same_source(m["source"], params.data.source):  # the families' states are against it
            data["state"] = (
                f"prepared from another source than data.source ({params.data.source}; the next run "
                "prepares that, and retrains what it changes)"
            )
        elif other := not_as_asked(params.data, m):
            data["state"] = (
                f"prepared with other data params ({', '.join(other)}; the next run prepares these, and "
                "retrains what they change)"
            )
        elif changed := source_changed(m):
            data["state"] = (
                f"prepared, but {m['source']} changed since ({changed}): the next run prepares it "
                "again, and retrains what it changes"
            )
    run = running(params.run.runs_dir)
    rows = []
    for f in params.families:
        try:
            rows.append(family_status(params, f, profiles, busy=run is not None))
        except (
            KeyError,
            TypeError,
            AttributeError,
            ValueError,
            OverflowError,
        ) as e:  # edited into another shape
            why = (
                "the prepared data's manifest.json is damaged"
                if m is None and data["state"] != "not prepared"
                else f"a file of it has an unexpected shape ({type(e).__name__}: {e})"
            )
            rows.append(_coded({"family": f, "state": f"not checked: {why}"}))
    for f in sorted(set(models.REGISTRY) - set(params.families)):  # trained once, its block removed since
        if (family_dir(params, f) / "model.json").is_file():
            rows.append(_coded({"family": f, "state": f"not in params (runs/{f} holds a model of it: "
                                f"add a models.{f} block to use it, or remove the folder)"}))  # fmt: skip
    return {"run": run, "data": data, "families": rows}


def source_changed(manifest: dict) -> str | None:
    """How a folder source differs from the images it was prepared from (``manifest``'s digest of
    their listing: each image's path and size, as prepare read them), or None: the same images, a
    source of another kind or not there, or a manifest without a listing. An image added, removed, renamed
    or rewritten to another size is seen; one rewritten to the same size is not."""
    from genzoo.tasks.data import DataError, folder_listing

    kind, _, path = manifest["source"].partition(":")
    made = manifest.get("data")
    found = made.get("found") if isinstance(made, dict) else None
    if kind != "folder" or not isinstance(found, dict) or "files" not in found:
        return None
    root = os.path.expanduser(path)
    if not os.path.isdir(root):  # gone (a clone with the prepared data pulled alone): nothing to compare
        return None
    try:
        listing = folder_listing(root)
    except (DataError, OSError, RuntimeError) as e:  # no longer prepares (RuntimeError: a link loop)
        return f"it no longer reads as prepared data: {e}"
    return (
        None
        if listing == found["files"]
        else "its images are not those prepared: added, removed, renamed or resized"
    )


def format_status(st: dict[str, Any]) -> str:
    d = st["data"]
    about = f"{d.get('source', '')} {d.get('shape', '')} {d.get('splits', '')}".strip()
    lines = [f"data      {d['state']}" + (f": {about}" if about else "")]
    if st.get("run"):
        lines.insert(0, f"busy      a genzoo command writes the runs folder ({st['run']}): states as of now")
    for r in st["families"]:
        line = f"{r['family']:9s} {r['state']}"
        if "steps" in r:
            bpd = r.get("test_bpd")
            bpd = (
                f", test {bpd:.3f} bits/dim ({r['bpd_estimator']})"
                if isinstance(bpd, int | float) and bpd
                else ""
            )
            line += f" | {r['steps']} steps, {r['trained']}{bpd} | data {r['data_sha256']}"
        if "model_uri" in r:
            line += f"\n          mlflow run {r['mlflow_run']}, {r['model_uri']} ({r['tracking_uri']})"
        lines.append(line)
    return "\n".join(lines)
