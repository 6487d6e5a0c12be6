"""PixelCNN sampling on each pixel's window against full-image passes, same seeds.

    python bench/sampling.py                  # 8x8, 28x28, 32x32x3; 8 images; median of 3
    python bench/sampling.py --images 32 --repeats 5

Per image shape: seconds to draw ``--images`` images with every pass on the whole image
(``window=False``, the textbook loop) and on the pixel's receptive field only (the default),
the ratio, and whether the images are identical (they must be). params.yaml's PixelCNN
architecture, freshly initialised weights (speed does not depend on training), one thread.
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
    print("\n| image | full passes (s) | window passes (s) | speed-up | identical |\n|---|---|---|---|---|")
    for name in args.shapes:
        c, h, w, levels = SHAPES[name]
        torch.manual_seed(0)
        model = models.build("pixelcnn", DataSpec(c, h, w, levels, 10), net).eval()
        y = torch.arange(args.images) % 10
        times, images = {False: [], True: []}, {}
        for _ in range(args.repeats):
            for window in (False, True):
                t0 = time.perf_counter()
                gen = torch.Generator().manual_seed(1)
                with torch.inference_mode():
                    images[window] = model._sample(args.images, y, gen, window=window)
                times[window].append(time.perf_counter() - t0)
        full, fast = statistics.median(times[False]), statistics.median(times[True])
        same = torch.equal(images[False], images[True])
        same = "yes" if same else "NO"
        print(f"| {name} | {full:.2f} | {fast:.2f} | {full / fast:.2f}x | {same} |", flush=True)


if __name__ == "__main__":
    main()
