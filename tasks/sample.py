"""Sample a trained model to ``PATH.npz`` (images float32 (N, C, H, W) in [0, 1], labels
int64) and ``PATH.png`` (a grid), both written atomically."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import models
from models.base import GenerativeModel, atomic_write
from tasks.figures import grid, save_png


def resolve_class(model: GenerativeModel, cls: str | int | None, class_names: list[str] | None) -> int | None:
    if cls is None:
        return None
    names = class_names or [str(i) for i in range(model.spec.num_classes)]
    if str(cls) in names:
        return names.index(str(cls))
    try:
        k = int(cls)
    except ValueError:
        raise ValueError(f"--class {cls!r}: not a class name or index; classes: {names}") from None
    if not 0 <= k < model.spec.num_classes:
        raise ValueError(f"--class {k}: out of range [0, {model.spec.num_classes})")
    return k


def sample_to_file(
    model: GenerativeModel,
    n: int,
    out: str | Path,
    *,
    cls: int | None = None,
    seed: int = 0,
    batch: int = 256,
    progress: bool = True,
) -> tuple[Path, Path]:
    if n <= 0:
        raise ValueError(f"--n must be positive, got {n}")
    out = Path(out)
    if out.suffix in (".npz", ".png"):
        out = out.with_suffix("")
    gen = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    with tqdm(total=n, desc=f"sampling {model.family}", disable=not progress, leave=False) as bar:
        for start in range(0, n, batch):
            b = min(batch, n - start)
            y = (
                torch.full((b,), cls, dtype=torch.long)
                if cls is not None
                else model.fill_labels(b, None, gen).cpu()
            )
            xs.append(model.sample(b, y, generator=gen).float().cpu())
            ys.append(y)
            bar.update(b)
    images, labels = torch.cat(xs).numpy().astype(np.float32), torch.cat(ys).numpy().astype(np.int64)
    buf = io.BytesIO()
    np.savez(buf, images=images, labels=labels)
    npz = out.with_name(out.name + ".npz")
    atomic_write(npz, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))
    order = np.argsort(labels, kind="stable")[:400]
    png = save_png(
        grid(torch.from_numpy(images[order]), nrow=min(20, max(1, int(len(order) ** 0.5)))),
        out.with_name(out.name + ".png"),
    )
    return npz, png


def load_trained(
    family: str | None, model_path: str | None, runs_dir: str | Path
) -> tuple[GenerativeModel, dict]:
    path = Path(model_path) if model_path else Path(runs_dir) / str(family) / "model.json"
    if not path.with_suffix(".json").exists():
        raise FileNotFoundError(
            f"{path.with_suffix('.json')}: no trained model; run `genzoo train --family {family}` first"
        )
    meta = json.loads(path.with_suffix(".json").read_text())
    return models.load(path), meta
