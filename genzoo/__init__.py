"""genzoo: train, compare and use every family of deep generative model on image data.

The public API, what a downstream project imports (stable within a minor version; everything
under ``genzoo.models``, ``genzoo.tasks``, ``genzoo.metrics`` and ``genzoo.flows`` is genzoo's
own machinery and may change)::

    import genzoo

    synthetic = genzoo.load_dataset("data/augment/synthetic")        # a torch Dataset
    train = genzoo.mix(genzoo.real_dataset("data/prepared"), synthetic, ratio=0.1)

    model = genzoo.load_model("vae", runs_dir="runs")                 # or PATH/model.json, models:/vae/3
    images, labels = genzoo.sample(model, 64, label=7, seed=0)       # (64, C, H, W) in [0, 1], (64,)
    bpd = genzoo.bits_per_dim(model, images)                          # (64,): higher is less likely
    codes = genzoo.encode(model, images, labels)                      # (64, 16): the VAE's posterior means
    strip = genzoo.interpolate(model, codes[0], codes[1], labels=(7, 7))  # (9, C, H, W), decoded

Importing ``genzoo`` is cheap: torch and the rest load on the first call.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset, TensorDataset

    from genzoo.models.base import GenerativeModel
    from genzoo.tasks.augment import SyntheticDataset

try:
    __version__ = version("genzoo")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "__version__",
    "bits_per_dim",
    "decode",
    "encode",
    "families",
    "interpolate",
    "load_dataset",
    "load_model",
    "mix",
    "real_dataset",
    "sample",
]


def families() -> tuple[str, ...]:
    """The registered model families.

    Returns:
        Family names (``"pixelcnn"``, ``"realnvp"``, ``"vae"``, ``"gan"``, ``"ddpm"``), each the
        key of its block in params.yaml, its DVC stage suffix and its MLflow registered model.
    """
    from genzoo.models import FAMILIES

    return FAMILIES


def load_dataset(
    name_or_path: str | Path, root: str | Path = "data/augment", verify: bool = True, targets: str = "label"
) -> SyntheticDataset:
    """A labelled synthetic dataset written by ``genzoo augment`` (or pulled with DVC).

    Args:
        name_or_path: the dataset's folder, or its name under ``root``.
        root: where named datasets live (``augment.out_dir`` in params.yaml).
        verify: check ``images.npz`` against the sha256 in its ``manifest.json``.
        targets: ``"label"`` (items ``(image, int)``) or ``"soft"`` (items ``(image, float32 (K,))``:
            the recipe's soft labels, one-hot where it made none; what a recipe with a teacher
            trains on: ``torch.nn.functional.cross_entropy`` takes them as they are).

    Returns:
        A ``torch.utils.data.Dataset`` of ``(image, label)``: image float32 ``(C, H, W)`` in
        [0, 1], label an int; ``.manifest`` holds what made it, ``.source`` each image's family
        (or ``"real"``), ``.is_synthetic`` a bool per image, ``.soft_labels`` an ``(N, K)``
        tensor of class probabilities or None, ``.class_names`` the names of the classes.
        Datasets written before these existed load too (every image synthetic, no soft labels).

    Raises:
        FileNotFoundError: the folder holds no genzoo dataset.
        ValueError: the images do not match the manifest's hash.
    """
    from genzoo.tasks.augment import load_dataset as _load

    return _load(name_or_path, root, verify, targets)


def real_dataset(
    prepared_dir: str | Path = "data/prepared", split: str = "train", targets: str = "label"
) -> TensorDataset:
    """A split of the prepared real data, in the same item format as :func:`load_dataset`.

    Args:
        prepared_dir: the folder ``genzoo prepare`` wrote (``data.prepared_dir``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        targets: ``"label"`` or ``"soft"`` (one-hot class probabilities, to mix with a synthetic
            dataset loaded with ``targets="soft"``).

    Returns:
        A ``TensorDataset`` of ``(image float32 (C, H, W) in [0, 1], label int)``: the item
        format of :func:`load_dataset` (and torchvision's), so :func:`mix` of the two batches
        through a ``DataLoader``.
    """
    from genzoo.tasks.augment import real_dataset as _real
    from genzoo.tasks.data import DataError

    if split not in ("train", "val", "test"):
        raise ValueError(f"split: {split!r}, expected one of 'train', 'val', 'test'")
    try:
        return _real(prepared_dir, split, targets)
    except DataError as e:  # not there: maybe only not from here
        raise _from_here(e, prepared_dir, "prepared_dir=the project's data/prepared folder") from None


def mix(real: Dataset, synthetic: Dataset, ratio: float, seed: int = 0) -> Dataset:
    """Real data plus a share of synthetic data, for training a classifier.

    Args:
        real: the real training set.
        synthetic: a synthetic dataset (:func:`load_dataset`).
        ratio: synthetic items per real one (1.0: as many synthetic as real).
        seed: which synthetic items are drawn (without replacement).

    Returns:
        A ``ConcatDataset`` of ``real`` and ``round(ratio * len(real))`` synthetic items.

    Raises:
        ValueError: a negative ratio, or more synthetic items asked for than exist.
    """
    from genzoo.tasks.augment import mix as _mix

    return _mix(real, synthetic, ratio, seed)


def load_model(
    ref: str | Path,
    runs_dir: str | Path = "runs",
    device: str | torch.device = "cpu",
    *,
    allow_unhashed: bool = False,
) -> GenerativeModel:
    """A trained generative model.

    Args:
        ref: a family name (its model in ``runs_dir/<family>/``), a ``model.json`` written by
            genzoo (or its folder), or a registered MLflow version ``models:/<family>/<version>``
            (or ``/latest``, ``@<alias>``; read from the tracking server that ``MLFLOW_TRACKING_URI`` names).
        runs_dir: where the pipeline wrote its models (``run.runs_dir``).
        device: where to put the weights.
        allow_unhashed: load a ``model.json`` that records no sha256 of its weights (by
            default that is an error: the weights could have been changed unnoticed).

    Returns:
        The model in eval mode; ``model.family`` names its family, ``model.spec`` its image
        shape, levels and number of classes, ``model.class_names`` its classes' names (None
        for a model trained before they were kept), ``model.data_sha256`` the hash of the
        prepared data it was trained on.

    Raises:
        FileNotFoundError: no model there.
        ValueError: the weights do not match the hash in ``model.json``, or it records none
            (without ``allow_unhashed``).
    """
    from genzoo.tasks.sample import load_model as _load

    if not isinstance(ref, str | Path):  # (a model already loaded, say)
        raise TypeError(f"ref: a family name, a model.json path or models:/..., got {type(ref).__name__}")
    from genzoo.tasks.errors import ModelNotFound

    quiet = str(ref).startswith("models:/") and "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ
    if quiet:  # MLflow's download bars, from a library call amid the caller's own output
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        return _load(ref, runs_dir, device, allow_unhashed=allow_unhashed)
    except ModelNotFound as e:  # not there: maybe only not from here
        if str(ref).startswith("models:/") or "no such family" in str(e):
            raise
        where = runs_dir if str(ref) in families() else Path(ref).parent
        raise _from_here(e, where, "runs_dir=the project's runs folder" if where is runs_dir else
                         "ref=an absolute path") from None  # fmt: skip
    finally:
        if quiet:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)


def _from_here(e: Exception, path: str | Path, give: str) -> Exception:
    """``e`` (a file not found under ``path``), saying that a relative ``path`` was read from the
    working directory when that is likely the cause (``path`` is not there and the working
    directory holds no params.yaml: not a genzoo project): a script run from another folder than
    the project's is told so, not only to train or prepare again."""
    if Path(path).is_absolute() or Path(path).exists() or Path("params.yaml").exists():
        return e
    return type(e)(
        f"{e} (relative paths are read from the working directory, {Path.cwd()}: give {give}, "
        "or run from the project's folder)"
    )


def sample(
    model: GenerativeModel, n: int, *, label: int | None = None, seed: int = 0, batch: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw labelled images from a model.

    Args:
        model: a model from :func:`load_model`.
        n: how many images.
        label: the class index of every image; ``None`` draws labels from the model's class
            prior.
        seed: same seed, ``n`` and ``batch``, same images (on the same device; the noise is
            drawn batch by batch: another ``batch`` draws other images, another ``n`` the same
            full batches and another last one).
        batch: images per forward pass.

    Returns:
        ``(images, labels)``: float32 ``(n, C, H, W)`` in [0, 1] on the CPU, int64 ``(n,)``.

    Raises:
        ValueError: ``n`` is not positive or ``label`` is out of range.
    """
    _model(model)
    import numbers

    from genzoo.tasks.sample import draw

    if label is not None and (
        isinstance(label, bool) or not isinstance(label, numbers.Integral) and not _int_scalar(label)
    ):
        raise ValueError(f"label: a class index (an int), got {label!r}")
    if label is not None and not 0 <= int(label) < model.spec.num_classes:
        raise ValueError(f"label {label}: out of range [0, {model.spec.num_classes})")
    n, seed, batch = _count("n", n), _count("seed", seed, least=None), _count("batch", batch)
    return draw(model, n, cls=None if label is None else int(label), seed=seed, batch=batch)


def bits_per_dim(
    model: GenerativeModel, images: torch.Tensor, labels: torch.Tensor | None = None, *, batch: int = 256
) -> torch.Tensor:
    """Each image's negative log-likelihood under a model, in bits per dimension: the figure of
    the report's bits/dim and of ``genzoo detect``'s scores (higher: less likely; an anomaly
    scores high).

    Args:
        model: a model from :func:`load_model` whose family has a likelihood: exact for
            PixelCNN; RealNVP's exact density of the dequantised image (one noise draw: on
            average a lower bound of the image's log-likelihood); a lower bound for the VAE and
            DDPM (so their bits/dim are an upper bound). The GAN has none.
        images: ``(N, C, H, W)`` floats in [0, 1] of the model's shape (``model.spec.shape``),
            as :func:`sample` and :func:`load_dataset` give them; each pixel is read at the
            nearest of the model's levels (``k / (model.spec.levels - 1)``), as every family
            scores it. 8-bit images for a model whose levels are bins of finer data
            (``data.max_levels``, e.g. the quick profile's 32 of 256; the prepared manifest's
            ``source_levels`` above its ``levels``): bin them yourself before the call, as
            prepare binned its data and ``genzoo detect`` bins what it scores,
            ``(k * L // 256) / (L - 1)`` with ``L = model.spec.levels`` (``k / 255`` read at
            the nearest level lands a fifth of the values one level off).
        labels: each image's class, ``(N,)``, or one int for all: ``-log2 p(x | y)`` per
            dimension; None sums over the classes under the model's class prior: ``-log2 p(x)``
            (DDPM: its null-label, unconditional network's figure).
        batch: images per forward pass (fewer for large images).

    Returns:
        float64 ``(N,)`` on the CPU; the same images give the same numbers (a bound's sampling
        is seeded).

    Raises:
        ValueError: the family has no likelihood, the images are not floats in [0, 1] of the
            model's shape or hold NaN or inf pixels, or a label is out of range.
    """
    _model(model)
    import math

    import torch

    from genzoo.models.base import (
        ExactLikelihood,
        LikelihoodBound,
        families_with,
        likelihood_estimator,
        log_likelihoods,
    )

    if likelihood_estimator(model) is None:
        raise ValueError(
            f"{model.family} has no likelihood (an implicit model); bits/dim come from "
            f"{', '.join(families_with(ExactLikelihood))} (exact), "
            f"{', '.join(families_with(LikelihoodBound))} (bounds)"
        )
    images = _pixels(images)
    snapped = model.from_levels(model.to_levels(images))  # NaN and inf: left for the model's check
    images = torch.where(torch.isfinite(images), snapped, images)
    labels = None if labels is None else _class_indices(labels, len(images))
    nats = log_likelihoods(model, images, labels, batch=_count("batch", batch))
    return -nats / (model.spec.dims * math.log(2))


def _model(model) -> None:
    """``model`` is a loaded model, not its name or path (AttributeError: 'str' object has no
    attribute 'family' said nothing of what to pass)."""
    from genzoo.models.base import GenerativeModel

    if not isinstance(model, GenerativeModel):
        got = f"{model!r}"[:60]
        hint = f" (genzoo.load_model({model!r}) loads it)" if isinstance(model, str | Path) else ""
        raise TypeError(f"model: a model from genzoo.load_model(...), got {type(model).__name__} {got}{hint}")


def _int_scalar(x) -> bool:
    """Whether ``x`` is a single integer held by an array or tensor (``torch.tensor(3)``)."""
    kind = str(getattr(x, "dtype", "")).removeprefix("torch.")
    return tuple(getattr(x, "shape", (0,))) == () and kind.startswith(("int", "uint"))


def _pixels(images) -> torch.Tensor:
    """``images`` as float32, refused when they are not what the models read: floats in [0, 1]
    (integer levels, or values scaled otherwise, would be clamped into plausible but wrong
    figures). NaN and inf are left to the model's own check, which counts and places them."""
    import torch

    images = torch.as_tensor(images)
    if not (images.is_floating_point() or images.dtype == torch.bool):
        raise ValueError(
            f"images are {images.dtype}: give floats in [0, 1] (uint8 pixels: images / 255; "
            "integer levels 0..L-1: images / (L - 1))"
        )
    images = images.float()
    finite = images[torch.isfinite(images)]
    if finite.numel() and (finite.min() < 0 or finite.max() > 1):
        raise ValueError(
            f"images must lie in [0, 1], got [{finite.min().item():.3g}, {finite.max().item():.3g}] "
            "(uint8 pixels: images / 255; integer levels 0..L-1: images / (L - 1))"
        )
    return images


def _count(name: str, value, least: int | None = 1) -> int:
    """``value`` as an int of at least ``least`` (None: any; a float, a string or a bool is refused)."""
    import numbers

    if isinstance(value, bool) or not (isinstance(value, numbers.Integral) or _int_scalar(value)):
        raise ValueError(f"{name}: an int, got {value!r}")
    if least is not None and int(value) < least:
        raise ValueError(f"{name}: at least {least}, got {int(value)}")
    return int(value)


def _class_indices(labels, n: int) -> torch.Tensor:
    """``labels`` as a tensor of ``n`` class indices (one int: the same for every row); float
    or bool labels refused (the range check comes with the model's)."""
    import torch

    if (
        isinstance(labels, str)
        or (isinstance(labels, list | tuple) and any(isinstance(v, str) for v in labels))
        or getattr(getattr(labels, "dtype", None), "kind", "") in ("U", "S")
    ):  # a class's name: its index is model.class_names.index(name)
        raise ValueError(
            f"labels: class indices (ints), got {labels!r}; a class's index is model.class_names.index(name)"
        )
    if isinstance(labels, list | tuple) and not labels:  # ([] is a float tensor: "give integers" misled)
        labels = torch.zeros(0, dtype=torch.long)
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels are {labels.dtype}: give integer class indices (e.g. labels.long())")
    return (labels.expand(n).clone() if labels.ndim == 0 else labels).long()


def _labels(labels, n: int) -> torch.Tensor:
    """``labels`` as a tensor of ``n`` class indices (one int: the same for every row)."""
    if labels is None:  # the families are class-conditional: a code is read under a label
        raise ValueError("labels: give each image's class (N,), or one int for all")
    return _class_indices(labels, n)


def encode(model: GenerativeModel, images: torch.Tensor, labels, *, batch: int = 256) -> torch.Tensor:
    """Each image's code in the model's latent space: the VAE's posterior mean, the flow's exact
    (standardised) latent, DDPM's x_T by DDIM inversion. :func:`decode` maps codes back.

    Args:
        model: a model from :func:`load_model` with an encoder (vae, realnvp, ddpm).
        images: ``(N, C, H, W)`` floats in [0, 1] of the model's shape.
        labels: each image's class, ``(N,)``, or one int for all (the families are
            class-conditional: a code is read under its label).
        batch: images per forward pass.

    Returns:
        float32 on the CPU, ``(N, latent_dim)`` for the VAE, ``(N, C H W)`` for RealNVP,
        ``(N, C, H, W)`` for DDPM.

    Raises:
        ValueError: the family has no encoder (PixelCNN, the GAN), the images are not floats in
            [0, 1] of the model's shape or hold NaN or inf pixels, or a label is out of range.
    """
    _model(model)
    from genzoo.tasks.latent import encode as _encode

    images = _pixels(images)
    return _encode(model, images, _labels(labels, len(images)), _count("batch", batch))


def decode(model: GenerativeModel, codes: torch.Tensor, labels, *, batch: int = 256) -> torch.Tensor:
    """Images of codes in the model's latent space (the inverse of :func:`encode`; for the GAN,
    codes drawn as ``torch.randn(n, model.cfg.latent_dim)``).

    Args:
        model: a model from :func:`load_model` with a latent space (vae, realnvp, ddpm, gan).
        codes: ``(N, ...)``, each of the shape :func:`encode` gives (the GAN: ``latent_dim``).
        labels: the class to decode each code under, ``(N,)``, or one int for all.
        batch: codes per forward pass.

    Returns:
        float32 ``(N, C, H, W)`` in [0, 1] on the CPU.

    Raises:
        ValueError: the family has no latent space (PixelCNN), the codes are not of its code
            shape or hold NaN or inf, or a label is out of range.
    """
    _model(model)
    import torch

    from genzoo.tasks.latent import check_codes, check_decoded
    from genzoo.tasks.latent import decode as _decode

    codes = torch.as_tensor(codes, dtype=torch.float32)
    labels = _labels(labels, len(codes))
    check_codes(model, codes, labels)
    images = _decode(model, codes, labels, _count("batch", batch))
    check_decoded(model, images, codes)
    return images


def interpolate(
    model: GenerativeModel,
    start: torch.Tensor,
    end: torch.Tensor,
    *,
    labels: int | tuple[int, int],
    steps: int = 9,
    mode: str = "spherical",
) -> torch.Tensor:
    """Images decoded along the path between two codes, as the report's interpolation strips:
    the first image is ``start``'s, the last ``end``'s.

    Args:
        model: a model from :func:`load_model` with a latent space (vae, realnvp, ddpm, gan).
        start, end: one code each (of the shape of one row of :func:`encode`'s output; a batch
            of one is taken too).
        labels: the class to decode under, or ``(a, b)``: ``a`` up to the middle of the path,
            ``b`` after it (an image of one class turning into another's).
        steps: images along the path, the two ends included (at least 2).
        mode: ``"spherical"`` (keeps Gaussian codes at a typical norm) or ``"linear"``.

    Returns:
        float32 ``(steps, C, H, W)`` in [0, 1] on the CPU.

    Raises:
        ValueError: no latent space, codes of another shape, steps under 2 or an unknown mode.
    """
    _model(model)
    import torch

    from genzoo.tasks.latent import check_codes, check_decoded, code_shape, paths

    want = code_shape(model)
    ends = []
    for name, z in (("start", start), ("end", end)):
        z = torch.as_tensor(z, dtype=torch.float32)
        z = z[None] if tuple(z.shape) == want else z
        if tuple(z.shape) != (1, *want):
            raise ValueError(f"{name}: one code of shape {tuple(want)}, got {tuple(z.shape)}")
        ends.append(z)
    pair = _class_indices(labels, 2).flatten()
    pair = pair.repeat(2) if pair.numel() == 1 else pair
    if pair.numel() != 2:
        raise ValueError(f"labels: one class, or two (start's and end's), got {labels!r}")
    check_codes(model, torch.cat(ends), pair)
    strip = paths(model, ends[0], ends[1], pair[:1], pair[1:], _count("steps", steps, least=2), mode)[0]
    check_decoded(model, strip)
    return strip
