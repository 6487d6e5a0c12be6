"""What is trained, from which data and params, whether it is current, and where its MLflow run is."""

from __future__ import annotations

import time
from typing import Any

from genzoo.tasks.config import Params
from genzoo.tasks.data import read_manifest
from genzoo.tasks.layout import family_dir, read_json, up_to_date


def family_status(params: Params, family: str) -> dict[str, Any]:
    out = family_dir(params, family)
    row: dict[str, Any] = {"family": family, "state": "not trained"}
    meta, metrics = read_json(out / "model.json"), read_json(out / "metrics.json")
    if meta is None or metrics is None:
        return row
    current = up_to_date(params, family) is not None
    row.update(
        state="up to date" if current else "stale (params, data or code changed since)",
        trained=time.strftime("%Y-%m-%d %H:%M", time.localtime((out / "model.safetensors").stat().st_mtime)),
        steps=metrics.get("steps"),
        test_bpd=metrics.get("test_bpd"),
        bpd_estimator=metrics.get("bpd_estimator"),
        data_sha256=meta.get("data_sha256", "")[:12],
        fingerprint=meta.get("fingerprint"),
    )
    if "mlflow" in metrics:
        row.update(
            mlflow_run=metrics["mlflow"]["run_id"],
            model_uri=metrics["mlflow"]["model_uri"],
            tracking_uri=metrics["mlflow"]["tracking_uri"],
        )
    return row


def status(params: Params) -> dict[str, Any]:
    data: dict[str, Any] = {"prepared_dir": params.data.prepared_dir, "state": "not prepared"}
    if m := read_manifest(params.data.prepared_dir, required=False):
        data.update(
            state="prepared",
            source=m["source"],
            shape=m["shape"],
            splits={s: v["n"] for s, v in m["splits"].items()},
        )
    return {"data": data, "families": [family_status(params, f) for f in params.families]}


def format_status(st: dict[str, Any]) -> str:
    d = st["data"]
    lines = [
        f"data      {d['state']}: {d.get('source', '')} {d.get('shape', '')} {d.get('splits', '')}".rstrip()
    ]
    for r in st["families"]:
        line = f"{r['family']:9s} {r['state']}"
        if "steps" in r:
            bpd = f", test {r['test_bpd']:.3f} bits/dim ({r['bpd_estimator']})" if r.get("test_bpd") else ""
            line += f" | {r['steps']} steps, {r['trained']}{bpd} | data {r['data_sha256']}"
        if "model_uri" in r:
            line += f"\n          mlflow run {r['mlflow_run']}, {r['model_uri']} ({r['tracking_uri']})"
        lines.append(line)
    return "\n".join(lines)
