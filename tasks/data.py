"""The prepared data as every stage reads it (ground floor): ``<prepared_dir>/{train,val,test}.npz``
+ ``manifest.json`` (written by the ``prepare`` stage), and the pixel conventions shared by
whatever turns outside images into the model's format (``prepare``'s sources, ``genzoo detect``).

Images are stored as their discrete levels (uint8/uint16, shape (N, C, H, W)) with labels
(int64); models see ``level / (levels - 1)`` in [0, 1].
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genzoo.models.base import DataSpec
from genzoo.tasks.config import advise, fingerprint
from genzoo.tasks.errors import GenzooError

log = logging.getLogger("genzoo.prepare")

# 16-bit grayscale as Pillow opens it ("I" holds a 16-bit PNG in older Pillows): scaled, not clipped
WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


class DataError(GenzooError, ValueError):
    """Bad input data; the message names the file or key."""


# ----------------------------------------------------------------------------- pixels


def to_nchw(arr: np.ndarray, where: str) -> np.ndarray:
    """(N, H, W), (N, C, H, W) or (N, H, W, C) -> (N, C, H, W), C in (1, 3)."""
    if arr.ndim == 3:
        return arr[:, None]
    if arr.ndim == 4:
        if arr.shape[1] in (1, 3):
            if arr.shape[3] in (1, 3):  # (N, 3, 8, 3): either layout
                log.warning("%s: shape %s read as (N, C, H, W); for (N, H, W, C) images, transpose them "
                            "to (N, C, H, W) first", where, tuple(arr.shape))  # fmt: skip
            return arr
        if arr.shape[3] in (1, 3):
            return arr.transpose(0, 3, 1, 2)
    raise DataError(
        f"{where}: images must be (N, H, W), (N, C, H, W) or (N, H, W, C) with C in (1, 3); got {arr.shape}"
    )


def quantize(arr: np.ndarray, where: str, levels: int | None) -> tuple[np.ndarray, int]:
    """Pixels -> integer levels (int64, same shape) and their count: floats lie in [0, 1] (or,
    with ``levels``, hold whole levels 0..levels-1, integers stored as floats); integers keep
    their values (256 levels when they fit a byte; 16-bit ones, without ``levels``, are reduced to
    8 bits with a warning)."""
    if arr.size == 0:
        raise DataError(f"{where}: no images (shape {tuple(arr.shape)})")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).reshape(len(arr), -1).any(1).argmax())
            raise DataError(f"{where}: NaN or infinite pixel values (first in image {bad})")
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0 and hi <= 1:
            levels = levels or 256
            return np.round(arr * (levels - 1)).astype(np.int64), levels
        if levels is not None and lo >= 0 and hi <= levels - 1 and bool((arr == np.round(arr)).all()):
            return arr.astype(np.int64), levels  # whole levels, stored as floats
        # (with `levels`, floats 0..16 of 17 levels were read as [0, 1] and clipped: black and white)
        raise DataError(
            f"{where}: float images must lie in [0, 1]"
            + (f" or hold whole levels 0..{levels - 1} (its `levels`)" if levels else "")
            + f"; got [{lo:.3g}, {hi:.3g}]"
            + ("" if levels else " (whole levels 0..L-1 stored as floats: an npz `levels` key of L)")
        )
    if arr.dtype.kind in "ui":
        if levels is None and arr.max() > 255 and arr.min() >= 0 and arr.dtype.itemsize == 2:
            # 16-bit pixels (their number of levels is no property of one file's largest value):
            # reduced to 8 bits as 16-bit image files are
            log.warning(
                "%s: pixels up to %d read as 16-bit and reduced to 8 bits (256 levels), scaled by "
                "255/65535; an npz `levels` key keeps them (e.g. levels=4096 for 12-bit data)",
                where, int(arr.max()),
            )  # fmt: skip
            return np.rint(arr.astype(np.int64) * (255 / 65535)).astype(np.int64), 256
        top = (levels or 256) - 1
        if arr.min() < 0 or arr.max() > top:
            raise DataError(
                f"{where}: integer pixels must lie in [0, {top}]; got [{arr.min()}, {arr.max()}]"
                + ("" if levels else " (or 16-bit, as uint16; another range: an npz `levels` key)")
            )
        return arr.astype(np.int64), top + 1
    raise DataError(f"{where}: unsupported pixel dtype {arr.dtype}")


def convert_levels(
    x: np.ndarray,
    levels: int,
    channels: int | None,
    size,
    max_levels: int | None,
) -> tuple[np.ndarray, int]:
    """Integer images (N, C, H, W) of ``levels`` levels -> ``channels``, ``size`` (H, W) and at
    most ``max_levels`` levels, and their levels: what prepare does to a source, and ``genzoo
    detect`` to the images it scores, so both see an image alike."""
    if channels and channels != x.shape[1]:
        if channels == 1:  # ITU-R 601 luma
            w = np.array([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)
            x = np.round((x * w).sum(1, keepdims=True)).astype(np.int64)
        else:
            x = np.repeat(x, 3, axis=1)
    if size and tuple(size) != x.shape[2:]:
        check_memory(len(x), x.shape[1], size)
        t = torch.from_numpy(x.astype(np.float32))
        t = torch.nn.functional.interpolate(
            t, size=tuple(size), mode="bilinear", antialias=True, align_corners=False
        )
        x = t.round().clamp(0, levels - 1).numpy().astype(np.int64)
    if max_levels and levels > max_levels:  # level k of L -> floor(k M / L): M bins of equal width
        x, levels = x.astype(np.int64) * max_levels // levels, max_levels
    return x, levels


def check_memory(n: int, channels: int, size: tuple[int, int]) -> None:
    """Refuse a resize whose images would not fit in memory, before allocating them (the
    float32 copy being resized plus the int64 result: 12 bytes a pixel)."""
    need = 12 * n * channels * size[0] * size[1]
    have = _available_memory()
    if have is not None and need > have:
        raise DataError(
            f"data.image_size={list(size)}: {n} images of that size need {need / 2**30:.1f} GiB, "
            f"{have / 2**30:.1f} GiB of memory is available; choose a smaller size"
        )


def _available_memory() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not on this platform
        return None


def to_8bit(im):
    """A 16-bit grayscale PIL image -> mode "L", every level scaled by 255/65535 (Pillow's own
    convert clips at 255, turning most of a 16-bit image white)."""
    from PIL import Image

    arr = np.clip(np.asarray(im, dtype=np.int64), 0, 65535)
    return Image.fromarray(np.rint(arr * (255 / 65535)).astype(np.uint8), mode="L")


GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}  # the rest (palettes too) count as colour


def open_image(path: Path, advice: str = "") -> tuple[Any, str | None]:
    """An image file as an 8-bit PIL image of mode L or RGB, and what had to be converted to get
    there (``"16-bit"``: levels scaled by 255/65535, ``"float [0, 1]"``: scaled to 0-255, ``"float
    0-255"``: rounded; ``"transparency"``: an alpha channel dropped, as ``convert`` and
    torchvision's ImageFolder drop it, keeping the colours stored under it; None).
    One line naming the file and why where it cannot be read (``advice`` after it)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in WIDE_MODES:
                return to_8bit(im), "16-bit"
            if im.mode == "F":  # float pixels (a TIFF): convert() clipped [0, 1] to black
                arr = np.nan_to_num(np.asarray(im, dtype=np.float64))
                unit = arr.max(initial=0) <= 1
                arr = arr * 255 if unit else arr
                img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")
                return img, "float [0, 1]" if unit else "float 0-255"
            clear = False  # transparency some pixel uses (an opaque alpha, an unused palette entry: none)
            if im.mode in ("LA", "RGBA", "La", "RGBa", "PA") or "transparency" in im.info:
                clear = im.convert("RGBA").getchannel("A").getextrema()[0] < 255
            return im.convert("L" if im.mode in GRAY_MODES else "RGB"), "transparency" if clear else None
    except Image.DecompressionBombError as e:  # Pillow's refusal of an image too large to load
        raise DataError(f"{path}: {e}; shrink it{advice}") from None
    except (UnidentifiedImageError, OSError) as e:
        plain = isinstance(e, UnidentifiedImageError) or not str(e)  # (its message: the path again)
        why = e.__class__.__name__ if plain else f"{e.__class__.__name__}: {e}"
        raise DataError(f"{path}: unreadable image ({why}){advice}") from None


def fit_image(img, size: tuple[int, int]):
    """A PIL image resized to exactly ``size`` (H, W), its aspect ratio kept and the rest padded
    black: how `prepare` sizes a folder's images and `detect` the images it scores, alike.
    Shrinking averages the pixels each output pixel covers (box filter, as scikit-learn's digits
    were made from 32x32 bitmaps: a nearest-neighbour enlargement comes back exactly); enlarging
    is bilinear."""
    from PIL import Image

    h, w = size
    scale = min(w / img.width, h / img.height)
    new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    if new != img.size:
        shrink = new[0] <= img.width and new[1] <= img.height
        img = img.resize(new, Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR)
    if new == (w, h):
        return img
    canvas = Image.new(img.mode, (w, h))
    canvas.paste(img, ((w - new[0]) // 2, (h - new[1]) // 2))
    return canvas


def require_npz(path: Path) -> None:
    """``path`` is a file and an npz (a zip archive): np.load would otherwise try it as a
    pickle or a bare .npy and say so in words about pickles."""
    if path.is_dir():
        raise DataError(
            f"{path}: a folder, not an npz file; give folder:{path} for a folder of class folders"
        )
    if not path.is_file():
        raise DataError(f"{path}: npz file not found")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an npz file (an npz is a zip archive of .npy arrays)")


def npz_levels(value: np.ndarray, path: Path) -> int:
    """An npz's optional ``levels``: one integer >= 2."""
    if value.ndim != 0 or value.dtype.kind not in "ui" or int(value) < 2:
        raise DataError(
            f"{path}['levels']: expected one integer >= 2 (the number of pixel levels), "
            f"got {value.dtype} of shape {value.shape}" + (f" = {value.item()}" if value.ndim == 0 else "")
        )
    return int(value)


def levels_beside(path: Path) -> int | None:
    """The pixel levels of the npz ``path`` where genzoo wrote it beside its ``manifest.json``
    (a prepared split, a synthetic dataset's ``images.npz``: pixels 0..L-1 without a ``levels``
    key; read as 8-bit, digits' 0..16 were near-black images), or None: no manifest there, or
    one that does not list this file (a user's own npz dropped in such a folder)."""
    path = Path(path)
    try:
        manifest = json.loads((path.parent / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    splits, files = manifest.get("splits"), manifest.get("files")
    listed = (isinstance(splits, dict) and path.suffix == ".npz" and path.stem in splits) or (
        isinstance(files, dict) and files.get("npz") == path.name
    )
    levels = manifest.get("levels") if listed else None
    return levels if isinstance(levels, int) and not isinstance(levels, bool) and levels >= 2 else None


def content_hash(images: np.ndarray, labels: np.ndarray) -> str:
    """sha256 of a split's arrays, dtype and shape included (the manifest's ``sha256``)."""
    h = hashlib.sha256()
    for a in (images, labels):
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- the prepared data


def read_manifest(prepared_dir: str | Path, *, required: bool = True) -> dict | None:
    """``manifest.json`` of the prepared data; when it is missing or unreadable, a DataError
    naming it, or None when not ``required`` (status, cache checks)."""
    path = Path(prepared_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict):  # valid JSON, but not a manifest's object
            raise ValueError("not a manifest")
        return manifest
    except (OSError, ValueError):
        if required:
            raise DataError(f"{path}: not found or unreadable; run `{advise('prepare')}` first") from None
        return None


# The data params a prepared folder records (manifest.json's ``data``) beside its source and seed:
# each changes the prepared images or splits (raw_dir only says where a source's files are)
DATA_KEYS = ("image_size", "channels", "val_fraction", "test_fraction", "max_per_class", "max_levels")


def prepared_with(data: Any) -> dict[str, Any]:
    """The :data:`DATA_KEYS` of a ``data`` params block, as manifest.json records them."""
    return {k: v for k, v in data.model_dump(mode="json").items() if k in DATA_KEYS}


def same_source(a: str, b: str) -> bool:
    """Whether two ``data.source`` strings name the same data (a path as given or resolved)."""
    (ka, _, pa), (kb, _, pb) = a.partition(":"), b.partition(":")
    return ka == kb and (
        pa == pb or (bool(pa) and Path(pa).expanduser().resolve() == Path(pb).expanduser().resolve())
    )


def not_as_asked(data: Any, manifest: dict) -> list[str]:
    """How the prepared data of ``manifest`` differs from what a ``data`` params block asks for
    (``data.val_fraction: 0.1 -> 0.2``): its source, and each key the manifest records whose other
    value would make other data of that source (``max_levels: 32`` keeps digits' 17 levels: no
    difference). A manifest written before it recorded them: the source alone."""
    if not same_source(manifest["source"], data.source):
        return [f"data.source: {manifest['source']} -> {data.source}"]
    made = manifest.get("data")
    if not isinstance(made, dict):
        return []
    found = made.get("found") if isinstance(made.get("found"), dict) else {}
    folder = manifest["source"].startswith("folder:")  # sized and converted as they are read
    return [
        f"data.{k}: {made.get(k)} -> {v}"
        for k, v in prepared_with(data).items()
        if made.get(k) != v and (folder or not _same_outcome(k, made.get(k), v, found))
    ]


def _same_outcome(key: str, a: Any, b: Any, found: dict) -> bool:
    """Whether ``key`` set to ``a`` or to ``b`` makes the same data of the source as it was read
    (``found``: its shape when read unconverted, levels, images per class)."""
    shape, levels, counts = found.get("shape"), found.get("levels"), found.get("counts")
    if key == "max_levels" and isinstance(levels, int) and levels > 0:
        return min(levels, a or levels) == min(levels, b or levels)
    if key == "channels" and shape:
        return (a or shape[0]) == (b or shape[0])
    if key == "image_size" and shape:
        return list(a or shape[1:]) == list(b or shape[1:])
    if key == "max_per_class" and isinstance(counts, list):
        return [min(n, a or n) for n in counts] == [min(n, b or n) for n in counts]
    return False


def check_levels(images: np.ndarray, levels: object, where: str) -> int:
    """``levels`` as a manifest states it, checked against the stored images: an integer >= 2
    that every pixel is below (else ``level / (levels - 1)`` would leave [0, 1])."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise DataError(f"{where}: levels must be an integer >= 2, got {levels!r}")
    if images.size and int(images.max()) >= levels:
        raise DataError(f"{where}: pixel level {int(images.max())} is not below levels={levels}")
    return levels


def data_spec(manifest: dict) -> DataSpec:
    c, h, w = manifest["shape"]
    return DataSpec(c, h, w, manifest["levels"], manifest["num_classes"])


def data_hash(manifest: dict) -> str:
    """One hash of every split's content: what a stage's cache key says about the data."""
    return fingerprint({s: v["sha256"] for s, v in manifest["splits"].items()})


def check_trained_on(family: str, trained_on: str | None, manifest: dict, prepared_dir, why: str) -> None:
    """Refuse a model trained on other data (``trained_on``: its model.json's hash) than the
    prepared data of ``manifest`` holds, saying ``why`` that matters to the command."""
    holds = data_hash(manifest)
    if trained_on and trained_on != holds:
        raise DataError(
            f"{family}: trained on other data ({trained_on[:12]}) than {prepared_dir} holds ({holds[:12]}): "
            f"{why}; prepare the data it was trained on (with the params it was trained with) or retrain "
            f"it (`{advise(f'train --family {family}')}`)"
        )


def load_split(prepared_dir: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(images in [0, 1] float32 (N, C, H, W), labels int64 (N,), manifest); the content
    hash is checked against the manifest."""
    manifest = read_manifest(prepared_dir)
    path = Path(prepared_dir) / f"{split}.npz"
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError, zlib.error) as e:  # damaged, truncated
        raise DataError(
            f"{path}: unreadable ({e}); re-run `{advise('prepare')}` (or `dvc pull prepare`)"
        ) from None
    expected = manifest.get("splits", {}).get(split, {}).get("sha256")
    if expected is None:
        raise DataError(
            f"{Path(prepared_dir) / 'manifest.json'}: no sha256 for split {split}; "
            f"re-run `{advise('prepare')}`"
        )
    if content_hash(images, labels) != expected:
        raise DataError(f"{path}: content hash does not match manifest.json; re-run `{advise('prepare')}`")
    levels = check_levels(images, manifest.get("levels"), str(Path(prepared_dir) / "manifest.json"))
    x = torch.from_numpy(images.astype(np.float32) / (levels - 1))
    return x, torch.from_numpy(labels.astype(np.int64)), manifest


# ----------------------------------------------------------------------------- a folder source's images


def _inside(path: Path, root: Path) -> None:
    """A class folder or image must stay inside the data folder: a symbolic link out of it
    (or back to it, a class folder linking to its parent) is refused, as is a link that leads
    back to itself (Python's resolve raised a RuntimeError: a traceback)."""
    try:
        real, top = path.resolve(), root.resolve()
    except RuntimeError:  # (Python 3.13 raises an OSError: ELOOP)
        raise DataError(f"{path}: a symbolic link that leads back to itself; remove it") from None
    if real == top or real in top.parents:  # a loop: the class would hold the data itself
        raise DataError(f"{path}: a symbolic link to {real}, which holds the class folders; remove it")
    if top not in real.parents:
        raise DataError(
            f"{path}: a symbolic link to {real}, outside the data folder {root}; copy the files in"
        )


def _class_files(folder: Path, root: Path, say: bool = True) -> list[Path]:
    """A class folder's images, in the folders below it too (as torchvision's ImageFolder reads
    them), in sorted order; hidden files and folders left out. Another file in the class folder
    is an error; one in a folder below it (a raw/ of camera files, notes) is left out with a
    warning. A folder below linking out of the class folder is refused (its images would get
    two classes)."""
    _inside(folder, root)
    top = folder.resolve()
    if top != root.resolve() / folder.name and (other := _in_another_class(top, folder, root)):
        raise DataError(f"{folder}: a symbolic link to {top}, inside the class folder {other}; its "
                        "images would be in two classes: remove the link")  # fmt: skip
    found, skipped, others, todo, seen = [], [], [], [folder], set()
    while todo:
        d = todo.pop()
        if d != folder and d.resolve() != top and top not in d.resolve().parents:
            raise DataError(f"{d}: a symbolic link to {d.resolve()}, outside its class folder {folder}; "
                            "its images would be in two classes: remove the link")  # fmt: skip
        if d.resolve() in seen:  # a link to a folder already read (or a loop)
            continue
        seen.add(d.resolve())
        entries = sorted(f for f in d.iterdir() if not f.name.startswith("."))
        todo += reversed([f for f in entries if f.is_dir()])
        for f in entries:
            if f.is_dir():
                continue
            _inside(f, root)
            if f.name.lower() in OS_FILES:  # written by a file manager, not by the user: passed over
                continue
            if f.suffix.lower() in IMAGE_SUFFIXES:
                real = f.resolve()
                if top not in real.parents and (other := _in_another_class(real, folder, root)):
                    raise DataError(f"{f}: a symbolic link to {real}, inside the class folder {other}; "
                                    "it would be in two classes: remove the link")  # fmt: skip
                found.append(f)
            elif d == folder:
                others.append(f)
            else:
                skipped.append(f)
    if others:
        raise NotImages(others)
    if skipped and say:
        log.warning("%s: %d file(s) that are no images in the folders below it left out (first: %s)",
                    folder, len(skipped), skipped[0])  # fmt: skip
    return sorted(found)


def folder_images(root: Path, say: bool = True) -> tuple[list[str], list[tuple[Path, int]]]:
    """A folder source's classes and its images as prepare reads them, each with its class."""
    if root.is_file():
        hint = f"npz:{root}" if root.suffix.lower() == ".npz" else "a folder of class folders"
        raise DataError(f"{root}: a file, not a folder (data.source folder:PATH); give {hint}")
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class sub-folders (expected one folder per class)")
    loose = sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if loose and say:  # beside the class folders: in no class
        log.warning(
            "%s: %d image file(s) beside the class folders, in no class, left out (first: %s); "
            "move them into the folder of their class", root, len(loose), loose[0],
        )  # fmt: skip
    files: list[tuple[Path, int]] = []
    others: list[Path] = []
    for k, name in enumerate(classes):
        try:
            files += [(f, k) for f in _class_files(root / name, root, say)]
        except NotImages as e:  # every class's named at once, not one a run
            others += e.files
    if others:
        raise NotImages(others)
    return classes, files


class NotImages(DataError):
    """Files in class folders that are no images (by their suffix): all of them named."""

    def __init__(self, files: list[Path]):
        self.files = files
        f = files[0]
        if len(files) == 1:
            super().__init__(
                f"{f}: not an image file (suffix {f.suffix or 'none'}); move it out of the data folder"
            )
            return
        shown = ", ".join(f"{g.parent.name}/{g.name}" for g in files[:5]) + (
            ", ..." if len(files) > 5 else ""
        )
        super().__init__(
            f"{f.parent.parent}: {len(files)} files in the class folders are no image files ({shown}); move "
            "them out of the data folder"
        )

    def __reduce__(self):  # (pickled, as across processes, it is made again from its files)
        return (NotImages, (self.files,))


def folder_listing(root: str | Path, files: list[tuple[Path, int]] | None = None) -> str:
    """A digest of the images a folder source holds as prepare reads them: each one's path in
    the folder and its size (no times, so the same images give the same digest in any clone).
    The manifest keeps it; `genzoo status` lists the folder again to say it changed since."""
    root = Path(root)
    files = folder_images(root, say=False)[1] if files is None else files
    return fingerprint([(f.relative_to(root).as_posix(), f.stat().st_size, k) for f, k in files])


def _in_another_class(real: Path, folder: Path, root: Path) -> Path | None:
    """The class folder of ``root`` other than ``folder`` that ``real`` (a resolved path) lies in or
    is, if any (a hidden store at the top, ``.pool/``, or an image beside the class folders: none)."""
    for d in root.iterdir():
        if d.is_dir() and not d.name.startswith(".") and d.name != folder.name:
            other = d.resolve()
            if real == other or other in real.parents:
                return d
    return None


# the files a file manager leaves in folders it showed (thumbnail caches, view settings)
OS_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini"})
