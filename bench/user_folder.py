"""A user's own image folder through the quick profile: how long a new user waits.

    python bench/user_folder.py                     # 300 images, 25x25 to 32x32, 2 classes
    python bench/user_folder.py --images 600 --repeats 3
    python bench/user_folder.py --gray --plot /tmp/grey.png   # one-channel images
    python bench/user_folder.py --gray --against 2c161bf        # beside another revision's run

Writes a folder of RGB PNGs in two classes (``discs/`` and ``squares/``: one bright shape on
a dark, noisy background, with random size, place and colour), each image 25 to 32 pixels a
side, then runs ``bench/profile_run.py`` on it exactly as a user would start it:

    genzoo run --profile quick -o data.source=folder:PATH -o data.image_size=32

(every family trained, evaluated, the usefulness and anomaly benchmarks, the dataset and the
report) and prints its table: wall time, stage x family, idle cores.

    python bench/user_folder.py --mnist-like --against 9977514

instead writes an MNIST-sized image in ten classes: scikit-learn's 1,797 digits resized to
28x28 (grey, 8 bits) in an npz, run as ``-o data.source=npz:PATH``: where the work that grows
with the classes (a likelihood with labels marginalised is a pass per class) shows.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def make_folder(root: Path, images: int, seed: int = 0, gray: bool = False) -> Path:
    """``images`` PNGs split evenly between ``discs/`` and ``squares/`` under ``root`` (RGB, or
    with ``gray`` one channel: the same shapes, their colour's mean)."""
    rng = np.random.default_rng(seed)
    for i in range(images):
        cls = ("discs", "squares")[i % 2]
        side = int(rng.integers(25, 33))
        yy, xx = np.mgrid[:side, :side]
        cy, cx = rng.uniform(0.35, 0.65, 2) * side
        r = rng.uniform(0.18, 0.32) * side
        mask = (
            (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            if cls == "discs"
            else (abs(yy - cy) < r) & (abs(xx - cx) < r)
        )
        img = rng.normal(30, 12, (side, side, 3))
        img[mask] = rng.uniform(140, 255, 3) + rng.normal(0, 10, (int(mask.sum()), 3))
        (root / cls).mkdir(parents=True, exist_ok=True)
        img = img.mean(-1) if gray else img
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / cls / f"{i:05d}.png")
    return root


def make_mnist_like(path: Path) -> Path:
    """scikit-learn's 1,797 digits, 17 levels on 8x8, resized to 28x28 (bilinear) as 8-bit grey
    images in ``path`` (an npz of ``images`` (N, 28, 28) uint8 and ``labels``)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = [
        Image.fromarray((im * 255 / 16).astype(np.uint8)).resize((28, 28), Image.BILINEAR) for im in d.images
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, images=np.stack([np.asarray(im) for im in images]), labels=d.target)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--gray", action="store_true", help="one-channel images (MNIST-like) instead of RGB")
    ap.add_argument("--mnist-like", action="store_true", help="digits resized to 28x28 in an npz, 10 classes")
    ap.add_argument(
        "--folder", type=Path, help="where to write the images (new or empty; default: a temporary folder)"
    )
    ap.add_argument(
        "--plot",
        type=Path,
        default=HERE.parent / "runs" / "bench" / "profile_user_folder.png",
        help="the timeline (README's is bench/figures/profile_user_folder.png: pass it to replace that)",
    )
    ap.add_argument("--against", metavar="REF", help="also run this revision's code, alternating")
    args = ap.parse_args()
    if args.folder is not None and args.folder.exists() and any(args.folder.iterdir()):
        sys.exit(f"{args.folder}: not empty; give a new or empty folder (nothing is deleted)")
    with tempfile.TemporaryDirectory() as tmp:
        if args.mnist_like:
            npz = make_mnist_like((args.folder or Path(tmp)) / "digits28.npz")
            print(f"npz: {npz} (1,797 grey 28x28 images, 10 classes)", flush=True)
            source = ["-o", f"data.source=npz:{npz}"]
        else:
            folder = make_folder(args.folder or Path(tmp) / "images", args.images, gray=args.gray)
            kind = "grey" if args.gray else "RGB"
            print(f"folder: {folder} ({args.images} {kind} images, 25x25 to 32x32, 2 classes)", flush=True)
            source = ["-o", f"data.source=folder:{folder}", "-o", "data.image_size=32"]
        cmd = [sys.executable, str(HERE / "profile_run.py"), "--profile", "quick",
               "--repeats", str(args.repeats), *source, "--plot", str(args.plot)]  # fmt: skip
        cmd += ["--against", args.against] if args.against else []
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
