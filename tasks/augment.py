"""Labelled synthetic datasets from trained families: ``<out_dir>/<name>/images.npz``
(``images`` uint8 levels (N, C, H, W) like the prepared data, ``labels`` int64, ``source``
the family of each image) + ``manifest.json`` (families, their models and MLflow runs, seed,
counts per class, content hash). The request is checked before any sampling, and the folder
is replaced as a whole: an existing version is never half-overwritten.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

import models
from models.base import sha256_file
from tasks.config import Params, load_params

log = logging.getLogger("genzoo.augment")


class AugmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("synthetic", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="folder name")
    families: list[str] = Field(min_length=1, description="trained families to sample from")
    per_class: int = Field(100, gt=0, le=100_000, description="images per class from each family")
    seed: int = Field(0, ge=0)
    out_dir: str = Field("data/augment", description="parent folder of the datasets")


def _model_info(params: Params, family: str) -> tuple[Path, dict[str, Any]]:
    if family not in params.models:
        raise ValueError(
            f"augment.families: {family} is not a family in params ({', '.join(params.families)})"
        )
    path = Path(params.run.runs_dir) / family / "model.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: {family} is not trained; run `genzoo run --families {family}` first"
        )
    info: dict[str, Any] = {"model": str(path), "sha256": sha256_file(path.with_suffix(".safetensors"))}
    metrics = path.with_name("metrics.json")
    if metrics.exists():
        m = json.loads(metrics.read_text())
        info.update({k: m["mlflow"][k] for k in ("run_id", "model_uri")} if "mlflow" in m else {})
    return path, info


@torch.inference_mode()
def generate(params: Params, req: AugmentRequest, batch: int = 500) -> Path:
    """Sample ``req.per_class`` images per class from each family into ``<out_dir>/<name>/``."""
    root = Path(req.out_dir).resolve()
    target = root / req.name
    if target.parent != root:  # the name pattern already forbids it; keep the invariant explicit
        raise ValueError(f"augment name {req.name!r}: must stay inside {root}")
    chosen = [_model_info(params, f) for f in dict.fromkeys(req.families)]  # all checked first
    xs, ys, src, sources = [], [], [], {}
    for i, (path, info) in enumerate(chosen):
        net = models.load(path)
        k, levels = net.spec.num_classes, net.spec.levels
        labels = torch.arange(k).repeat_interleave(req.per_class)
        gen = torch.Generator().manual_seed(req.seed * 1000 + i)
        for yb in labels.split(batch):
            x = net.sample(len(yb), yb, generator=gen).float().cpu()  # (B, C, H, W) in [0, 1]
            xs.append(torch.round(x * (levels - 1)).to(torch.uint8).numpy())
            ys.append(yb.numpy())
            src.append(np.full(len(yb), net.family))
        sources[net.family] = info
    images, labels, source = np.concatenate(xs), np.concatenate(ys).astype(np.int64), np.concatenate(src)
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images, labels=labels, source=source)
    manifest = {
        "name": req.name,
        "request": req.model_dump(),
        "families": sources,
        "shape": list(images.shape[1:]),
        "levels": levels,
        "n": len(labels),
        "counts_per_class": np.bincount(labels, minlength=k).tolist(),
        "sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
    }
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{req.name}.", dir=root))
    try:
        (tmp / "images.npz").write_bytes(buf.getvalue())
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        old = root / f".{req.name}.old"
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)  # the previous version stays whole until the new one is in place
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("%s: %d images from %s", target, len(labels), ", ".join(sources))
    return target


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Write a labelled synthetic dataset from trained families.")
    ap.add_argument("families", nargs="+")
    ap.add_argument("--name", default="synthetic")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    req = AugmentRequest(name=args.name, families=args.families, per_class=args.per_class, seed=args.seed)
    print(generate(load_params(args.params), req))


if __name__ == "__main__":
    main()
