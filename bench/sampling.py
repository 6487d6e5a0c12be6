"""PixelCNN's three samplers, same seeds: full-image passes, window passes, cached activations.

    python bench/sampling.py                  # 8x8, 28x28, 32x32x3; 8 images; median of 3
    python bench/sampling.py --images 500 --shapes 8x8   # one batch as the usefulness stage draws it

Per image shape: seconds to draw ``--images`` images with every pass on the whole image
(``full``, the textbook loop), on the pixel's receptive field only (``window``), and with every
layer's activations kept, so each row computes one row of each layer's vertical stack and each
pixel one column of each layer's horizontal stack (``cached``, the default); the speed-ups over
``full`` and whether the images are identical (they must be).
params.yaml's PixelCNN architecture, freshly initialised weights (speed does not depend on
training), one thread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import ROOT, machine  # noqa: E402

from genzoo import models  # noqa: E402
from genzoo.models import DataSpec  # noqa: E402
from genzoo.tasks.config import load_params  # noqa: E402

SHAPES = {"8x8": (1, 8, 8, 17), "28x28": (1, 28, 28, 256), "32x32x3": (3, 32, 32, 256)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    args = ap.parse_args()
    torch.set_num_threads(1)
    net = load_params(ROOT / "params.yaml").net_config("pixelcnn")
    print(f"machine: {machine()}; 1 thread; PixelCNN {net.layers} layers, {net.channels} channels, "
          f"kernel {net.kernel}; {args.images} images, median of {args.repeats}")  # fmt: skip
    print("\n| image | full (s) | window (s) | cached (s) | window speed-up | cached speed-up | identical |")
    print("|---|---|---|---|---|---|---|")
    modes = ("full", "window", "cached")
    for name in args.shapes:
        c, h, w, levels = SHAPES[name]
        torch.manual_seed(0)
        model = models.build("pixelcnn", DataSpec(c, h, w, levels, 10), net).eval()
        y = torch.arange(args.images) % 10
        times, images = {m: [] for m in modes}, {}
        for _ in range(args.repeats):
            for mode in modes:
                t0 = time.perf_counter()
                gen = torch.Generator().manual_seed(1)
                with torch.inference_mode():
                    images[mode] = model._sample(args.images, y, gen, mode=mode)
                times[mode].append(time.perf_counter() - t0)
        t = {m: statistics.median(times[m]) for m in modes}
        same = "yes" if all(torch.equal(images["full"], images[m]) for m in modes) else "NO"
        ups = " | ".join(f"{t['full'] / t[m]:.2f}x" for m in ("window", "cached"))
        print(
            f"| {name} | {t['full']:.2f} | {t['window']:.2f} | {t['cached']:.2f} | {ups} | {same} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
