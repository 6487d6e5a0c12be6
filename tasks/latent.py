"""Latent space: interpolation, class arithmetic and a smoothness figure.

- **Interpolation** (linear and spherical) between two real images, encoded by the VAE
  (posterior mean), the flow (its exact inverse) or DDIM inversion (DDPM), then decoded along
  the path; the GAN has no encoder, so its paths run between two latent codes drawn from the
  prior. The models are class-conditional: a path decodes with the first image's label up to
  the middle and the second's after it (same-class pairs keep one label throughout).
- **Class arithmetic**: an image's code moved from its class mean toward another class's
  (``z + t (mean_to - mean_from)``, decoded with the target label from the middle on), and the
  same code decoded under every label ("the same hand, every digit").
- **Smoothness**: along paths between same-class test pairs, the steps between consecutive
  images in the evaluator's feature space: the mean step (also relative to the typical
  nearest-neighbour distance of real test images), the path length over the straight
  distance (1 = no detour), and the largest step over the mean one (1 = no jump).

PixelCNN has no latent space (autoregressive): :func:`latent_kind` says so and the figures
are None. ``evaluate@<family>`` stores the strips in ``runs/evaluation/<family>/latent.npz``
and the figures in ``quality.json``; ``genzoo interpolate`` and ``genzoo arithmetic`` draw
them for any pair or image.
"""

from __future__ import annotations

import hashlib
import io
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from genzoo.metrics.quality import nearest
from genzoo.models.base import Decoder, Encoder, atomic_write, families_with, sha256_file

MODES = ("linear", "spherical")


def latent_kind(model) -> str | None:
    """ "encoder" (images -> codes -> images), "decoder" (codes -> images: the GAN), or None."""
    if isinstance(model, Encoder) and isinstance(model, Decoder):
        return "encoder"
    if isinstance(model, Decoder):
        return "decoder"
    return None


def _need(model, kind: str = "decoder") -> None:
    have = latent_kind(model)
    if have is None or (kind == "encoder" and have != "encoder"):
        need = (Encoder, Decoder) if kind == "encoder" else (Decoder,)
        what = (
            f"{'an encoder' if kind == 'encoder' else 'a latent space'} ({', '.join(families_with(*need))})"
        )
        has = {"decoder": "a decoder only (codes -> images), no encoder", None: "none (no encode or decode)"}
        raise ValueError(f"{model.family}: {what} is needed; {model.family} has {has[have]}")


def lerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    return (1 - t) * a + t * b


def slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation of each row pair (the arc between them; linear when parallel).
    Keeps the norm of Gaussian codes typical, where the linear midpoint is too short."""
    fa, fb = a.flatten(1), b.flatten(1)
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp(min=1e-12)
    omega = torch.acos(cos.clamp(-1, 1))[:, None]
    so = torch.sin(omega)
    out = torch.where(
        so.abs() < 1e-6,
        lerp(fa, fb, t),
        torch.sin((1 - t) * omega) / so * fa + torch.sin(t * omega) / so * fb,
    )
    return out.view_as(a)


@torch.inference_mode()
def paths(model, za: Tensor, zb: Tensor, ya: Tensor, yb: Tensor, steps: int, mode: str) -> Tensor:
    """``steps`` images decoded along the path from each code of ``za`` to the same row of
    ``zb`` ((P, ...) each; labels ``ya``, ``yb``: (P,)), all P paths in one batch:
    (P, steps, C, H, W)."""
    if mode not in MODES:
        raise ValueError(f"mode: {mode!r}, expected one of {', '.join(MODES)}")
    if steps < 2:
        raise ValueError(f"steps: at least 2 (the two ends), got {steps}")
    ts = torch.linspace(0, 1, steps).tolist()
    mix = lerp if mode == "linear" else slerp
    z = torch.stack([mix(za, zb, t) for t in ts], 1).flatten(0, 1)  # (P steps, ...)
    y = torch.stack([ya if t < 0.5 else yb for t in ts], 1).flatten()  # (P steps,)
    return decode(model, z, y).unflatten(0, (len(za), steps))


@torch.inference_mode()
def _batched(fn, a: Tensor, y: Tensor, device, batch: int = 256) -> Tensor:
    """``fn(a, y)`` over ``batch`` rows at a time on ``device``; the results on the CPU."""
    return torch.cat(
        [
            fn(ab.to(device), yb.to(device)).float().cpu()
            for ab, yb in zip(a.split(batch), y.split(batch), strict=True)
        ]
    )


def code_shape(model) -> tuple[int, ...]:
    """The shape of one code of ``model``'s latent space: its ``code_shape`` where it has one
    ((C, H, W) for DDPM: x_T), else (latent_dim,) (the VAE and the GAN), else (C H W,) (the flow:
    its standardised latent, every scale's share)."""
    _need(model)
    if (shape := getattr(model, "code_shape", None)) is not None:  # an attribute or a property
        return tuple(shape() if callable(shape) else shape)
    return (model.cfg.latent_dim,) if hasattr(model.cfg, "latent_dim") else (model.spec.dims,)


def check_codes(model, z: Tensor, y: Tensor) -> None:
    """Refuse, naming it, what ``decode`` cannot take: codes not of :func:`code_shape`, NaN or
    inf values, labels that are not one class index per code."""
    want = code_shape(model)
    if z.ndim != len(want) + 1 or tuple(z.shape[1:]) != want:
        raise ValueError(
            f"{model.family}: codes must have shape (N, {', '.join(map(str, want))}), got {tuple(z.shape)}"
        )
    if not torch.isfinite(z).all():
        raise ValueError(f"{model.family}: codes hold NaN or inf values")
    k = model.spec.num_classes
    if tuple(y.shape) != (len(z),) or y.is_floating_point():
        raise ValueError(
            f"labels must be one class index in [0, {k}) per code, got shape {tuple(y.shape)} ({y.dtype})"
        )
    if (y < 0).any() or (y >= k).any():
        bad = int(y[(y < 0) | (y >= k)][0])
        raise ValueError(f"labels must be class indices in [0, {k}), got {bad}")


def check_decoded(model, images: Tensor, z: Tensor | None = None) -> None:
    """Refuse images that codes so far outside the prior made the network overflow (NaN or
    values outside [0, 1]): an error naming the first, never NaN images handed on as if they
    were some."""
    bad = ~((images >= 0) & (images <= 1)).flatten(1).all(1)  # NaN fails both
    if bad.any():
        rows = bad.nonzero().flatten().tolist()
        size = "" if z is None else f", its largest |value| {z[rows[0]].abs().max().item():.3g}"
        raise ValueError(
            f"{model.family}: {len(rows)} of {len(images)} codes decode to no image (the network "
            f"overflows; the first: code {rows[0]}{size}): they lie far outside the prior, whose codes "
            "are of size about 1"
        )


def decode(model, z: Tensor, y: Tensor, batch: int = 256) -> Tensor:
    """Images of the codes ``z`` under labels ``y``, ``batch`` codes per pass, on the CPU
    (the public API checks codes and images around it: :func:`check_codes`,
    :func:`check_decoded`)."""
    return _batched(model.decode, z, y, model.device, batch)


def path(model, za: Tensor, zb: Tensor, ya: int, yb: int, steps: int, mode: str) -> Tensor:
    """``steps`` images decoded along the path from code ``za`` to ``zb`` (each (1, ...))."""
    return paths(model, za, zb, torch.tensor([ya]), torch.tensor([yb]), steps, mode)[0]


def encode(model, x: Tensor, y: Tensor, batch: int = 256) -> Tensor:
    """Codes of the images ``x`` under their labels ``y``, ``batch`` images per pass, on the
    CPU (the whole set checked first, so an error names an image's index in ``x``)."""
    _need(model, "encoder")
    model.check_inputs(x, y)
    return _batched(model.encode, x, y, model.device, batch)


Pair = tuple[Tensor, int]  # (image, label)


def interpolate(model, a: Pair | None, b: Pair | None, steps: int = 9, mode: str = "spherical",
                seed: int = 0, labels: tuple[int, int] = (0, 0)) -> Tensor:  # fmt: skip
    """Images along the path between two real images ``a`` and ``b`` ((image, label) each:
    encoded), or, for a model without an encoder (or ``a`` None), between two codes from the
    prior (seeded) decoded with ``labels``."""
    _need(model)
    if a is not None and b is not None and latent_kind(model) == "encoder":
        (xa, ya), (xb, yb) = a, b
        z = encode(model, torch.stack([xa, xb]), torch.tensor([ya, yb]))
        return path(model, z[:1], z[1:], ya, yb, steps, mode)
    za, zb = prior_pair(model, seed)
    return path(model, za, zb, labels[0], labels[1], steps, mode)


def seeded_class(model, seed: int) -> int:
    """A class ``seed`` picks among those the model was trained on (one left out of its training,
    ``exclude_classes``, is drawn only when asked for, with a warning)."""
    drawn = torch.isfinite(model.log_class_prior).nonzero().flatten()
    return int(drawn[np.random.default_rng(seed).integers(len(drawn))])


def prior_pair(model, seed: int) -> tuple[Tensor, Tensor]:
    """Two codes drawn from the prior (seeded), (1, ...) each: as the model samples them (the
    GAN's ``truncation`` too: its strips ran between codes its samples never have)."""
    g = torch.Generator().manual_seed(seed)
    if hasattr(model, "prior_codes"):
        z = model.prior_codes(2, g)
        return z[:1], z[1:]
    shape = code_shape(model)
    z = torch.randn(2, math.prod(shape), generator=g).view(2, *shape)
    return z[:1], z[1:]


MEAN_IMAGES = 100  # a class's mean code is taken over its first N images of the split


def mean_images(y: Tensor, per_class: int = MEAN_IMAGES) -> np.ndarray:
    """Indices of the images each class mean is taken over: the first ``per_class`` of each
    class (all of them in a split as small as digits' test split), in order."""
    labels = y.numpy()
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]))


def means_of(z: Tensor, y: Tensor) -> dict[int, Tensor]:
    """Mean code of every class, from codes ``z`` (N, ...) of images labelled ``y`` (N,)."""
    return {int(c): z[y == c].mean(0, keepdim=True) for c in torch.unique(y)}


def class_means(model, x: Tensor, y: Tensor) -> dict[int, Tensor]:
    """Mean code of every class (images encoded under their own labels; at most
    ``MEAN_IMAGES`` of each class)."""
    idx = torch.from_numpy(mean_images(y))
    return means_of(encode(model, x[idx], y[idx]), y[idx])


@torch.inference_mode()
def _arithmetic(model, z: Tensor, y: Tensor, to: Tensor, means: dict[int, Tensor], steps: int):
    """Codes ``z`` (B, ...) of images of classes ``y`` moved toward classes ``to`` ((B,) each):
    (B, steps, C, H, W), and each code under every label: (B, K, C, H, W)."""
    shift = torch.cat([means[t] - means[c] for c, t in zip(y.tolist(), to.tolist(), strict=True)])
    toward = paths(model, z, z + shift, y, to, steps, "linear")
    k = model.spec.num_classes
    every = decode(model, z.repeat_interleave(k, 0), torch.arange(k).repeat(len(z)))
    return toward, every.unflatten(0, (len(z), k))


def arithmetic(
    model, x: Tensor, y: int, to: int, means: dict[int, Tensor], steps: int = 7
) -> dict[str, Tensor]:
    """``toward``: the image's code moved from its class mean to ``to``'s (t = 0..1), decoded
    with the target label from the middle on; ``every_label``: the code under each label."""
    if to not in means or y not in means:
        raise ValueError(f"class {to if to not in means else y}: not among the classes ({sorted(means)})")
    z = encode(model, x[None], torch.tensor([y]))
    toward, every = _arithmetic(model, z, torch.tensor([y]), torch.tensor([to]), means, steps)
    return {"toward": toward[0], "every_label": every[0]}


@torch.inference_mode()
def smoothness(net, paths: list[Tensor], real_features: np.ndarray | None = None) -> dict[str, float]:
    """Feature-space steps along ``paths`` (each (steps, C, H, W)) under the evaluator ``net``."""
    steps, ratios, jumps = [], [], []
    for p in paths:
        f, _ = net.embed(p)
        d = (f[1:] - f[:-1]).norm(dim=1)
        steps.append(d)
        ratios.append(float(d.sum() / (f[-1] - f[0]).norm().clamp(min=1e-12)))
        jumps.append(float(d.max() / d.mean().clamp(min=1e-12)))
    mean_step = float(torch.cat(steps).mean())
    out = {
        "mean_step": mean_step,
        "path_ratio": float(np.mean(ratios)),
        "max_step_ratio": float(np.mean(jumps)),
    }
    if real_features is not None and len(real_features) > 1:
        out["real_nn_distance"] = float(np.median(nearest(real_features, real_features, exclude_self=True)))
        out["mean_step_over_real_nn"] = mean_step / out["real_nn_distance"]
    return out


class NoPairs(ValueError):
    """No class of the split has two images: no same-class pair to run a path between."""


def same_class_pairs(y: Tensor, n: int, seed: int) -> list[tuple[int, int]]:
    """``n`` pairs of distinct images of the same class, the classes holding two or more taken in
    turn from a seeded one (a class of one image failed the whole evaluation; the first pair was
    class 0's whatever the seed)."""
    rng = np.random.default_rng(seed)
    labels = y.numpy()
    classes, counts = np.unique(labels, return_counts=True)
    classes = classes[counts >= 2]
    if not len(classes):
        raise NoPairs("no class has two images in the split: no same-class pair to interpolate between")
    start = int(rng.integers(len(classes)))
    pairs = []
    for i in range(n):
        idx = np.flatnonzero(labels == classes[(start + i) % len(classes)])
        a, b = rng.choice(idx, 2, replace=False)
        pairs.append((int(a), int(b)))
    return pairs


Figures = tuple[dict[str, Any] | None, dict[str, np.ndarray]]


def figures(model, net, x: Tensor, y: Tensor, real_features: np.ndarray | None, *, pairs: int = 10,
            steps: int = 9, seed: int = 0) -> Figures:  # fmt: skip
    """The evaluation's latent figures: smoothness per mode over ``pairs`` same-class test
    pairs (prior codes for the GAN), the strips of those paths, and, with an encoder, class
    arithmetic for the first image of each class toward the next class. (None, {}) without a
    latent space. Each image is encoded once (the pairs' ends, the class means' images and the
    arithmetic's first images in one pass), and each mode's paths decode in one batch."""
    kind = latent_kind(model)
    if kind is None:
        return None, {}
    chosen = same_class_pairs(y, pairs, seed)
    a, b = (torch.tensor(ends) for ends in zip(*chosen, strict=True))  # (pairs,) each
    if kind == "encoder":
        k = model.spec.num_classes
        firsts = torch.tensor([int(np.flatnonzero(y.numpy() == c)[0]) for c in range(k)])  # arithmetic's
        means_idx = mean_images(y)
        idx = torch.from_numpy(np.union1d(means_idx, torch.cat([a, b, firsts]).numpy()))
        codes = encode(model, x[idx], y[idx])
        z = torch.zeros(len(x), *codes.shape[1:])  # (N, ...): the encoded images' rows filled
        z[idx] = codes
        za, zb, ya, yb = z[a], z[b], y[a], y[b]
    else:  # the GAN: two prior codes per pair, decoded with the pair's class
        za, zb = (
            torch.cat(codes)
            for codes in zip(*[prior_pair(model, seed + i) for i in range(pairs)], strict=True)
        )
        ya = yb = y[a]
    strips: dict[str, np.ndarray] = {}
    summary: dict[str, Any] = {"kind": kind, "pairs": pairs, "steps": steps, "smoothness": {}}
    for mode in MODES:
        walks = paths(model, za, zb, ya, yb, steps, mode)  # (pairs, steps, C, H, W)
        summary["smoothness"][mode] = smoothness(net, list(walks), real_features)
        if kind == "encoder":  # the real images at the ends
            walks = torch.cat([x[a][:, None], walks, x[b][:, None]], 1)
        strips[mode] = walks.numpy()  # (pairs, steps [+ 2 real ends], C, H, W)
    if kind == "encoder":
        means = means_of(z[means_idx], y[means_idx])
        toward, every = _arithmetic(model, z[firsts], y[firsts], (y[firsts] + 1) % k, means, steps)
        real = x[firsts][:, None]
        strips["arithmetic"] = torch.cat([real, toward], 1).numpy()  # real, then class c -> c + 1
        strips["every_label"] = torch.cat([real, every], 1).numpy()  # real, then its code under labels 0..k-1
    return summary, strips


def save_strips(path: Path, strips: dict[str, np.ndarray], reason: str | None = None,
                key: str | None = None) -> None:  # fmt: skip
    """``latent.npz``: the strips (images in [0, 1]), or only the reason there are none, and the
    evaluation's ``key`` (the report shows only the strips of the figures beside them)."""
    buf = io.BytesIO()
    extra = {"reason": np.array(reason)} if reason else {}
    np.savez_compressed(buf, **strips, **extra, **({"key": np.array(key)} if key else {}))
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


# ----------------------------------------------------------------------------- the command line


def _load(params, family: str, split: str):
    """``family``'s model, the prepared ``split`` (images, labels) and its manifest."""
    from genzoo.tasks.data import load_split
    from genzoo.tasks.layout import require_trained
    from genzoo.tasks.sample import load_model

    require_trained(params, family)
    model = load_model(family, params.run.runs_dir)
    x, y, manifest = load_split(params.data.prepared_dir, split)
    return model, x, y, manifest


def _same_data(params, family: str, model, manifest: dict) -> None:
    """Refuse to encode the prepared images with a model trained on other data (its model.json's
    hash): its codes of images it never saw say nothing of what it learned. (The GAN's strips
    run between codes of its prior: no image of the split is used.)"""
    from genzoo.tasks.data import check_trained_on

    check_trained_on(family, getattr(model, "data_sha256", None), manifest, params.data.prepared_dir,
                     "its codes of these images would say nothing of what it learned")  # fmt: skip


def _index(i: int, n: int, what: str) -> int:
    if not 0 <= i < n:
        raise ValueError(f"{what}: {i} is not an image index of the split (0..{n - 1})")
    return i


def _class(params, model, cls: int | str | None, flag: str) -> int | None:
    """A class by name (the model's class names) or index, as `genzoo sample --class` takes it."""
    from genzoo.tasks.sample import class_names, resolve_class

    return resolve_class(model, cls, class_names(params.data.prepared_dir, model), flag)


def _outputs(out: str | Path) -> tuple[Path, Path]:
    """``out``.png and ``out``.npz, checked before any work: each replaces only an earlier
    strip's (an npz of strips, and the png whose sha256 it records), never a user's file of
    that name."""
    from genzoo.tasks.errors import check_output_files

    out = Path(out)
    out = out.with_suffix("") if out.suffix in (".png", ".npz") else out
    png, npz = out.with_name(out.name + ".png"), out.with_name(out.name + ".npz")
    recorded: str | None = None
    try:
        names = set(zipfile.ZipFile(npz).namelist())
        ours = not npz.is_symlink() and names in (STRIP_FILES, STRIP_FILES - {"png_sha256.npy"})
        if ours and "png_sha256.npy" in names:
            with np.load(npz, allow_pickle=False) as z:
                recorded = str(z["png_sha256"])
    except (OSError, ValueError, zipfile.BadZipFile):
        ours = False
    what = "a strip of genzoo interpolate or arithmetic"
    check_output_files([npz], ours, f"{what} (an .npz of strips)")
    # its png: only the one the strip records (an older strip records none: remove its png)
    png_ours = ours and recorded is not None and png.is_file() and sha256_file(png) == recorded
    whose = f"the .png its {npz.name} records" if npz.exists() else f"no {npz.name} beside it says it is one"
    check_output_files([png], png_ours, f"{what} ({whose})")
    return png, npz


STRIP_FILES = {"lengths.npy", "rows.npy", "strips.npy", "png_sha256.npy"}


def _write(out: str | Path, rows: list[Tensor], names: list[str]) -> tuple[Path, Path]:
    """``out``.npz: ``strips`` (rows, width, C, H, W; a shorter row padded with grey), ``rows``
    (each row's name), ``lengths`` (its images before the padding) and ``png_sha256``; then
    ``out``.png (one row per strip)."""
    from genzoo.tasks.figures import grid

    out = Path(out)
    out = out.with_suffix("") if out.suffix in (".png", ".npz") else out
    width = max(len(r) for r in rows)
    padded = torch.stack([torch.cat([r, torch.full((width - len(r), *r.shape[1:]), 0.5)]) for r in rows])
    image = io.BytesIO()
    grid(padded.flatten(0, 1), nrow=width).save(image, format="PNG")
    buf = io.BytesIO()
    np.savez_compressed(
        buf, strips=padded.numpy(), rows=np.array(names), lengths=np.array([len(r) for r in rows]),
        png_sha256=np.array(hashlib.sha256(image.getvalue()).hexdigest()),
    )  # fmt: skip
    png, npz = out.with_name(out.name + ".png"), out.with_name(out.name + ".npz")
    atomic_write(npz, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))  # first: it vouches for the png
    atomic_write(png, lambda tmp: Path(tmp).write_bytes(image.getvalue()))
    return png, npz


MAX_STEPS = 1000  # images along a strip's path: more makes a PNG no viewer opens (Pillow refuses 100,000)


def _check_steps(steps: int, ends: str) -> None:
    """The commands' ``--steps``: at least the path's two ends, at most :data:`MAX_STEPS`."""
    if steps < 2:
        raise ValueError(f"--steps {steps}: at least 2 ({ends})")
    if steps > MAX_STEPS:
        raise ValueError(f"--steps {steps}: at most {MAX_STEPS} (rows of about {steps:,} images make a PNG "
                         "too large for most viewers to open)")  # fmt: skip


def _check_png(steps: int, extra: int, rows: int, shape, wide: int = 0) -> None:
    """``--steps`` against the image size: the strip's PNG (``rows`` rows of ``steps + extra``
    images of ``shape``, or of ``wide`` where more: arithmetic's row under every label) within what
    Pillow opens (above twice ``MAX_IMAGE_PIXELS`` it refuses the file as a decompression bomb;
    above once, it warns)."""
    from PIL import Image

    from genzoo.tasks.figures import grid_pixels

    h, w = shape[-2:]
    limit = 2 * Image.MAX_IMAGE_PIXELS
    pixels = grid_pixels(rows, max(steps + extra, wide), h, w)
    if pixels <= limit:
        return
    if grid_pixels(rows, wide, h, w) > limit:
        raise ValueError(
            f"images of {h}x{w} in {wide - 1} classes: the row under every label makes a PNG of "
            f"{grid_pixels(rows, wide, h, w):,} pixels, more than the {limit:,} Pillow opens"
        )
    fits = (k for k in range(steps - 1, 1, -1) if grid_pixels(rows, max(k + extra, wide), h, w) <= limit)
    most = next(fits, None)
    if most is None:
        raise ValueError(f"images of {h}x{w}: even a strip of 2 steps makes a PNG of more than the {limit:,} "
                         "pixels Pillow opens")  # fmt: skip
    raise ValueError(
        f"--steps {steps}: at most {most} for images of {h}x{w} (a PNG of {pixels:,} pixels, more than "
        f"the {limit:,} Pillow opens)"
    )


def interpolate_to_file(params, family: str, out: str | Path, *, a: int | None = None, b: int | None = None,
                        cls: int | str | None = None, steps: int = 9, modes: tuple[str, ...] = MODES,
                        seed: int = 0, split: str = "test") -> dict[str, Any]:  # fmt: skip
    """One strip per mode between test images ``a`` and ``b`` (default: a seeded same-class
    pair, of class ``cls`` if given); the GAN's between two prior codes of class ``cls``.
    Writes ``out``.png (rows: modes) and ``out``.npz."""
    _check_steps(steps, "the decoded path's two ends: the two images' codes (the GAN's: two prior codes) "
                 "decoded, the real images beside them")  # fmt: skip
    _outputs(out)
    model, x, y, manifest = _load(params, family, split)
    _need(model)
    _check_png(steps, 2 if latent_kind(model) == "encoder" else 0, len(modes), model.spec.shape)
    cls = _class(params, model, cls, "--class")
    if latent_kind(model) == "encoder":
        _same_data(params, family, model, manifest)
        if (a is None) != (b is None):
            raise ValueError("--a and --b: give both image indices, or neither (a same-class pair is drawn)")
        if a is not None and cls is not None:  # the images' own labels decide the ends
            raise ValueError("--class picks the pair drawn without --a and --b; give one or the other")
        if a is None:
            idx = torch.arange(len(y)) if cls is None else torch.nonzero(y == cls).flatten()
            if len(idx) < 2:
                raise ValueError(f"--class {cls}: fewer than 2 images of this class in the {split} split")
            pa, pb = same_class_pairs(y[idx], 1, seed)[0]
            a, b = int(idx[pa]), int(idx[pb])
        a, b = _index(a, len(y), "--a"), _index(b, len(y), "--b")
        rows = [torch.cat([x[a][None], interpolate(model, (x[a], int(y[a])), (x[b], int(y[b])), steps, m),
                           x[b][None]]) for m in modes]  # fmt: skip
        ends = {"a": a, "b": b, "labels": [int(y[a]), int(y[b])]}
    else:
        if a is not None or b is not None:  # nothing encodes a real image into its latent space
            raise ValueError(
                f"--a/--b: {family} has no encoder ({', '.join(families_with(Encoder, Decoder))} have one): "
                "its strip runs between two codes from its prior, chosen by --seed and --class"
            )
        c = seeded_class(model, seed) if cls is None else cls
        rows = [interpolate(model, None, None, steps, m, seed=seed, labels=(c, c)) for m in modes]
        ends = {"seed": seed, "labels": [c, c]}
    png, npz = _write(out, rows, list(modes))
    return {"family": family, "png": str(png), "npz": str(npz), "modes": list(modes), "steps": steps, **ends}


def arithmetic_to_file(params, family: str, index: int, to: int | str, out: str | Path, *, steps: int = 7,
                       split: str = "test") -> dict[str, Any]:  # fmt: skip
    """Test image ``index``'s code moved from its class mean toward class ``to``'s (row 1), and
    decoded under every label (row 2); the real image first in each row."""
    _check_steps(steps, "the two ends of the path toward the class")
    _outputs(out)
    model, x, y, manifest = _load(params, family, split)
    _need(model, "encoder")
    _check_png(steps, 1, 2, model.spec.shape, wide=model.spec.num_classes + 1)
    _same_data(params, family, model, manifest)
    i = _index(index, len(y), "--index")
    to = _class(params, model, to, "--to")
    r = arithmetic(model, x[i], int(y[i]), to, class_means(model, x, y), steps)
    rows = [torch.cat([x[i][None], r["toward"]]), torch.cat([x[i][None], r["every_label"]])]
    png, npz = _write(out, rows, ["toward", "every_label"])
    return {"family": family, "png": str(png), "npz": str(npz), "index": i, "from": int(y[i]), "to": to}
