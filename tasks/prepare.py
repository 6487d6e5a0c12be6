"""Data preparation: read a source, validate it, split it (stratified, seeded) and write
``<prepared_dir>/{train,val,test}.npz`` + ``manifest.json``.

Images are stored as their discrete levels (uint8/uint16, shape (N, C, H, W)) with labels
(int64); models see ``level / (levels - 1)`` in [0, 1]. Everything is validated before a
byte is written, and the folder is replaced as a whole: a failure leaves the previous
prepared data untouched, and a folder genzoo did not write is refused, not replaced.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import os
import pickle
import sys
import zlib
from pathlib import Path

import numpy as np

from genzoo.models.base import atomic_write_text
from genzoo.tasks.config import DataParams, Params, stage_args
from genzoo.tasks.data import (
    DataError,
    content_hash,
    convert_levels,
    fit_image,
    folder_images,
    folder_listing,
    npz_levels,
    open_image,
    prepared_with,
    quantize,
    require_npz,
    to_nchw,
)

# the prepared data's readers live on the ground floor (tasks/data.py); named here too for
# callers that reach them through the stage that writes the data
from genzoo.tasks.data import data_spec as data_spec
from genzoo.tasks.data import load_split as load_split
from genzoo.tasks.data import read_manifest as read_manifest
from genzoo.tasks.errors import check_output_dir, exit_code, writing
from genzoo.tasks.layout import check_outside_source, check_replaceable, exclusive, mark, replacing_dir

log = logging.getLogger("genzoo.prepare")
SPLITS = ("train", "val", "test")


@dataclasses.dataclass
class Dataset:
    images: np.ndarray  # (N, C, H, W) integer levels
    labels: np.ndarray  # (N,) int64
    levels: int
    class_names: list[str]
    source: str
    source_levels: int = 0  # the source's own levels, before data.max_levels (convert sets it)
    listing: str | None = None  # a folder's: :func:`folder_listing`


# ----------------------------------------------------------------------------- sources


def load_digits_source() -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.astype(np.uint8)[:, None]  # (1797, 1, 8, 8), levels 0..16
    return Dataset(images, d.target.astype(np.int64), 17, [str(c) for c in d.target_names], "digits")


def load_npz_source(path: str | Path) -> Dataset:
    path = Path(path)
    require_npz(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            missing = {"images", "labels"} - keys
            if missing:
                raise DataError(
                    f"{path}: missing key(s) {sorted(missing)}; found {sorted(keys)} "
                    "(expected 'images' and 'labels')"
                )
            images, labels = z["images"], z["labels"]
            levels = npz_levels(z["levels"], path) if "levels" in keys else None
            names = [str(n) for n in np.atleast_1d(z["class_names"])] if "class_names" in keys else None
    except (OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: not a readable npz file ({e})") from None
    images = to_nchw(np.asarray(images), f"{path}['images']")
    images, levels = quantize(images, f"{path}['images']", levels)
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images) or labels.dtype.kind not in "uiUS":
        raise DataError(
            f"{path}['labels']: expected {len(images)} integer labels (or strings, the class names), "
            f"got shape {labels.shape} dtype {labels.dtype}"
        )
    if labels.dtype.kind in "US":  # the class names themselves ('cat', 'dog'), in sorted order
        if names is not None:
            raise DataError(
                f"{path}['class_names']: the labels are strings, their own class names; "
                "give integer labels with class_names, or string labels alone"
            )
        try:  # bytes (as h5py gives them) in UTF-8
            labels = np.char.decode(labels, "utf-8") if labels.dtype.kind == "S" else labels.astype(str)
        except UnicodeDecodeError as e:
            raise DataError(f"{path}['labels']: byte-string labels that are not UTF-8 ({e.reason})") from None
    classes = np.unique(labels)
    labels = np.searchsorted(classes, labels).astype(np.int64)
    n_names = len(names or [])
    indices = classes.dtype.kind in "ui" and len(classes) and classes[0] >= 0 and classes[-1] < n_names
    if names is not None and len(names) > len(classes) and indices:  # a class with no image (a
        # synthetic dataset's emptied class): the others keep their names, numbered as present
        absent = [n for i, n in enumerate(names) if i not in set(classes.tolist())]
        log.warning(
            "%s: %d class(es) of class_names with no image left out (%s): the %d others are classes 0..%d",
            path, len(absent), ", ".join(absent[:5]), len(classes), len(classes) - 1,
        )  # fmt: skip
        names = [names[int(c)] for c in classes]
    if names is not None and len(names) != len(classes):
        raise DataError(
            f"{path}['class_names']: {len(names)} names for {len(classes)} classes in 'labels' "
            f"({', '.join(map(str, classes[:12]))}{'...' if len(classes) > 12 else ''})"
        )
    if names is None and classes.dtype.kind in "ui" and not np.array_equal(classes, np.arange(len(classes))):
        log.warning(  # labels 1, 2, 3: classes 0, 1, 2 named '1', '2', '3' (--class takes either)
            "%s: integer labels %s are not 0..%d: genzoo numbers the classes 0..%d in that order and names "
            "them by the labels ('%s' is class 0); `--class` takes a name first, Python's label= an index",
            path, _shown(classes), len(classes) - 1, len(classes) - 1, classes[0],
        )  # fmt: skip
    names = names or [str(c) for c in classes]
    return Dataset(images, labels, levels, names, f"npz:{path}")


def _shown(values: np.ndarray) -> str:
    return ", ".join(map(str, values[:6])) + (", ..." if len(values) > 6 else "")


def load_folder_source(
    root: str | Path, size: tuple[int, int] | None, channels: int | None = None
) -> Dataset:
    """A folder of class sub-folders of images, sized to ``size`` on load; ``channels`` (1 or 3,
    ``data.channels``) converts every image as it is read; without it, grey images among RGB
    ones are read as RGB (said)."""

    root = Path(root)
    classes, files = folder_images(root)
    if not files:
        raise DataError(f"{root}: empty (no images in {', '.join(classes)})")
    empty = [n for k, n in enumerate(classes) if not any(c == k for _, c in files)]
    if empty:
        raise DataError(f"{root / empty[0]}: a class folder with no images; fill it or remove it")
    images, modes, deep, floats, bad, clear = [], {}, None, {}, [], []
    for f, _ in files:
        try:
            img, converted = open_image(f)
        except DataError as e:  # every unreadable file named at once, not one per try
            bad.append(str(e))
            continue
        if converted == "16-bit":
            deep = deep or f
        elif converted == "transparency":
            clear.append(f)
        elif converted:  # float pixels, in [0, 1] or beyond
            floats.setdefault(converted, f)
        if channels:  # RGB -> L by ITU-R 601 luma, as convert() below; L -> RGB repeats it
            img = img.convert("L" if channels == 1 else "RGB")
        modes.setdefault(img.mode, []).append(f)
        images.append(img)
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise DataError(
            f"{root}: {len(bad)} unreadable image file(s): {'; '.join(bad[:3])}{more}; replace them or "
            "move them out of the folder"
        )
    if deep is not None:
        log.warning(
            "%s: 16-bit images (first: %s) reduced to 8 bits (256 levels), scaled by 255/65535", root, deep
        )
    if len(floats) > 1:  # one dark image of a 0-255 folder would be scaled x255: said, not guessed
        (a, fa), (b, fb) = floats.items()
        raise DataError(f"{root}: float images of two ranges: {fa} is {a}, {fb} is {b}; give them one "
                        "range")  # fmt: skip
    if floats:
        log.warning("%s: images of float pixels (first: %s) read as 0-255 (scaled by 255 where in [0, 1])",
                    root, next(iter(floats.values())))  # fmt: skip
    if clear:
        log.warning(
            "%s: %d image(s) with transparency (first: %s) read without it, as the colours stored under "
            "transparent pixels (as torchvision's ImageFolder reads them); flatten them onto a background "
            "first if those colours are not the picture", root, len(clear), clear[0],
        )  # fmt: skip
    if len(modes) > 1:  # grey among colour: each grey image repeated in R, G and B, nothing lost
        log.warning(
            "%s: %d grayscale image(s) among %d RGB (first: %s) read as RGB; set data.channels: 1 to "
            "train every image in grey", root, len(modes["L"]), len(modes["RGB"]), modes["L"][0],
        )  # fmt: skip
        images = [im.convert("RGB") for im in images]
    if size is None:
        first = {}  # (H, W) -> the first file of that size
        for (f, _), im in zip(files, images, strict=True):
            first.setdefault(im.size[::-1], f)
        if len(first) > 1:
            shown = ", ".join(f"{h}x{w} ({f})" for (h, w), f in list(first.items())[:3])
            shown += f" and {len(first) - 3} more" if len(first) > 3 else ""
            raise DataError(
                f"{root}: images of {len(first)} sizes (H x W): {shown}; set data.image_size to size them all"
            )
        size = images[0].size[::-1]
    arr = np.stack([np.asarray(fit_image(im, size)) for im in images])
    arr = arr[:, None] if arr.ndim == 3 else arr.transpose(0, 3, 1, 2)  # (N, H, W[, C]): any H
    labels = np.array([k for _, k in files], dtype=np.int64)
    return Dataset(arr.astype(np.int64), labels, 256, classes, f"folder:{root}",
                   listing=folder_listing(root, files))  # fmt: skip


# -- torchvision datasets: downloaded by torchvision, parsed here from their standard files


def read_idx(path: Path) -> np.ndarray:
    """IDX (MNIST) file, optionally gzipped."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a readable gzip file, as its name says ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    if data[:2] == b"\x1f\x8b":
        raise DataError(f"{path}: a gzip file without .gz in its name; name it {path.name}.gz or unzip it")
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DataError(f"{path}: truncated IDX file (expected {int(np.prod(shape))} values, got {arr.size})")
    return arr.reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for cand in (folder / stem, folder / f"{stem}.gz"):
        if cand.exists():
            return cand
    raise DataError(f"{folder}: missing {stem}[.gz]")


def _labelled(images: np.ndarray, labels: np.ndarray, where: tuple[Path, Path], classes: int) -> None:
    """Refuse a pair of image and label arrays that do not belong together: as many labels as
    images (one file short would pair images with another split's labels), each a class index."""
    xs, ys = where
    if labels.ndim != 1 or images.ndim < 2:
        raise DataError(f"{xs}: {images.ndim}-dimensional images and {ys}: {labels.ndim}-dimensional "
                        "labels; are the image and label files swapped?")  # fmt: skip
    if len(images) != len(labels):
        raise DataError(f"{xs} holds {len(images)} images but {ys} {len(labels)} labels")
    bad = (labels < 0) | (labels >= classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{ys}: label {int(labels[i])} at index {i} is not a class (0..{classes - 1})")


MNIST_CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR-10's python batches are pickles: allow only what numpy arrays need."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")
        return super().find_class(module, name)


def _download(name: str, raw: Path, folder: Path, missing: list[str]) -> None:
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise DataError(
            f"data.source={name}: {folder} lacks {', '.join(missing)} (data.raw_dir={raw}) and torchvision "
            "is not installed to download them; put the files there, or install the vision extra (in a "
            "checkout: make install EXTRAS=vision; else pip install 'genzoo[vision]') and go online once"
        ) from None
    except RuntimeError as e:  # a torchvision built for another torch: "operator torchvision::nms ..."
        raise DataError(
            f"data.source={name}: {folder} lacks {', '.join(missing)} (data.raw_dir={raw}) and the "
            f"torchvision installed does not load beside this torch ({e}); put the files there, or "
            'install the torchvision built for your torch (README, "GPU install")'
        ) from None
    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    for train in (True, False):
        cls(str(raw), train=train, download=True)


def load_torchvision_source(name: str, raw_dir: str | Path) -> Dataset:
    raw = Path(raw_dir)
    if name in MNIST_CLASSES:
        folder = raw / {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[name] / "raw"
        stems = [
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ]
        missing = [f"{s}[.gz]" for s in stems if not ((folder / s).exists() or (folder / f"{s}.gz").exists())]
        if missing:
            _download(name, raw, folder, missing)
        xs, ys = [], []
        for images, labels in ((stems[0], stems[1]), (stems[2], stems[3])):
            where = (_find(folder, images), _find(folder, labels))
            x, y = read_idx(where[0]), read_idx(where[1])
            _labelled(x, y, where, len(MNIST_CLASSES[name]))
            if x.ndim != 3:
                raise DataError(f"{where[0]}: {x.ndim}-dimensional; MNIST's images are (N, rows, columns)")
            xs.append(x)
            ys.append(y)
        x = np.concatenate(xs)
        return Dataset(x[:, None].astype(np.int64), np.concatenate(ys).astype(np.int64), 256,
                       MNIST_CLASSES[name], name)  # fmt: skip
    folder = raw / "cifar-10-batches-py"
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [b for b in batches if not (folder / b).exists()]
    if missing:
        _download(name, raw, folder, missing)
    xs, ys = [], []
    for b in batches:
        with open(folder / b, "rb") as f:
            try:
                d = _CifarUnpickler(f, encoding="bytes").load()
            except (pickle.UnpicklingError, EOFError) as e:
                raise DataError(f"{folder / b}: unreadable CIFAR batch ({e})") from None
        try:
            x, y = np.asarray(d[b"data"], dtype=np.uint8), np.asarray(d[b"labels"], dtype=np.int64)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{folder / b}: not a CIFAR-10 batch (b'data' and b'labels': {e})") from None
        if x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
            raise DataError(f"{folder / b}: images of shape {x.shape}; a CIFAR-10 batch holds (N, 3072)")
        _labelled(x, y, (folder / b, folder / b), len(CIFAR_CLASSES))
        xs.append(x.reshape(-1, 3, 32, 32))
        ys.append(y)
    return Dataset(np.concatenate(xs).astype(np.int64), np.concatenate(ys), 256, CIFAR_CLASSES, name)


def load_source(p: DataParams) -> Dataset:
    kind, _, path = p.source.partition(":")
    path = os.path.expanduser(path)  # ~/data, as a shell reads it (the params keep it as written)
    if kind == "digits":
        return load_digits_source()
    if kind == "npz":
        return load_npz_source(path)
    if kind == "folder":
        return load_folder_source(path, p.image_size, p.channels)
    return load_torchvision_source(kind, p.raw_dir)


# ----------------------------------------------------------------------------- transforms


def convert(ds: Dataset, p: DataParams) -> Dataset:
    """Channel conversion, resizing (folders are sized on load) and fewer levels
    (``max_levels``) requested in params."""
    size = None if ds.source.startswith("folder:") else p.image_size
    x, levels = convert_levels(ds.images, ds.levels, p.channels, size, p.max_levels)
    return dataclasses.replace(ds, images=x, levels=levels, source_levels=ds.levels)


def check(ds: Dataset) -> None:
    if len(ds.images) == 0:
        raise DataError(f"{ds.source}: no images")
    h, w = ds.images.shape[2:]
    if min(h, w) < 2:
        raise DataError(f"{ds.source}: images are {h}x{w}; at least 2x2 pixels are needed (data.image_size)")
    if len(ds.class_names) != int(ds.labels.max()) + 1:
        raise DataError(
            f"{ds.source}: {len(ds.class_names)} class names for {int(ds.labels.max()) + 1} classes"
        )
    if len(np.unique(ds.labels)) < 2:
        raise DataError(f"{ds.source}: a single class ({ds.class_names[0]!r}); at least two are needed")
    if ds.levels < 2 or ds.levels > 65536:
        raise DataError(f"{ds.source}: levels must be in [2, 65536], got {ds.levels}")


def stratified_split(labels: np.ndarray, val: float, test: float, seed: int) -> dict[str, np.ndarray]:
    """Per class: shuffle with the seed, take the test then the val share; sorted indices."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = max(1, round(len(idx) * test))
        n_val = round(len(idx) * val)
        out["test"].append(idx[:n_test])
        out["val"].append(idx[n_test : n_test + n_val])
        out["train"].append(idx[n_test + n_val :])
    return {s: np.sort(np.concatenate(v)) for s, v in out.items()}


def check_splits(
    splits: dict[str, np.ndarray],
    labels: np.ndarray,
    p: DataParams,
    source: str,
    class_names: list[str] | None = None,
) -> None:
    """Every class in the training split (a class with too few images for the fractions fails
    here rather than train on nothing, named as the data names it); an empty val split asked for
    is a warning."""
    per_class = np.bincount(labels)

    def named(c: int) -> str:
        name = class_names[c] if class_names and c < len(class_names) else None
        return f"class {c}" if name in (None, str(c)) else f"class {name!r} (label {c})"

    missing = np.flatnonzero(np.bincount(labels[splits["train"]], minlength=len(per_class)) == 0)
    if len(missing):
        c = int(missing[0])
        which = named(c)
        raise DataError(
            f"{source}: {which} has {per_class[c]} image(s), none left for the train split after "
            f"test_fraction={p.test_fraction} and val_fraction={p.val_fraction}; "
            "each class needs a few images per split"
        )
    if p.val_fraction > 0 and len(splits["val"]) == 0:
        log.warning(
            "%s: the val split comes out empty (val_fraction=%s of %d-%d images per class); "
            "detection thresholds and eval_every need it: add images",
            source, p.val_fraction, per_class.min(), per_class.max(),
        )  # fmt: skip
    elif p.val_fraction > 0:  # some classes have val images, others none: their figures leave those out
        present = np.bincount(labels[splits["val"]], minlength=len(per_class))
        if len(none := [c for c in np.flatnonzero(per_class) if present[c] == 0]):
            log.warning(
                "%s: %s no val image (val_fraction=%s of %s); model selection, detection thresholds and "
                "eval_every see the other classes alone: add images or raise data.val_fraction",
                source, ", ".join(named(int(c)) for c in none) + (" has" if len(none) == 1 else " have"),
                p.val_fraction, ", ".join(f"{per_class[c]}" for c in none) + " image(s)",
            )  # fmt: skip


def _cap(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


# ----------------------------------------------------------------------------- the stage


def prepare(params: Params) -> dict:
    """Build the prepared dataset; returns its manifest."""
    p = params.data
    check_output_dir(p.prepared_dir, "data.prepared_dir")
    check_replaceable(Path(p.prepared_dir), "prepared-data")  # a folder genzoo did not write: refused
    check_outside_source(params)
    read = load_source(p)
    ds = convert(read, p)
    check(ds)
    found = {  # the source as read: what other data params would make of it (tasks/data.py, not_as_asked)
        "shape": None if ds.source.startswith("folder:") else list(read.images.shape[1:]),  # (sized on load)
        "levels": ds.source_levels,
        "counts": np.bincount(ds.labels, minlength=len(ds.class_names)).tolist(),
        **({"files": ds.listing} if ds.listing else {}),  # a folder's images (`genzoo status`)
    }
    if p.max_per_class:
        keep = _cap(ds.labels, p.max_per_class, params.seed)
        ds = dataclasses.replace(ds, images=ds.images[keep], labels=ds.labels[keep])
    dtype = np.uint8 if ds.levels <= 256 else np.uint16
    images = ds.images.astype(dtype)
    splits = stratified_split(ds.labels, p.val_fraction, p.test_fraction, params.seed)
    check_splits(splits, ds.labels, p, ds.source, ds.class_names)
    n, c, h, w = images.shape
    manifest = {
        **mark("prepared-data"),
        "source": ds.source,
        "shape": [c, h, w],
        "levels": ds.levels,
        # the source's own levels, which `genzoo detect` bins 8-bit images by as these were (more
        # than levels: data.max_levels binned them); recorded where they are not known by the source
        # kind (an npz) or binning was asked for, so other data's manifest is as it was
        **({"source_levels": ds.source_levels} if p.max_levels or ds.source.startswith("npz:") else {}),
        "num_classes": len(ds.class_names),
        "class_names": ds.class_names,
        "seed": params.seed,
        "data": {
            **prepared_with(p),
            "found": found,
        },  # what else made it: a training asked for other data is told
        "splits": {},
    }
    with (
        writing("the prepared data", p.prepared_dir),
        replacing_dir(Path(p.prepared_dir), "prepared-data") as tmp,
    ):
        for split, idx in splits.items():
            x, y = images[idx], ds.labels[idx]
            with open(tmp / f"{split}.npz", "wb") as f:
                np.savez(f, images=x, labels=y)
                f.flush()
                os.fsync(f.fileno())
            counts = np.bincount(y, minlength=len(ds.class_names)).tolist()
            manifest["splits"][split] = {"n": len(idx), "per_class": counts, "sha256": content_hash(x, y)}
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2))
    log.info("prepared %s: %s", ds.source, {s: v["n"] for s, v in manifest["splits"].items()})
    return manifest


def unseen_by_dvc(p: DataParams) -> str | None:
    """What to warn of when ``data.source`` is an ``npz:`` or ``folder:`` path outside
    ``data.raw_dir``: DVC's prepare stage depends on that folder only, so a change to such a
    source goes unseen by ``dvc repro``. None for a source it sees (or no file of the user's)."""
    kind, _, path = p.source.partition(":")
    if kind not in ("npz", "folder") or (
        Path(path).expanduser().resolve().is_relative_to(Path(p.raw_dir).expanduser().resolve())
    ):
        return None
    return (
        f"{path} lies outside data.raw_dir ({p.raw_dir}), the folder DVC's prepare stage depends on: "
        "`dvc repro` will not see it change; move it there, or run `dvc repro -f prepare` after changing it"
    )


def main(argv: list[str] | None = None) -> None:
    params, _ = stage_args(argv, "Prepare the dataset named in params.yaml (DVC stage 'prepare').")
    if warning := unseen_by_dvc(params.data):
        log.warning("%s", warning)
    with exclusive(params.run.runs_dir):
        prepare(params)


if __name__ == "__main__":
    sys.exit(exit_code(main, "prepare"))
