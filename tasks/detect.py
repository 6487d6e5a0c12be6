"""Anomaly detection by likelihood (``genzoo detect``).

Score = bits/dim of an image under a trained family, labels marginalised (``log sum_y p(y)
p(x|y)``; DDPM: its null-label model): exact for PixelCNN, RealNVP's exact density of the
dequantised image (one draw: on average an upper bound, as the bounds are), an upper bound for
the VAE and DDPM (a GAN has no likelihood). An image is flagged when its score exceeds the
threshold the validation split's scores give for ``quantile`` (split conformal: ``quantile:
0.99`` flags at most 1% of normal images, :func:`conformal_threshold`). The typicality score
(distance from the validation mean) is reported beside it: raw likelihood is known to rank
some out-of-distribution data as *more* likely than the training data, which the benchmark
measures.

The benchmark (``benchmark``) scores the real test split as normal against:

- corruptions of the test images: Gaussian noise, inversion, rotation by 90 and 180 degrees,
  blur, and blank (flat, dark) images, from obvious to subtle (``corruptions``);
- images of another kind: patches of the photographs that ship with scikit-learn, reduced to
  the data's size, channels and levels;

- a held-out class (``detect.holdout_classes``): the family retrained without that class (the
  ``exclude_classes`` training option), the class's test images scored as anomalies against the
  other classes' test images;

and reports AUROC, AUPR and FPR at 95% TPR for three scores: the likelihood (bits/dim), the
typicality (distance from the validation mean) and the likelihood ratio against a background
model (the family's bits/dim minus those of a position-free histogram of pixel levels fitted
on the training images, ``models.classical.Background``), which discounts what raw likelihood
mostly measures: how simple an image is.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genzoo import models
from genzoo.metrics.anomaly import detection, typicality
from genzoo.models.base import (
    DataSpec,
    ExactLikelihood,
    GenerativeModel,
    LikelihoodBound,
    atomic_write_text,
    by_pixels,
    log_likelihoods,
    sha256_file,
)
from genzoo.models.classical import Background
from genzoo.models.trainer import TrainConfig
from genzoo.tasks import tracking
from genzoo.tasks.config import Params, fingerprint, stage_args
from genzoo.tasks.data import (
    IMAGE_SUFFIXES,
    DataError,
    check_trained_on,
    convert_levels,
    data_hash,
    data_spec,
    fit_image,
    levels_beside,
    load_split,
    npz_levels,
    open_image,
    quantize,
    read_manifest,
    require_npz,
    to_nchw,
)
from genzoo.tasks.errors import exit_code
from genzoo.tasks.layout import (
    cached_variant,
    code_hash,
    evaluation_dir,
    exclusive,
    family_dir,
    read_json,
    train_variant,
    use_threads,
    variant_key,
)

log = logging.getLogger("genzoo.detect")


def check_scorable(family: str) -> None:
    """Refuse a family with no likelihood to score images by (the GAN), before any other check."""
    if not issubclass(models.get_family(family), ExactLikelihood | LikelihoodBound):
        scorable = models.families_with(ExactLikelihood | LikelihoodBound)
        raise ValueError(f"{family} has no likelihood to score with (use {', '.join(scorable)})")


def _model(params: Params, family: str) -> GenerativeModel:
    path = family_dir(params, params.require(family)) / "model.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: {family} is not trained; run `{params.command(f'run --families {family}')}` first"
        )
    net = models.load(path)
    check_scorable(net.family)
    prepared = params.data.prepared_dir
    check_trained_on(family, (read_json(path) or {}).get("data_sha256"), read_manifest(prepared), prepared,
                     "its threshold would come from other images")  # fmt: skip
    return net


def estimator(net: GenerativeModel) -> str:
    return "exact" if isinstance(net, ExactLikelihood) else "bound"


@torch.inference_mode()
def score(net: GenerativeModel, x: torch.Tensor, batch: int = 256) -> np.ndarray:
    """Bits/dim of each image (N,), labels marginalised (DDPM: its null-label model); seeded where the
    bound samples."""
    nats = log_likelihoods(net, x, batch=batch).numpy()
    return -nats / (net.spec.dims * np.log(2))


def conformal_threshold(scores: np.ndarray, quantile: float) -> tuple[float, float]:
    """(threshold, rate): the ceil((n + 1) q)-th smallest of the n validation ``scores`` (split
    conformal): a normal image scored above it with probability ``rate`` = (n + 1 - k) / (n + 1),
    at most 1 - q (images exchangeable with the validation ones, ties aside). The q-quantile of
    the scores themselves flagged more (1.5% at q = 0.99 on 180 images, 2% on 100). Fewer than
    q / (1 - q) images cannot keep 1 - q: their largest score, exceeded 1 / (n + 1) of the time."""
    n = len(scores)
    if n == 0:
        raise DataError("no validation image to set the threshold by (raise data.val_fraction or add images)")
    k = max(1, min(math.ceil(round((n + 1) * quantile, 9)), n))
    return float(np.sort(scores)[k - 1]), (n + 1 - k) / (n + 1)


def calibrate(net: GenerativeModel, params: Params, quantile: float, limit: bool = False) -> dict[str, Any]:
    """The threshold (:func:`conformal_threshold`) of the validation split's scores (with
    ``limit``, of at most ``detect.likelihood_pixels`` of its pixels: the benchmark's)."""
    xv, _, _ = load_split(params.data.prepared_dir, "val")
    if limit:
        xv = _some(xv, params, net.spec)
    if len(xv) == 0:
        raise DataError(
            f"{params.data.prepared_dir}: the val split is empty; detection calibrates its threshold on it "
            "(raise data.val_fraction or add images, then genzoo prepare)"
        )
    val = score(net, xv)
    threshold, rate = conformal_threshold(val, quantile)
    return {"quantile": quantile, "threshold": threshold, "false_alarm_rate": rate,
            "val_mean": float(val.mean()), "val": val}  # fmt: skip


# ---------------------------------------------------------------------------- inputs


# the levels each source kind reads its images at (an npz's: its own, in the prepared manifest)
SOURCE_LEVELS = {"digits": 17, "mnist": 256, "fashion_mnist": 256, "cifar10": 256, "folder": 256}


def levels_binned(params: Params, net: GenerativeModel) -> bool:
    """Whether ``net``'s levels are the bins ``data.max_levels`` put finer data in (8-bit images
    go into the same bins), not levels its data had of its own (nearest level). Told by the
    prepared data the model was trained on (:func:`_model` checks it is), not by this command's
    params: a model trained under ``--profile quick`` (``data.max_levels: 32``) scores an image
    the same with the profile or without it. The source's levels are the manifest's
    ``source_levels`` (an npz's, or any source's prepared with ``data.max_levels``), else its
    kind's; an npz prepared before manifests recorded them is told by ``data.max_levels``."""
    manifest = read_manifest(params.data.prepared_dir)
    kind = str(manifest.get("source", "")).partition(":")[0]
    source = manifest.get("source_levels", SOURCE_LEVELS.get(kind))
    if source is None:
        return params.data.max_levels == net.spec.levels
    return manifest.get("levels") == net.spec.levels and source > net.spec.levels


def to_spec(
    images: np.ndarray, spec: DataSpec, levels: int | None, where: str, binned: bool = False, own: bool = True
) -> torch.Tensor:
    """Any (N, C, H, W) / (N, H, W) / (N, H, W, C) images -> the model's channels, size and
    level grid, as floats in [0, 1], converted as prepare converted its training images: grey by
    luma; another size sized as prepare sizes a folder's images (aspect kept, padded, shrunk
    with a box filter), image files and arrays alike. Integer levels finer than the model's go
    to its nearest level, or, when ``binned`` (its levels are ``data.max_levels``' bins of finer
    data), into the bin prepare put them in (level k of L: floor(k M / L)). A float in [0, 1]
    on the model's grid keeps its level (a model's own samples score as drawn); one between its
    levels goes to the nearest, or, when ``binned``, is 8-bit data (x 255) put in prepare's bin.
    ``own``: the user's images (enlarged ones are said to be), not a set genzoo made."""
    arr = to_nchw(np.asarray(images), where)
    given = levels
    k, levels = quantize(arr, where, levels)  # (its checks: finite, in range; floats: 8-bit)
    if (
        own
        and given is None
        and arr.dtype.kind in "ui"
        and levels == 256
        and spec.levels < 256
        and k.max() < spec.levels
    ):
        # the digits' own 0..16 read as 8-bit: near-black images, scored without a word
        log.warning(
            "%s: integer pixels up to %d read as 8-bit (0-255: dark images); if they are the model's %d "
            "levels (0..%d), save the npz with levels=%d", where, int(k.max()), spec.levels,
            spec.levels - 1, spec.levels,
        )  # fmt: skip
    size = (spec.height, spec.width)
    if own:
        say_if_enlarged(where, [tuple(arr.shape[2:])] * len(arr), size)
    if arr.dtype.kind == "f" and arr.max() <= 1 and tuple(arr.shape[2:]) == size:  # on the model's grid
        scaled = np.clip(arr.astype(np.float64), 0, 1) * (spec.levels - 1)
        grid = np.round(scaled).astype(np.int64)
        if binned and levels > spec.levels:  # between its levels: finer data, into prepare's bin
            grid = np.where(np.abs(scaled - grid) <= 1e-4, grid, k * spec.levels // levels)
        k, levels = grid, spec.levels
    k, levels = convert_levels(k, levels, spec.channels, None, None)
    if tuple(k.shape[2:]) != size:
        k = _fit_images(k, levels, size)
    k, levels = convert_levels(k, levels, None, None, spec.levels if binned else None)
    x = torch.from_numpy(k.astype(np.float32) / (levels - 1))
    return torch.round(x * (spec.levels - 1)) / (spec.levels - 1)  # another grid: the model's nearest level


def say_if_enlarged(where: str, sizes: list[tuple[int, int]], size: tuple[int, int]) -> None:
    """A warning where images at most half the model's (H, W) ``size`` are enlarged to it: an
    enlarged image is smoother than the model's images, and its likelihood no measure of how
    usual its content is (8x8 digits against a model of 24x24 digits: every one flagged). Less
    is not said: prepare enlarges a folder's smaller images alike (25 px to 32)."""
    small = [s for s in sizes if 2 * s[0] <= size[0] and 2 * s[1] <= size[1]]
    if small:
        h, w = small[0]
        log.warning(
            "%s: %d of %d image(s) at most half the model's %dx%d (e.g. %dx%d) enlarged to it; an enlarged "
            "image is smoother than the model's images and may be flagged for that alone",
            where, len(small), len(sizes), size[1], size[0], w, h,
        )  # fmt: skip


def _fit_images(k: np.ndarray, levels: int, size: tuple[int, int]) -> np.ndarray:
    """Integer images (N, C, H, W) sized to ``size`` by :func:`fit_image`, each channel at its
    own levels (a float image: no 8-bit rounding in between)."""
    from PIL import Image

    out = np.empty((len(k), k.shape[1], *size), dtype=np.int64)
    for i, image in enumerate(k):
        for c, band in enumerate(image):
            sized = np.asarray(fit_image(Image.fromarray(band.astype(np.float32), mode="F"), size))
            out[i, c] = np.clip(np.rint(sized), 0, levels - 1)
    return out


def read_images(path: str | Path, spec: DataSpec, binned: bool = False) -> tuple[torch.Tensor, list[str]]:
    """An ``.npz`` (key ``images``; ``levels`` optional), one image file, or a folder of image
    files (searched recursively, hidden ones left out, as prepare reads a class folder) ->
    images in the model's format (:func:`to_spec`), and a name for each."""
    path = Path(path)
    if path.suffix == ".npz":
        require_npz(path)
        with np.load(path, allow_pickle=False) as z:
            if "images" not in z.files:
                raise DataError(f"{path}: no 'images' key (found {sorted(z.files)})")
            levels = npz_levels(z["levels"], path) if "levels" in z.files else levels_beside(path)
            x = to_spec(z["images"], spec, levels, f"{path}['images']", binned)
        return x, [f"{path.name}[{i}]" for i in range(len(x))]
    suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        files, base = [path], path.parent
    elif path.is_dir():
        found = sorted(
            f
            for f in path.rglob("*")
            if not any(part.startswith(".") for part in f.relative_to(path).parts) and f.is_file()
        )
        files, base = [f for f in found if f.suffix.lower() in IMAGE_SUFFIXES], path
        others = [f.relative_to(path).as_posix() for f in found if f.suffix.lower() not in IMAGE_SUFFIXES]
        if others:
            npz = [path / f for f in others if f.lower().endswith(".npz")]
            give = f" (an .npz in a folder is not read: give it as PATH itself, e.g. {npz[0]})" if npz else ""
            log.warning(
                "%s: %d file(s) not scored, not images (%s): %s%s%s", path, len(others), suffixes,
                ", ".join(others[:3]), ", ..." if len(others) > 3 else "", give,
            )  # fmt: skip
    elif not path.exists():
        raise DataError(f"{path}: not found")
    else:
        raise DataError(f"{path}: not an .npz file, an image file ({suffixes}) or a folder")
    if not files:
        raise DataError(f"{path}: no image files ({suffixes})")
    arrays, sizes, kept, broken, converted = [], [], [], {}, collections.Counter()
    for f in files:
        try:
            img, how = open_image(f)  # 16-bit scaled, not clipped; floats scaled
        except DataError as e:  # one damaged file of a folder: the others scored, it named
            broken[f.relative_to(base).as_posix()] = str(e)
            continue
        if how:
            converted[how] += 1
        img = img.convert("L" if spec.channels == 1 else "RGB")
        kept.append(f)
        sizes.append((img.height, img.width))
        img = fit_image(img, (spec.height, spec.width))  # as prepare sized the training images
        a = np.asarray(img, dtype=np.uint8)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    if broken and not kept:
        raise DataError(
            next(iter(broken.values())) + ("" if len(broken) == 1 else f" (and {len(broken) - 1} more)")
        )
    if broken:
        names = list(broken)
        first = next(iter(broken.values()))
        log.warning("%s: %d unreadable image file(s) not scored: %s%s (%s)", path, len(broken),
                    ", ".join(names[:3]), ", ..." if len(names) > 3 else "", first)  # fmt: skip
    for how, n in converted.items():  # (README: "detect reads them the same way", with the warning)
        if how == "transparency":
            log.warning("%s: %d image(s) read without their transparency, as prepare reads them", path, n)
        else:
            log.warning("%s: %d %s image(s) converted to 8 bits, as prepare converts them", path, n, how)
    say_if_enlarged(str(path), sizes, (spec.height, spec.width))
    return to_spec(np.stack(arrays), spec, 256, str(path), binned), [str(f.relative_to(base)) for f in kept]


def detect(params: Params, family: str, path: str | Path, quantile: float | None = None) -> dict[str, Any]:
    """Score every image at ``path``; flag those above the calibrated threshold (``quantile``,
    default ``detect.quantile``)."""
    quantile = params.detect.quantile if quantile is None else quantile
    if not 0 < quantile < 1:
        raise ValueError(f"--quantile must be in (0, 1), got {quantile}")
    net = _model(params, family)
    x, names = read_images(path, net.spec, levels_binned(params, net))
    cal = calibrate(net, params, quantile)
    s = score(net, x)
    typ = typicality(s, cal["val"])
    t = cal["threshold"]
    # the typicality's own threshold, the same rule on the validation images' distances: an image
    # far too *likely* (a blank page, far below the digits' bits/dim) is flagged there (about 1 - q:
    # their mean is their own, so a new image is not quite exchangeable with them)
    typ_t = conformal_threshold(typicality(cal["val"], cal["val"]), quantile)[0]
    rows = [{"name": n, "bits_per_dim": float(b), "typicality": float(d), "anomaly": bool(b > t),
             "atypical": bool(d > typ_t)} for n, b, d in zip(names, s, typ, strict=True)]  # fmt: skip
    return {"family": family, "estimator": estimator(net), "threshold": t, "quantile": quantile,
            "false_alarm_rate": cal["false_alarm_rate"], "val_n": len(cal["val"]),
            "val_mean_bits_per_dim": cal["val_mean"],
            "typicality_threshold": typ_t, "n": len(rows),
            "flagged": sum(r["anomaly"] for r in rows), "atypical": sum(r["atypical"] for r in rows),
            "images": rows}  # fmt: skip


# ---------------------------------------------------------------------------- the benchmark


def corruptions(x: torch.Tensor, levels: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Test images made anomalous, from obvious to subtle (``rotated_90`` only of square images).
    ``blank`` (flat images at low intensities) and ``blurred`` are *simpler* than the data: the
    classic case where raw likelihood calls the anomaly more likely than normal data, and
    typicality helps."""
    g = torch.Generator().manual_seed(seed)
    q = lambda t: torch.round(t.clamp(0, 1) * (levels - 1)) / (levels - 1)  # noqa: E731
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    c = x.shape[1]
    blurred = torch.nn.functional.conv2d(x, kernel.expand(c, 1, 3, 3), padding=1, groups=c)
    flat = torch.rand(len(x), 1, 1, 1, generator=g) * 0.15
    sets = {
        "gaussian_noise": q(x + 0.2 * torch.randn(x.shape, generator=g)),
        "inverted": 1 - x,
        "rotated_90": torch.rot90(x, 1, dims=(2, 3)),
        "rotated_180": torch.rot90(x, 2, dims=(2, 3)),
        "blurred": q(blurred),
        "blank": q(flat.expand_as(x).clone()),
    }
    if x.shape[2] != x.shape[3]:  # a quarter turn of an image that is not square has another shape
        del sets["rotated_90"]
    return sets


def photo_patches(spec: DataSpec, n: int, seed: int = 0, binned: bool = False) -> torch.Tensor:
    """``n`` random patches of scikit-learn's sample photographs (china.jpg, flower.jpg),
    reduced to the data's size, channels and levels: natural images of another kind."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two (427, 640, 3) uint8 arrays
    rng = np.random.default_rng(seed)
    # patches at least the data's size where the photos allow it: an enlarged patch is smoother
    # than the data, flagged for that alone
    side = min(max(64, spec.height, spec.width), min(p.shape[0] for p in photos) - 1)
    patches = []
    for _ in range(n):
        img = photos[rng.integers(len(photos))]
        r, c = rng.integers(img.shape[0] - side), rng.integers(img.shape[1] - side)
        patches.append(img[r : r + side, c : c + side])
    return to_spec(np.stack(patches), spec, 256, "sklearn sample images", binned, own=False)


def background(x: torch.Tensor, spec: DataSpec) -> Background:
    return Background(spec).fit(x)


def _figures(normal: np.ndarray, s: np.ndarray, val: np.ndarray, bg_normal: np.ndarray, bg: np.ndarray,
             threshold: float) -> dict[str, Any]:  # fmt: skip
    """The three scores' detection figures, ``normal`` and ``s`` the family's bits/dim."""
    return {
        "n": len(s),
        "mean_bits_per_dim": float(s.mean()),
        "flagged": float((s > threshold).mean()),
        "likelihood": detection(normal, s),
        "typicality": detection(typicality(normal, val), typicality(s, val)),
        "likelihood_ratio": detection(normal - bg_normal, s - bg),
    }


def holdout_model(params: Params, family: str, cls: int) -> tuple[GenerativeModel, dict[str, Any]]:
    """``family`` retrained without class ``cls`` (cached in runs/evaluation/<family>/holdout/)."""
    x, y, manifest = load_split(params.data.prepared_dir, "train")
    spec = data_spec(manifest)
    if not 0 <= cls < spec.num_classes:
        raise ValueError(
            f"detect.holdout_classes: {cls} is not a class of the data (classes 0-{spec.num_classes - 1})"
        )
    cfg = TrainConfig(**{**params.train_config(family).model_dump(), **params.detect.holdout_train,
                         "exclude_classes": [cls]})  # fmt: skip
    key = variant_key(params, family, cfg, manifest, "detect")
    path = evaluation_dir(params) / family / "holdout" / f"class{cls}.json"
    if cached := cached_variant(path, key):
        return cached
    model, result = train_variant(
        params, family, x, y, spec, cfg, path,
        lambda r: {"key": key, "held_out": cls, "steps": r.steps, "train_seconds": round(r.seconds, 1)},
    )  # fmt: skip
    log.info("%s without class %d: trained in %.1f s", family, cls, result.seconds)
    return model.cpu().eval(), read_json(path)


def holdout(params: Params, family: str, cls: int) -> dict[str, Any]:
    """The held-out class's test images against the other classes' test images, under the
    family retrained without that class (threshold, typicality and background from the other
    classes' validation and training images)."""
    net, meta = holdout_model(params, family, cls)
    x, y, manifest = load_split(params.data.prepared_dir, "train")
    xv, yv, _ = load_split(params.data.prepared_dir, "val")
    xt, yt, _ = load_split(params.data.prepared_dir, "test")
    val = score(net, _some(xv[yv != cls], params, net.spec))  # each at most detect.likelihood_pixels
    bg = background(x[y != cls], net.spec)
    normal, anomalous = _some(xt[yt != cls], params, net.spec), _some(xt[yt == cls], params, net.spec)
    s_n, s_a = score(net, normal), score(net, anomalous)
    threshold = conformal_threshold(val, params.detect.quantile)[0]
    out = _figures(s_n, s_a, val, bg.bits_per_dim(normal), bg.bits_per_dim(anomalous), threshold)
    name = manifest["class_names"][cls]  # as --holdout and the grids say it
    return {**out, "normal_n": len(s_n), "val_n": len(val), "of": int((yt == cls).sum()),
            "normal_mean_bits_per_dim": float(s_n.mean()), "train_seconds": meta["train_seconds"],
            "steps": meta["steps"], "class_name": name, "label": f"held out {name}"}  # fmt: skip


def _some(x: torch.Tensor, params: Params, spec: DataSpec) -> torch.Tensor:
    """At most ``detect.likelihood_pixels`` pixels of the images ``x`` (at least 100 images): a
    seeded draw, in the split's order; all of them when they fit (or the cap is off)."""
    n = by_pixels(len(x), params.detect.likelihood_pixels, spec, 100)
    if n >= len(x):
        return x
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(params.seed))[:n]
    return x[idx.sort().values]


def benchmark(params: Params, family: str) -> dict[str, Any]:
    """AUROC / AUPR / FPR@95%TPR of the likelihood, typicality and likelihood-ratio scores:
    the test split (normal) against corrupted test images and photo patches, and each held-out
    class under a retraining without it."""
    net = _model(params, family)
    use_threads(params.threads(family))
    x_train, _, _ = load_split(params.data.prepared_dir, "train")
    xt, _, _ = load_split(params.data.prepared_dir, "test")
    n_test = len(xt)
    xt = _some(xt, params, net.spec)  # and each set made from them
    q = params.detect.quantile
    cal = calibrate(net, params, q, limit=True)
    normal = score(net, xt)
    bg = background(x_train, net.spec)
    bg_normal = bg.bits_per_dim(xt)
    sets = {
        **corruptions(xt, net.spec.levels, params.seed),
        "photo_patches": photo_patches(net.spec, len(xt), params.seed, levels_binned(params, net)),
    }
    out: dict[str, Any] = {
        "family": family,
        "estimator": estimator(net),
        "normal": {
            "set": "test split",
            "n": len(xt),
            "of": n_test,
            "val_n": len(cal["val"]),
            "mean_bits_per_dim": float(normal.mean()),
        },  # fmt: skip
        "quantile": q,
        "threshold": cal["threshold"],
        "false_alarm_rate": cal["false_alarm_rate"],  # at most, for normal images (split conformal)
        "background": {
            "model": "position-free histogram of pixel levels (training split)",
            "test_mean_bits_per_dim": float(bg_normal.mean()),
        },
        "sets": {},
    }
    for name, x in sets.items():
        s = score(net, x)
        out["sets"][name] = _figures(normal, s, cal["val"], bg_normal, bg.bits_per_dim(x), cal["threshold"])
    for cls in params.detect.holdout_classes:
        out["sets"][f"held_out_class_{cls}"] = holdout(params, family, cls)
    return out


def benchmark_path(params: Params, family: str) -> Path:
    return evaluation_dir(params) / family / "anomaly.json"


def run_benchmark(params: Params, family: str) -> dict[str, Any]:
    """``benchmark`` written to runs/evaluation/<family>/anomaly.json; skipped when the model,
    data, params and code are unchanged."""
    path = benchmark_path(params, family)
    manifest = read_manifest(params.data.prepared_dir)
    for cls in params.detect.holdout_classes:  # said before any set is scored, not after them
        if not 0 <= cls < manifest["num_classes"]:
            raise ValueError(f"detect.holdout_classes: {cls} is not a class of the data (classes 0-"
                             f"{manifest['num_classes'] - 1})")  # fmt: skip
    weights = family_dir(params, params.require(family)) / "model.safetensors"
    if not weights.is_file():
        if not weights.with_name("model.json").exists():
            _model(params, family)  # not trained: its own message
        raise FileNotFoundError(f"{weights}: missing (`genzoo status`: incomplete); train {family} again")
    model = sha256_file(weights)
    key = fingerprint({
        "model": model,
        "data": data_hash(manifest), "detect": params.detect.model_dump(mode="json"),
        "family": params.family_block(family), "code": code_hash("detect", family),
    })[:16]  # fmt: skip
    done = read_json(path)
    if done and done.get("key") == key:
        return done
    result = {"key": key, "data_sha256": data_hash(manifest), "model_sha256": model}
    result |= benchmark(params, family)
    atomic_write_text(path, json.dumps(result, indent=2))
    # the AUROC/AUPR/FPR figures (anomaly.<set>.<score>.<figure>) and anomaly.json
    tracking.log_stage(params, family, result["sets"], prefix="anomaly.", artifact=path)
    return result


def main(argv: list[str] | None = None) -> None:
    params, family = stage_args(
        argv, "Anomaly-detection benchmark of one family (runs/evaluation/F/anomaly.json)", "family"
    )
    with exclusive(params.run.runs_dir):
        run_benchmark(params, family)
    print(benchmark_path(params, family))


if __name__ == "__main__":
    sys.exit(exit_code(main, "detect"))
