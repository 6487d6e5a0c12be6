"""The files a labelled synthetic dataset is made of (ground floor): one writer for every format,
the dataset card, and what a card may quote of the evaluation. ``tasks/augment.py`` draws the
images; any stage that makes a dataset (teacher soft labels, filters of its own) writes it here.

``<out_dir>/<name>/`` holds, written together into a fresh folder that then replaces the old
one whole (``layout.replacing_dir``):

- ``images.npz`` (always): ``images`` uint8 levels ``(N, C, H, W)``, ``labels`` int64 ``(N,)``,
  ``source`` (the family that drew each image, or ``real``), ``is_synthetic`` bool ``(N,)``,
  ``class_names`` str ``(K,)`` (label i's name), and with soft labels ``soft_labels`` float32
  ``(N, K)`` (each row a probability vector);
- ``images/<NN>_<class>/<i>.png`` (format ``imagefolder``): class folders named so that their
  sorted order is the label order, which is how torchvision's ``ImageFolder`` numbers classes;
  ``<i>`` is the image's row in ``images.npz``; every class has its folder (``.empty`` in one
  with no image);
- ``hf/`` (format ``hf``, the ``hf`` extra): ``datasets.Dataset.save_to_disk``, columns ``image``
  (``Image``), ``label`` (``ClassLabel`` with the class names), ``source``, ``is_synthetic`` and
  ``soft_labels`` when given;
- ``README.md``: the dataset card (``dataset_card.md.j2``), rendered from the manifest;
- ``manifest.json``: what made it, the formats and files, the sha256 of ``images.npz``, and the
  figures the card quotes.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genzoo.tasks.config import ParamsError
from genzoo.tasks.data import data_hash
from genzoo.tasks.errors import GenzooError, writing
from genzoo.tasks.layout import (
    check_replaceable,
    manifest_digest,
    mark,
    of_reference,
    read_json,
    replacing_dir,
    shown,
    unmeasured,
)

FORMATS = ("npz", "imagefolder", "hf")
DEFAULT_FORMATS = ("npz", "imagefolder")  # what needs no extra
NPZ, IMAGEFOLDER, HF, CARD = "images.npz", "images", "hf", "README.md"
KIND = "synthetic-dataset"
# in a class folder of the imagefolder format that holds no image (ImageFolder skips the file)
EMPTY_CLASS = ".empty"
EMPTY_NOTE = (
    "No image of this class in this dataset. The folder is kept so that torchvision's ImageFolder\n"
    "numbers the classes after it by their labels; open it with ImageFolder(root, allow_empty=True).\n"
)
REAL = "real"  # the source of a real image in a mixed dataset
CARD_TEMPLATE = Path(__file__).with_name("dataset_card.md.j2")
# scikit-learn's load_digits() is the UCI "Optical Recognition of Handwritten Digits" data
DIGITS_LICENCE = (
    "CC BY 4.0. The source images are scikit-learn's `load_digits()`, the UCI Machine Learning "
    "Repository's Optical Recognition of Handwritten Digits (E. Alpaydin, C. Kaynak, 1998; "
    "https://archive.ics.uci.edu/dataset/80), licensed under Creative Commons Attribution 4.0: "
    "credit the source when you share or publish this dataset."
)


class MissingExtra(GenzooError, ImportError):
    """An optional format asked for whose package is not installed; the message names the extra."""


# ---------------------------------------------------------------------------- what is written


@dataclass
class DatasetContent:
    """The images of a dataset and what is known of each (checked on construction).

    images: uint8 levels ``(N, C, H, W)``, every pixel below ``levels``.
    labels: int ``(N,)`` class indices into ``class_names``.
    source: ``(N,)`` the family that drew each image, or ``"real"`` for a real one
        (``is_synthetic`` is derived from it, so the two cannot disagree).
    soft_labels: optional float ``(N, K)``, K = ``len(class_names)``: a probability vector per
        image (a teacher's), stored beside the hard labels.
    """

    images: np.ndarray
    labels: np.ndarray
    source: np.ndarray | Sequence[str]
    levels: int
    class_names: Sequence[str]
    soft_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        self.labels = np.asarray(self.labels)
        self.source = np.asarray(self.source).astype(str)
        self.class_names = [str(c) for c in self.class_names]
        n, k = len(self.labels), len(self.class_names)
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"dataset images: expected uint8 (N, C, H, W), got {self.images.dtype} {self.images.shape}"
            )
        if not 2 <= self.levels <= 256 or int(self.images.max(initial=0)) >= self.levels:
            raise ValueError(
                f"dataset images: levels={self.levels} must be in [2, 256] and above every pixel"
            )
        if self.labels.shape != (len(self.images),) or not np.issubdtype(self.labels.dtype, np.integer):
            raise ValueError(
                f"dataset labels: expected {len(self.images)} integers, "
                f"got {self.labels.dtype} {self.labels.shape}"
            )
        if n and (self.labels.min() < 0 or self.labels.max() >= k):
            raise ValueError(f"dataset labels: must be class indices in [0, {k}) (the class names)")
        if len(set(self.class_names)) != k or k < 1:
            raise ValueError(f"dataset class names: {k} names, not all distinct: {self.class_names}")
        if self.source.shape != (n,):
            raise ValueError(
                f"dataset source: one family (or {REAL!r}) per image, got shape {self.source.shape}"
            )
        self.labels = self.labels.astype(np.int64)
        if self.soft_labels is not None:
            s = np.asarray(self.soft_labels, dtype=np.float32)
            if s.shape != (n, k):
                raise ValueError(f"soft_labels: expected shape (N, K) = ({n}, {k}), got {s.shape}")
            if not np.isfinite(s).all() or (s < 0).any() or (s > 1).any():
                raise ValueError("soft_labels: expected probabilities in [0, 1] (no NaN or inf)")
            worst = float(np.abs(s.sum(1) - 1).max(initial=0))
            if worst > 1e-3:
                raise ValueError(f"soft_labels: each row must sum to 1 (off by up to {worst:.3g})")
            self.soft_labels = s

    @property
    def is_synthetic(self) -> np.ndarray:
        return self.source != REAL


def check_formats(formats: Sequence[str], key: str = "augment.formats") -> tuple[str, ...]:
    """The formats in writing order, npz always among them (genzoo.load_dataset reads it), named
    or not; an unknown one or a missing extra fails here, before any compute."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ParamsError(f"{key}: unknown format(s) {unknown}; known: {', '.join(FORMATS)}")
    if "hf" in formats:
        _datasets(key)
    return tuple(f for f in FORMATS if f in formats or f == "npz")


def _datasets(key: str = "augment.formats"):
    """The Hugging Face ``datasets`` package, imported on demand (the ``hf`` extra)."""
    try:
        import datasets
    except ImportError as e:
        raise MissingExtra(
            f"{key}: the hf format needs the Hugging Face `datasets` package ({e}); "
            "install the extra (in a checkout: make install EXTRAS=hf; else pip install 'genzoo[hf]')"
        ) from None
    return datasets


def class_folders(class_names: Sequence[str]) -> list[str]:
    """One folder name per class, in label order, whose sorted order is that order (torchvision's
    ``ImageFolder`` gives class ``i`` to the ``i``-th of ``sorted(os.scandir names)``): the index
    zero-padded to one width, then the name reduced to ``[A-Za-z0-9._-]`` (no path separator,
    no ``..``, no leading dot; whatever else a name holds becomes ``_``), at most 60 characters
    of it. Names are for people; the index alone decides the order."""
    width = max(2, len(str(len(class_names) - 1)))
    out = []
    for i, name in enumerate(class_names):
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name))
        safe = re.sub(r"\.{2,}", ".", safe).strip("._")[:60].rstrip("._")
        out.append(f"{i:0{width}d}_{safe}" if safe else f"{i:0{width}d}")
    return out


def _png(img: np.ndarray, levels: int) -> bytes:
    """One image (C, H, W) of levels as PNG bytes, levels spread over 0..255."""
    from PIL import Image

    arr = np.rint(img.astype(np.float64) * 255 / (levels - 1)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)).save(buf, format="PNG")
    return buf.getvalue()


def _npz_bytes(content: DatasetContent) -> bytes:
    arrays = {
        "images": content.images,
        "labels": content.labels,
        "source": content.source,
        "is_synthetic": content.is_synthetic,
        "class_names": np.array(list(content.class_names), dtype=str),  # label i's name (no pickle)
    }
    if content.soft_labels is not None:
        arrays["soft_labels"] = content.soft_labels
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _write_imagefolder(folder: Path, content: DatasetContent, pngs: list[bytes]) -> list[str]:
    """A folder per class, every class's (a missing one would shift the index ImageFolder gives
    every class after it); one with no image holds :data:`EMPTY_CLASS`, which keeps it where
    git and DVC drop empty folders."""
    names = class_folders(content.class_names)
    counts = np.bincount(content.labels, minlength=len(names))
    for name, count in zip(names, counts, strict=True):
        (folder / name).mkdir(parents=True)
        if not count:
            (folder / name / EMPTY_CLASS).write_text(EMPTY_NOTE)
    for i, (png, c) in enumerate(zip(pngs, content.labels, strict=True)):
        (folder / names[c] / f"{i:06d}.png").write_bytes(png)
    return names


def _write_hf(folder: Path, content: DatasetContent, pngs: list[bytes], fingerprint: str) -> list[str]:
    datasets = _datasets()
    k = len(content.class_names)
    features = {
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=list(content.class_names)),
        "source": datasets.Value("string"),
        "is_synthetic": datasets.Value("bool"),
    }
    columns: dict[str, Any] = {
        "image": [{"bytes": b, "path": None} for b in pngs],
        "label": content.labels.tolist(),
        "source": content.source.tolist(),
        "is_synthetic": content.is_synthetic.tolist(),
    }
    if content.soft_labels is not None:
        fixed = getattr(datasets, "List", None) or datasets.Sequence  # datasets < 4: Sequence
        features["soft_labels"] = fixed(datasets.Value("float32"), length=k)
        columns["soft_labels"] = content.soft_labels.tolist()
    table = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    # the content's own hash as its fingerprint (from_dict draws a random one), so the same
    # dataset writes the same files
    ds = datasets.Dataset(table.data, info=table.info, fingerprint=fingerprint[:16])
    bars = datasets.is_progress_bar_enabled()  # quiet while writing; the user's setting restored
    datasets.disable_progress_bars()
    try:
        ds.save_to_disk(str(folder))
    finally:
        if bars:
            datasets.enable_progress_bars()
    return list(features)


# ---------------------------------------------------------------------------- the writer


def write_dataset(
    target: str | Path,
    content: DatasetContent,
    *,
    formats: Sequence[str] = DEFAULT_FORMATS,
    info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``content`` to ``target`` in ``formats`` with its card and manifest -> the manifest.

    ``info`` is what the caller knows of how the images were made, copied into the manifest
    (plain JSON) and quoted by the card: ``name``, ``request``, ``recipe`` (a plain dict),
    ``families`` (family -> model sha256, MLflow run...), ``params_hash``, ``seed``, ``filters``
    (drawn / rejected counts, ``copy_radius``), ``quality`` (the dataset's own figures),
    ``measured`` (:func:`measured_figures`) and ``data`` (:func:`source_data`). The writer adds
    the structure: formats and files, shape, levels, classes and their folders, counts per
    class and per source, soft-label presence, and the sha256 of ``images.npz``.

    Atomic: everything lands in a fresh folder beside ``target`` that replaces it whole once
    complete; a folder genzoo did not write, or a link, at ``target`` is refused before anything
    is written (:func:`layout.replacing_dir`); a full disk leaves the old version whole."""
    target = Path(target)
    formats = check_formats(formats)
    if target.parent.is_symlink():  # the dataset would land wherever the link points
        raise ValueError(f"{target.parent}: is a symbolic link; give the folder it points to")
    check_replaceable(target, KIND)
    info = json.loads(json.dumps(dict(info or {}), default=str))  # plain JSON, the caller's copy untouched
    npz = _npz_bytes(content)
    sha = hashlib.sha256(npz).hexdigest()
    k = len(content.class_names)
    sources, counts = np.unique(content.source, return_counts=True)
    manifest: dict[str, Any] = {
        **info,
        **mark(KIND),
        "formats": list(formats),
        "files": {"npz": NPZ, "card": CARD}
        | ({"imagefolder": IMAGEFOLDER} if "imagefolder" in formats else {})
        | ({"hf": HF} if "hf" in formats else {}),
        "recipe": dict(info.get("recipe") or {}),
        "shape": list(content.images.shape[1:]),
        "levels": int(content.levels),
        "n": len(content.labels),
        "num_classes": k,
        "class_names": list(content.class_names),
        "class_folders": class_folders(content.class_names) if "imagefolder" in formats else None,
        "counts_per_class": np.bincount(content.labels, minlength=k).tolist(),
        "counts_per_source": {str(s): int(c) for s, c in zip(sources, counts, strict=True)},
        "soft_labels": content.soft_labels is not None,
        "sha256": sha,
    }
    defaults = (
        ("name", target.name),
        ("families", {}),
        ("filters", None),
        ("quality", None),
        ("measured", {}),
    )
    for key, empty in defaults:
        manifest.setdefault(key, empty)  # what the caller did not give: the card says so
    card = render_card(manifest, root=_root_hint(target))
    # what genzoo wrote of its own two texts: a later replacement refuses them edited (check_owned)
    manifest["card_sha256"] = hashlib.sha256(card.encode()).hexdigest()
    manifest["manifest_sha256"] = manifest_digest(manifest)
    with (
        writing(f"dataset {manifest['name']!r}", target),
        replacing_dir(target, KIND) as tmp,
    ):
        (tmp / NPZ).write_bytes(npz)
        pngs = [_png(img, content.levels) for img in content.images] if set(formats) - {"npz"} else []
        if "imagefolder" in formats:
            _write_imagefolder(tmp / IMAGEFOLDER, content, pngs)
        if "hf" in formats:
            _write_hf(tmp / HF, content, pngs, sha)
        (tmp / CARD).write_text(card, encoding="utf-8")  # the bytes card_sha256 is of, in any locale
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


# ---------------------------------------------------------------------------- the card


def _root_hint(target: Path) -> str:
    """The dataset folder's path as the card's snippets give it: from the working directory it
    was written from (the project's root: ``data/augment/NAME``), else its name."""
    try:
        return target.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:  # outside it: the name, which the comment beside it explains
        return target.name


def render_card(manifest: Mapping[str, Any], root: str | None = None) -> str:
    """The dataset card (markdown) from its manifest: nothing on it that the manifest lacks
    (``root``: the folder's path its snippets use; its name by default)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(CARD_TEMPLATE.parent),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # markdown, not HTML
    )
    env.filters["num"] = _num
    env.filters["pct"] = lambda v: f"{100 * v:.1f}"  # an accuracy (or its interval) in percent
    env.filters["points"] = lambda v: f"{100 * v:+.1f}"  # a change of accuracy in percentage points
    env.filters["cell"] = lambda v: " ".join(str(v).split()).replace("|", "\\|")  # one table cell
    m = dict(manifest)
    data = {"source": None, "sha256": None} | dict(m.get("data") or {})
    recorded = dict(m.get("families") or {})
    synthetic = [s for s in m["counts_per_source"] if s != REAL and s not in recorded]
    rows = zip(range(m["num_classes"]), m["class_names"], m["class_folders"] or [None] * m["num_classes"],
               m["counts_per_class"], strict=True)  # fmt: skip
    return env.get_template(CARD_TEMPLATE.name).render(
        m=m, data=data, licence=licence(data["source"]), families=[*recorded, *synthetic],
        recorded=recorded, rows=list(rows), root=root or m.get("name") or ".",
    )  # fmt: skip


def _num(v: Any, digits: int = 4) -> str:
    """A figure as the card shows it (the manifest keeps full precision)."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def licence(source: str | None) -> str:
    """The licence of a dataset drawn from models trained on ``source`` (data.source): the source
    data's. genzoo knows the embedded digits'; of any other it records only that it applies."""
    if source == "digits":
        return DIGITS_LICENCE
    if source and source.startswith(("npz:", "folder:")):
        return (
            f"The licence of your source data ({source}) applies: these images come from models "
            "trained on it. genzoo does not know that licence; state it here before sharing."
        )
    return (
        f"The licence of the source data ({source or 'not recorded'}) applies: these images come "
        "from models trained on it. genzoo does not record it; check its terms before sharing."
    )


# ---------------------------------------------------------------------------- what a card quotes

QUALITY_FIGURES = ("fd", "kid", "precision", "recall", "density", "coverage", "class_accuracy")


def of_model(figures: Any, sha256: str | None) -> bool:
    """False when ``figures`` (a quality.json or usefulness.json) name the model they measured
    and it is not the one whose weights hash to ``sha256`` (a family trained again since it was
    measured); True otherwise (None: any model; a file written before they named their model)."""
    measured = figures.get("model_sha256") if isinstance(figures, dict) else None
    return not (sha256 and measured) or measured == sha256


def measured_figures(
    evaluation_dir: str | Path,
    families: Sequence[str],
    models: Mapping[str, str] | None = None,
    reference_key: str | None = None,
    recipe: str | None = None,
) -> dict[str, Any]:
    """Per family, what the evaluation measured of its model, as the card quotes it: quality
    (``<family>/quality.json``: figures with their 95% half-widths, memorization) and usefulness
    (``<family>/usefulness.json``: train-on-synthetic accuracy beside train-on-real, and the
    augmentation lift per real fraction); None where a file does not exist (not measured) or,
    given ``models`` (family -> sha256 of its weights), measured another model than that one
    (a family trained again since it was evaluated): ``other_model`` then names the files; a
    usefulness.json against other real-data rows than those ``reference_key`` names (the rows the
    current settings make: :func:`layout.usefulness_key`) is None too, named by ``other_reference``.
    The lift quoted is ``recipe``'s (the dataset's own) where it was measured, else the primary
    recipe's (``augment.recipe`` when the family was measured)."""
    folder = Path(evaluation_dir)
    reference = read_json(folder / "usefulness" / "reference.json") or {}
    if reference_key and reference.get("key") != reference_key:  # its train-on-real rows: other settings'
        reference = {}
    out: dict[str, Any] = {}
    for f in families:
        sha = (models or {}).get(f)
        docs = {k: read_json(folder / f / f"{k}.json") for k in ("quality", "usefulness")}
        other = [k for k, d in docs.items() if d is not None and not of_model(d, sha)]
        against = "usefulness" not in other and not of_reference(docs["usefulness"], reference_key)
        q, u = (None if k in other or (k == "usefulness" and against) else docs[k] for k in docs)
        out[f] = {
            "quality": _quality_figures(q, folder / f / "quality.json"),
            "usefulness": _usefulness_figures(u, reference, folder / f / "usefulness.json", recipe),
        }
        if other:
            out[f]["other_model"] = {k: shown(folder / f / f"{k}.json") for k in other}
        if against:
            out[f]["other_reference"] = shown(folder / f / "usefulness.json")
    return out


def _mean_ci(d: Mapping[str, Any], ci: Mapping[str, Any], key: str) -> dict[str, float] | None:
    if not isinstance(d.get(key), int | float):
        return None
    half = ci.get(key)
    return {"mean": float(d[key]), "ci95": float(half) if isinstance(half, int | float) else None}


def _quality_figures(q: Any, path: Path) -> dict[str, Any] | None:
    if not isinstance(q, dict):
        return None
    ci = q.get("ci95") or {}
    figures = {k: v for k in QUALITY_FIGURES if (v := _mean_ci(q, ci, k)) is not None}
    mem = q.get("memorization") if isinstance(q.get("memorization"), dict) else {}
    mem_ci = ci.get("memorization") or {}
    memorization = {k: v for k in ("ratio", "copies") if (v := _mean_ci(mem, mem_ci, k)) is not None}
    seeds = (q.get("protocol") or {}).get("seeds") if isinstance(q.get("protocol"), dict) else None
    return {
        "file": shown(path),
        "figures": figures,
        "memorization": memorization or None,
        "seeds": seeds,
        "n": q.get("n"),
    }


def _usefulness_figures(
    u: Any, reference: Mapping[str, Any], path: Path, recipe: str | None = None
) -> dict[str, Any] | None:
    if not isinstance(u, dict):
        return None
    own = (u.get("recipes") or {}).get(recipe) if isinstance(u.get("recipes"), dict) else None
    if isinstance(own, dict) and isinstance(own.get("augmentation"), dict):  # the dataset's recipe
        u = {**u, "recipe": recipe, "augmentation": own["augmentation"],
             "synthetic_per_real": own.get("synthetic_per_real"), "filters": own.get("filters")}  # fmt: skip
    elif isinstance(u.get("recipes"), dict) and isinstance(u["recipes"].get(u.get("recipe")), dict):
        u = {**u, "filters": u["recipes"][u["recipe"]].get("filters")}  # the primary recipe's
    real = (reference.get("real") or {}).get("1.0") or {}
    tstr = {
        c: {
            "synthetic": {"mean": s["mean"], "ci95": s.get("ci95")},
            "real": real[c]["mean"] if isinstance(real.get(c), dict) else None,
        }
        for c, s in (u.get("tstr") or {}).items()
        if isinstance(s, dict) and "mean" in s
    }
    lift = {
        p: {
            c: {"mean": v["lift"]["mean"], "ci95": v["lift"].get("ci95")}
            for c, v in per.items()
            if isinstance(v, dict) and isinstance(v.get("lift"), dict)
        }
        for p, per in (u.get("augmentation") or {}).items()
        if isinstance(per, dict)
    }
    protocol = u.get("protocol") if isinstance(u.get("protocol"), dict) else {}
    block = (protocol.get("recipes") or {}).get(u.get("recipe"), {})
    at = u.get("synthetic_per_real") if isinstance(u.get("synthetic_per_real"), dict) else {}
    k = block.get("synthetic_per_real", protocol.get("synthetic_per_real"))
    subsets, seeds = len(protocol.get("subset_seeds") or [0]), protocol.get("seeds")
    # what each lift's interval is over: the subsets' means below 1 where several, else the seeds
    over = {p: ("subsets", subsets) if float(p) < 1 and subsets > 1 else ("seeds", seeds) for p in lift}
    return {
        "file": shown(path),
        "tstr": tstr,
        "lift": lift,
        "recipe": u.get("recipe"),
        "synthetic_per_real": k,  # the recipe's
        "synthetic_per_real_at": {p: at.get(p, k) for p in lift},  # as measured at each fraction
        "real_share": block.get("real_share"),  # how the classifier mixed them: real images per batch
        "seeds": seeds,
        # a pool the filters emptied: that lift is real data alone's, no measure of the family
        "unmeasured": {p: why for p in lift if (why := unmeasured((u.get("filters") or {}).get(p) or {}))},
        "over": {p: o for p, (o, _) in over.items()},
        "two_values": any(n == 2 for _, n in over.values()),  # an interval of 2: 12.7 standard errors
        "one_subset": any(float(p) < 1 for p in lift) and subsets == 1,
        "n_train": protocol.get("n_train"),  # the real training split: the pool at 100% is k x it
        "reject_copies": protocol.get("reject_copies"),  # the pools' near-copy filter, as measured
        "augmentation": protocol.get("augmentation"),  # the baseline CNN's classical augmentation, in words
    }


def source_data(prepared_manifest: Mapping[str, Any] | None, prepared_dir: str | Path) -> dict[str, Any]:
    """What the card says of the real data the models were trained on: its source and hash."""
    if not prepared_manifest:
        return {"source": None, "sha256": None, "prepared_dir": shown(prepared_dir)}
    return {
        "source": prepared_manifest.get("source"),
        "sha256": data_hash(dict(prepared_manifest)),
        "prepared_dir": shown(prepared_dir),
        "num_classes": prepared_manifest.get("num_classes"),
    }
