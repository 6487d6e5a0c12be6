"""Pictures people look at: sample grids and training curves, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genzoo.models.base import atomic_write


def grid(images: torch.Tensor, nrow: int, pad: int = 1, scale: int | None = None) -> Image.Image:
    """(N, C, H, W) in [0, 1] -> one PIL image, ``nrow`` images per row, upscaled so that
    8x8 digits stay visible (nearest neighbour: pixels stay pixels)."""
    x = images.detach().float().clamp(0, 1).cpu().numpy()
    n, c, h, w = x.shape
    rows = -(-n // nrow)
    canvas = np.ones((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), dtype=np.float32) * 0.5
    for i in range(n):
        r, k = divmod(i, nrow)
        canvas[
            :, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w
        ] = x[i]
    arr = (canvas.transpose(1, 2, 0) * 255).round().astype(np.uint8)
    img = Image.fromarray(arr[..., 0] if c == 1 else arr)
    scale = scale or grid_scale(h, w)
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)


def grid_scale(h: int, w: int) -> int:
    """How many times :func:`grid` enlarges images of ``h`` x ``w`` (8x8 digits: 16)."""
    return max(1, 256 // max(h, w) // 2)


def grid_pixels(rows: int, nrow: int, h: int, w: int, pad: int = 1) -> int:
    """The pixels of the PNG :func:`grid` makes of ``rows`` rows of ``nrow`` images of ``h`` x ``w``."""
    scale = grid_scale(h, w)
    return (rows * (h + pad) + pad) * scale * (nrow * (w + pad) + pad) * scale


def save_png(img: Image.Image, path: str | Path) -> Path:
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"))
    return Path(path)


def loss_curve(log_path: str | Path, out: str | Path, title: str) -> Path:
    """Plot every metric in a JSON-lines training log, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    keys = list(dict.fromkeys(k for r in rows for k in r if k not in ("step", "lr", "beta")))
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(3.2 * max(1, len(keys)), 2.8), squeeze=False)
    for ax, k in zip(axes[0], keys, strict=False):
        pts = [(r["step"], r[k]) for r in rows if k in r]
        ax.plot(*zip(*pts, strict=True), lw=1.2, marker="." if len(pts) < 30 else None)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return Path(out)


def curve_csv(log_path: str | Path, out: str | Path) -> Path:
    """The training rows of a JSON-lines log as CSV for ``dvc plots``: ``step``, ``loss`` (the
    family's objective, the first metric it logs) and its other metrics."""
    rows = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if len(r) > 2 or "val" not in r]  # validation rows have their own file
    keys = list(dict.fromkeys(k for r in rows for k in r if k not in ("step", "lr", "beta")))
    lines = [",".join(["step", "loss", *keys[1:]])]
    lines += [",".join([str(r["step"]), *(f"{r[k]:.6g}" if k in r else "" for k in keys)]) for r in rows]
    atomic_write(out, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    return Path(out)
