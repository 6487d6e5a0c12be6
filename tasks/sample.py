"""Sample a trained model to ``PATH.npz`` (images float32 (N, C, H, W) in [0, 1], labels
int64) and ``PATH.png`` (a grid), both written atomically."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from genzoo import models
from genzoo.metrics.quality import BLOCK_BYTES
from genzoo.models import evaluator as evaluator_module
from genzoo.models.base import Decoder, Encoder, GenerativeModel, atomic_write
from genzoo.models.evaluator import Ensemble, Evaluator, EvaluatorConfig, train_evaluator
from genzoo.tasks.config import Recipe, advise, did_you_mean
from genzoo.tasks.data import data_hash, read_manifest
from genzoo.tasks.errors import GenzooError, ModelFileError, ModelNotFound, check_output_dir
from genzoo.tasks.figures import grid, save_png

log = logging.getLogger("genzoo.sample")


def resolve_class(
    model: GenerativeModel, cls: str | int | None, class_names: list[str] | None, flag: str = "--class"
) -> int | None:
    """``cls`` (a class name, else an index) as the model's class index; ``flag`` names it in errors."""
    if cls is None:
        return None
    names = class_names or [str(i) for i in range(model.spec.num_classes)]
    if str(cls) in names:
        return _warn_unseen(model, names.index(str(cls)), names, flag)
    try:
        k = int(cls)
    except ValueError:
        raise ValueError(f"{flag} {cls!r}: not a class name or index; classes: {names}") from None
    if not 0 <= k < model.spec.num_classes:
        raise ValueError(f"{flag} {k}: out of range [0, {model.spec.num_classes})")
    return _warn_unseen(model, k, names, flag)


def _warn_unseen(model: GenerativeModel, k: int, names: list[str], flag: str = "--class") -> int:
    if not torch.isfinite(model.log_class_prior[k]):  # (train.exclude_classes: never drawn unasked)
        log.warning(
            "%s %s: left out of this model's training (exclude_classes): its images come from "
            "weights that never saw one",
            flag,
            names[k],
        )
    return k


@torch.inference_mode()
def draw(
    model: GenerativeModel,
    n: int,
    *,
    cls: int | None = None,
    labels: torch.Tensor | None = None,
    seed: int = 0,
    batch: int = 256,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images from ``model`` in batches of ``batch``: images float32 (n, C, H, W) in [0, 1]
    on the CPU and their labels int64 (n,): ``labels`` when given, else all ``cls``, else drawn
    from the label prior. Same ``seed`` (and batch), same images."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels: {len(labels)} given for {n} images")
    gen = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    from genzoo.models.trainer import on_terminal

    # a bar on a terminal only: into a pipe or a file its carriage returns are noise in the log
    with tqdm(
        total=n, desc=f"sampling {model.family}", disable=not progress or not on_terminal(), leave=False
    ) as bar:
        for start in range(0, n, batch):
            b = min(batch, n - start)
            if labels is not None:
                y = labels[start : start + b].long().cpu()  # (b,)
            elif cls is not None:
                y = torch.full((b,), cls, dtype=torch.long)
            else:
                y = model.fill_labels(b, None, gen).cpu()
            xs.append(model.sample(b, y.to(model.device), generator=gen).float().cpu())  # (b, C, H, W)
            ys.append(y)
            bar.update(b)
    return torch.cat(xs), torch.cat(ys)


def check_request(n: int, out: str | Path) -> Path:
    """Refuse, before any work, a count below 1 or an ``out`` that cannot take a draw; the path
    without its suffix."""
    if n <= 0:
        raise ValueError(f"--n must be positive, got {n}")
    out = Path(out)
    if out.suffix in (".npz", ".png"):
        out = out.with_suffix("")
    # a folder it cannot write to: said before the sampling, not after
    check_output_dir(out.parent, "out", into=True)
    for target in (out.with_name(out.name + ".npz"), out.with_name(out.name + ".png")):
        if target.is_dir():  # neither file is written (the .npz was, before the .png failed)
            raise GenzooError(f"out={out}: {target} is a folder; choose another --out")
    # an earlier draw is replaced; a file of someone else's of that name is not
    mine = _a_sample(out.with_name(out.name + ".npz"))
    for target in (out.with_name(out.name + ".npz"), out.with_name(out.name + ".png")):
        if target.is_symlink() or (target.exists() and not mine):
            raise GenzooError(
                f"out={out}: {target} exists and is not a draw of genzoo sample (an .npz of images and "
                "labels); choose another --out, or remove it"
            )
    return out


def sample_to_file(
    model: GenerativeModel,
    n: int,
    out: str | Path,
    *,
    cls: int | None = None,
    seed: int = 0,
    batch: int = 256,
    progress: bool = True,
) -> tuple[Path, Path]:
    """:func:`draw` written to ``out.npz`` (images, labels) and ``out.png`` (a grid)."""
    out = check_request(n, out)
    x, y = draw(model, n, cls=cls, seed=seed, batch=batch, progress=progress)
    images, labels = x.numpy().astype(np.float32), y.numpy().astype(np.int64)
    buf = io.BytesIO()
    np.savez(buf, images=images, labels=labels)
    npz, png = out.with_name(out.name + ".npz"), out.with_name(out.name + ".png")
    order = np.argsort(labels[:400], kind="stable")  # the first 400 by class (of all: classes 0-3 alone)

    def write_pair(tmp: str) -> None:
        """The .npz, then the .png inside its write: a .png that fails keeps the old .npz."""
        Path(tmp).write_bytes(buf.getvalue())
        save_png(grid(torch.from_numpy(images[order]), nrow=min(20, max(1, int(len(order) ** 0.5)))), png)

    atomic_write(npz, write_pair)
    return npz, png


def _a_sample(npz: Path) -> bool:
    """``npz`` is a file :func:`sample_to_file` wrote, not a link: a zip of exactly float32
    images (N, C, H, W) and int64 labels (N,) (a dataset of images and labels, prepared data
    included, holds integer levels). Reads the arrays' headers only."""
    try:
        if npz.is_symlink() or not zipfile.is_zipfile(npz):
            return False
        with zipfile.ZipFile(npz) as z:
            if sorted(z.namelist()) != ["images.npy", "labels.npy"]:
                return False
            heads = {}
            for name in ("images", "labels"):
                with z.open(f"{name}.npy") as f:
                    version = np.lib.format.read_magic(f)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    heads[name] = read(f)  # (shape, fortran order, dtype)
    except (OSError, ValueError, zipfile.BadZipFile):
        return False
    (xs, _, xt), (ys, _, yt) = heads["images"], heads["labels"]
    return xt == np.float32 and yt == np.int64 and len(xs) == 4 and len(ys) == 1 and xs[0] == ys[0]


def load_model(
    ref: str | Path,
    runs_dir: str | Path = "runs",
    device: str | torch.device = "cpu",
    *,
    allow_unhashed: bool = False,
) -> GenerativeModel:
    """A trained model from ``ref``: a family name (its model in ``runs_dir/<family>/``), a
    saved ``model.json`` (or its folder), or a registered MLflow version
    ``models:/<family>/<version>``, ``/latest`` or ``@<alias>`` (downloaded from the tracking
    server into a temporary folder, removed once the weights are loaded). The weights' sha256
    is checked against model.json; one that records none loads only with ``allow_unhashed``."""
    ref = str(ref)
    if ref.startswith("models:/"):  # a registered version in MLflow
        from genzoo.tasks.tracking import download_registered

        with tempfile.TemporaryDirectory(prefix="genzoo-model-") as tmp:
            path = download_registered(ref, tmp) / "model.json"
            return load_model(path, runs_dir, device, allow_unhashed=allow_unhashed)
    if ref in models.REGISTRY and not Path(ref).exists():
        path = Path(runs_dir) / ref / "model.json"
    elif not Path(ref).exists() and "/" not in ref and Path(ref).suffix != ".json":  # a family misspelt
        raise ModelNotFound(
            f"{ref}: no such family ({', '.join(sorted(models.REGISTRY))}"
            f"{did_you_mean([ref], sorted(models.REGISTRY))}), nor a model.json or a folder holding one"
        )
    else:
        path = Path(ref)
        if path.is_dir():
            path = path / "model.json"
    if not path.with_suffix(".json").exists():
        if path.with_suffix(".json").name != "model.json":  # runs/vae/modle.json: not "no trained model"
            raise ModelNotFound(f"{path}: no such file (give a model.json, or the folder holding one)")
        hint = f"; run `{advise(f'train --family {ref}')}` first" if ref in models.REGISTRY else ""
        raise ModelNotFound(f"{path.with_suffix('.json')}: no trained model{hint}")
    from safetensors import SafetensorError

    try:
        net = models.load(path, device, allow_unhashed=allow_unhashed)
    except SafetensorError as e:  # e.g. a pickle named .safetensors: refused, never unpickled
        raise ModelFileError(
            f"{path.with_suffix('.safetensors')}: not a safetensors file ({e}); "
            "refused, nothing in it was run"
        ) from None
    if ref in models.REGISTRY and not path.with_name("metrics.json").is_file():  # runs/<family>/
        log.warning(
            "%s: metrics.json missing in %s (`genzoo status`: incomplete): a training of it stopped "
            "before its end, or is running; drawing from the model there as it is", ref, path.parent,
        )  # fmt: skip
    # the data it was trained on (model.json's hash) and its classes' names (None before they were kept)
    meta = json.loads(path.with_suffix(".json").read_text())
    net.data_sha256, net.class_names = meta.get("data_sha256"), meta.get("class_names")
    return net


def class_names(prepared_dir: str | Path, model: GenerativeModel | None = None) -> list[str] | None:
    """``model``'s class names (its model.json keeps them), else the prepared data's: None before
    ``genzoo prepare``, and when ``model`` was trained on other data (its model.json's data hash
    is not the prepared data's: their names would not be its classes; it is asked by class
    index then, with a warning)."""
    if getattr(model, "class_names", None):
        return list(model.class_names)
    manifest = read_manifest(prepared_dir, required=False)
    if not manifest:
        return None
    trained_on = getattr(model, "data_sha256", None)
    if trained_on and trained_on != data_hash(manifest):
        log.warning(
            "this %s model was trained on other data (%s) than %s (%s): its classes go by index "
            "(0 to %d), not by the prepared data's class names",
            model.family, trained_on[:12], prepared_dir, data_hash(manifest)[:12], model.spec.num_classes - 1,
        )  # fmt: skip
        return None
    return manifest["class_names"]


# ----------------------------------------------------------------------------- recipes


def perturbable() -> list[str]:
    """The families that can perturb real images: those with an encoder and a decoder
    (models/base.py's ``Encoder`` and ``Decoder``), a family added to the registry included."""
    return [f for f, cls in models.REGISTRY.items() if issubclass(cls, Encoder) and issubclass(cls, Decoder)]


# a recipe's teacher trains with this seed (+ the subset seed), apart from the classifiers' 0, 1, ...;
# the i-th member of an ensemble teacher with (i + 1) times it
TEACHER_SEED = 10_000


def train_teacher(x: torch.Tensor, y: torch.Tensor, spec, cfg: EvaluatorConfig, seed: int) -> Evaluator:
    """One teacher CNN, trained on one thread whatever the process has, so a stored teacher is the
    same network in every stage that trains it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_evaluator(x, y, spec, cfg, seed=seed)
    finally:
        torch.set_num_threads(threads)


class Teachers:
    """The teacher classifiers of one real training set (x, y), trained when a recipe first
    asks for them: a recipe with ``teachers: n`` relabels with the first n voting together
    (:class:`~genzoo.models.evaluator.Ensemble`), so recipes measured on the same subset share
    them, and member 0 is the single teacher every ``teachers: 1`` recipe uses. Member i trains
    with seed ``(i + 1) * TEACHER_SEED + base`` (``base``: the subset's seed), on one thread
    whatever the process's count, so a member is the same network wherever it is trained; with
    ``cache`` (a folder), each is stored there by a key of its data, config, seed and code and
    reused by the next stage that asks (the usefulness reference, each family's measurement and
    the pulled dataset share the ones of the whole split)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, spec, cfg: EvaluatorConfig, base: int = 0,
                 cache: str | Path | None = None):  # fmt: skip
        self.x, self.y, self.spec, self.cfg, self.base = x, y, spec, cfg, base
        self.cache = Path(cache) if cache is not None else None
        self.members: list[Evaluator] = []

    def seeds(self, n: int) -> list[int]:
        return [(i + 1) * TEACHER_SEED + self.base for i in range(n)]

    @functools.cached_property
    def _data(self) -> str:
        """Digest of the training set and the evaluator's code (models/evaluator.py and every
        genzoo file it imports, transitively), computed once for all members."""
        from genzoo.tasks.layout import module_code_hash

        h = hashlib.sha256()
        for part in (self.x.float().numpy().tobytes(), self.y.numpy().tobytes(),
                     module_code_hash(evaluator_module.__name__).encode()):  # fmt: skip
            h.update(part)
        return h.hexdigest()

    def _key(self, seed: int) -> str:
        about = [self._data, self.cfg.model_dump(mode="json"), seed, dataclasses.astuple(self.spec)]
        return hashlib.sha256(json.dumps(about, sort_keys=True).encode()).hexdigest()[:24]

    def _member(self, seed: int) -> Evaluator:
        path = self.cache / f"{self._key(seed)}.safetensors" if self.cache is not None else None
        if path is not None and path.exists():
            net = Evaluator(self.spec, self.cfg)
            net.load_state_dict(load_file(path))  # safetensors: tensors only, nothing executed
            return net.eval()
        net = train_teacher(self.x, self.y, self.spec, self.cfg, seed)
        if path is not None:
            atomic_write(path, lambda tmp: save_file(net.state_dict(), tmp))
        return net

    def __call__(self, recipe: Recipe) -> Evaluator | Ensemble | None:
        """The recipe's teacher (None when it has none)."""
        if not recipe.teacher:
            return None
        with torch.inference_mode(False):  # training, also when called from sampling code
            for seed in self.seeds(recipe.teachers)[len(self.members) :]:
                self.members.append(self._member(seed))
        members = self.members[: recipe.teachers]
        return members[0] if len(members) == 1 else Ensemble(members).eval()


def teacher_cache(params) -> Path:
    """Where trained teachers are kept (``<runs_dir>/teachers``): beside the stages' outputs, not
    among them, so a stage that trains one changes no other stage's dependencies."""
    return Path(params.run.runs_dir) / "teachers"


@dataclass
class Synthesis:
    """Synthetic images made by a recipe: ``x`` (M, C, H, W) in [0, 1], ``y`` (M,) the label each
    was made for, ``targets`` (M, K) the class probabilities to train on (the teacher's, else
    one-hot ``y``), and what the teacher's filters did."""

    x: torch.Tensor
    y: torch.Tensor
    targets: torch.Tensor
    drawn: int
    rejected: dict[str, int]
    emptied: list[int] = field(default_factory=list)  # classes drawn for whose every image a filter dropped

    @property
    def counts(self) -> dict[str, Any]:
        return {"drawn": self.drawn, "kept": len(self.y), "rejected": dict(self.rejected),
                "emptied": list(self.emptied)}  # fmt: skip


def balanced_labels(y: torch.Tensor, k: float, num_classes: int) -> torch.Tensor:
    """k labels per label of ``y``, class by class (``y``'s class balance)."""
    counts = torch.bincount(y, minlength=num_classes).double() * k
    return torch.arange(num_classes).repeat_interleave(counts.round().long())


@torch.inference_mode()
def perturb(model: GenerativeModel, x: torch.Tensor, y: torch.Tensor, strength: float, seed: int,
            batch: int = 256) -> torch.Tensor:  # fmt: skip
    """Variations of real images: each encoded (the VAE's posterior mean, the flow's exact
    latent, DDPM's DDIM inversion), its latent z moved toward a fresh prior draw e by
    ``strength`` s, ``sqrt(1 - s^2) z + s e`` (s = 0: the image itself; s = 1: a new sample of
    its class), and decoded with its label. (N, C, H, W) -> (N, C, H, W) in [0, 1]."""
    if not isinstance(model, Encoder) or not isinstance(model, Decoder):
        raise ValueError(f"recipe mode perturb: {model.family} has no encoder (families with one: "
                         f"{', '.join(perturbable())}); use mode: sample")  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    out = []
    for xb, yb in zip(x.split(batch), y.split(batch), strict=True):
        xb, yb = xb.to(model.device), yb.to(model.device)
        z = model.encode(xb, yb)
        e = torch.randn(z.shape, generator=gen).to(z.device)
        out.append(model.decode((1 - strength**2) ** 0.5 * z + strength * e, yb).float().cpu())
    return torch.cat(out).clamp(0, 1)


def on_levels(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Images in [0, 1] rounded to the data's ``levels`` grid: what a dataset stores (uint8 levels),
    so what is measured and filtered is what is pulled."""
    return torch.round(x * (levels - 1)) / (levels - 1)


@torch.inference_mode()
def synthesize(
    model: GenerativeModel | Callable[[torch.Tensor, int], torch.Tensor],
    recipe: Recipe,
    real: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    seed: int,
    teacher: Evaluator | Ensemble | None = None,
    labels: torch.Tensor | None = None,
    copies_within: float | None = None,
) -> Synthesis:
    """Synthetic images by ``recipe`` around the real set ``real`` (x, y): ``synthetic_per_real``
    per real image with its class balance (or for ``labels``, when given), sampled or, with
    mode ``perturb``, made from the real images themselves; with ``teacher`` (the recipe's
    classifier, trained on the same real data) relabelled to soft targets at ``temperature``
    and filtered (``teacher_confidence``, ``agree``); with ``copies_within`` (the real set's
    :func:`copy_radius`), images nearer a real image than that dropped as near-copies. ``model`` may also be a
    draw function ``(labels, seed) -> images`` (a classical generator such as PCA + KDE; sample
    mode only)."""
    x_real, y_real = real
    if recipe.mode == "perturb":
        reps = max(1, round(recipe.synthetic_per_real))
        y = y_real.repeat(reps)
        if callable(model) and not isinstance(model, GenerativeModel):
            raise ValueError("recipe mode perturb: this generator has no encoder; use mode: sample")
        x = perturb(model, x_real.repeat(reps, 1, 1, 1), y, recipe.strength, seed)
    else:
        y = balanced_labels(y_real, recipe.synthetic_per_real, num_classes) if labels is None else labels
        if not len(y):  # a pool k rounds to nothing (k x images < 1 a class)
            empty = torch.empty((0, *x_real.shape[1:]))
            return Synthesis(empty, y, torch.empty((0, num_classes)), 0, {})
        x = model(y, seed) if not isinstance(model, GenerativeModel) else draw(
            model, len(y), labels=y, seed=seed, batch=500)[0]  # fmt: skip
    x = x.float().cpu()
    if isinstance(model, GenerativeModel):  # (a draw function gives its own grid's images)
        x = on_levels(x, model.spec.levels)
    keep = torch.ones(len(y), dtype=torch.bool)
    rejected: dict[str, int] = {}
    targets = torch.nn.functional.one_hot(y, num_classes).float()
    if teacher is not None and recipe.teacher:
        logits = torch.cat([teacher(xb) for xb in x.split(1024)])  # (M, K), eval mode
        for reason, bad in teacher_rejects(logits, y, recipe).items():
            rejected[reason] = int((bad & keep).sum())
            keep &= ~bad
        targets = teacher_targets(logits, y, recipe)
    if copies_within is not None:  # as the augment stage does: nearer a real image than 99% of them are
        near = nearest_train(x.flatten(1).double(), x_real.flatten(1).double()) < copies_within
        rejected["copies"] = int((near & keep).sum())
        keep &= ~near
    emptied = sorted(set(y.tolist()) - set(y[keep].tolist()))
    return Synthesis(x[keep], y[keep], targets[keep], len(y), rejected, emptied)


COPY_RADIUS_ROWS = 2000  # training images whose nearest neighbour sets the copy radius


def nearest_train(x: torch.Tensor, train: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Each row of ``x``'s distance to its nearest training image, a block of rows at a time:
    memory stays under ``BLOCK_BYTES`` however large the training set. ``rows``: the training
    index of each row of ``x`` (rows of ``train`` itself), skipped as its own neighbour."""
    per = max(1, BLOCK_BYTES // (8 * len(train)))
    out = []
    for start in range(0, len(x), per):
        d = torch.cdist(x[start : start + per], train)
        if rows is not None:
            d[torch.arange(len(d)), rows[start : start + per]] = float("inf")
        out.append(d.min(1).values)
    return torch.cat(out) if out else torch.empty(0, dtype=x.dtype)


def copy_radius(train: torch.Tensor, seed: int = 0) -> float:
    """The 1st percentile of training images' distances to their nearest other training image:
    closer than that to a training image is a near-copy. From at most ``COPY_RADIUS_ROWS``
    images (all of them on digits; a seeded sample beyond), each against the whole set, so
    the cost grows with the set, not with its square. Images with an exact twin in the training
    set are left out of the percentile (found as equal rows: cdist's distance between two equal
    rows is rounding, 1e-7 to 1e-2, not 0): where 1% of the images had one, the radius was about
    0 and nothing, not even an exact copy, was nearer than that."""
    rows = torch.arange(len(train))
    if len(train) > COPY_RADIUS_ROWS:
        rows = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:COPY_RADIUS_ROWS]
    d = nearest_train(train[rows], train, rows)
    _, which, counts = torch.unique(train, dim=0, return_inverse=True, return_counts=True)
    d = d[counts[which[rows]] == 1]
    return float(torch.quantile(d, 0.01)) if len(d) else 0.0


def teacher_rejects(logits: torch.Tensor, y: torch.Tensor, recipe: Recipe) -> dict[str, torch.Tensor]:
    """What a recipe's teacher drops, given its logits (M, K) for images made for labels y (M,):
    ``teacher_disagrees`` (its label is another, with ``agree``) and ``teacher_unsure`` (its
    confidence below ``teacher_confidence``), each a (M,) mask."""
    conf, pred = logits.softmax(-1).max(-1)
    out = {}
    if recipe.agree:
        out["teacher_disagrees"] = pred != y
    if recipe.teacher_confidence > 0:
        out["teacher_unsure"] = conf < recipe.teacher_confidence
    return out


def teacher_targets(logits: torch.Tensor, y: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """The targets a recipe's teacher gives images made for labels ``y`` (M,): its class
    probabilities at ``temperature``, mixed by ``soft_weight`` with the one-hot label (M, K)."""
    soft = (logits / recipe.temperature).softmax(-1)
    hard = torch.nn.functional.one_hot(y, soft.shape[-1]).to(soft.dtype)
    return recipe.soft_weight * soft + (1 - recipe.soft_weight) * hard  # exactly ``soft`` at weight 1
