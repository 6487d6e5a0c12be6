"""params.yaml -> typed, validated objects. Every bad key fails before any compute, with its
dotted path: ``models.vae.net.latent_dim: Input should be greater than 0 (got -3)``."""

from __future__ import annotations

import contextlib
import contextvars
import copy
import difflib
import hashlib
import json
import logging
import math
import os
import re
import shlex
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from genzoo.models import REGISTRY, get_family
from genzoo.models.base import (
    Config,
    DataSpec,
    ExactLikelihood,
    LikelihoodBound,
    NetConfig,
    by_pixels,
    families_with,
)
from genzoo.models.classical import ClassicalConfig
from genzoo.models.evaluator import EvaluatorConfig
from genzoo.models.judges import JudgesConfig
from genzoo.models.trainer import TrainConfig
from genzoo.tasks.errors import GenzooError

# seeds feed numpy's and torch's generators (and seed * 1000 + i in places): keep them in 32 bits
MAX_SEED = 2**31 - 1
# a side larger than this is a typo (and the stack of images would not fit in memory)
MAX_SIDE = 4096

DEFAULT_PARAMS = Path("params.yaml")


class ParamsError(GenzooError, ValueError):
    """Invalid parameters; the message lists every bad key path."""


class UnknownFamily(ParamsError, KeyError):
    """A family asked for that has no block under ``models:`` (a ValueError for the CLI, a
    KeyError for code that looks families up)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DataParams(Config):
    source: str = Field(
        "digits", description="digits | npz:PATH | folder:PATH | mnist | fashion_mnist | cifar10"
    )
    image_size: int | tuple[int, int] | None = Field(None, description="[H, W] (or one int) to resize/pad to")
    channels: Literal[1, 3] | None = Field(None, description="convert to 1 (gray) or 3 (RGB)")
    val_fraction: float = Field(0.1, ge=0.0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0.0, lt=0.5)
    max_per_class: int | None = Field(None, gt=0, description="cap examples per class")
    max_levels: int | None = Field(
        None,
        ge=2,
        le=65536,
        description="at most this many levels per value (Glow's n_bits: 32 = 5 bits); fewer are kept",
    )
    raw_dir: str = Field("data/raw", min_length=1)
    prepared_dir: str = Field("data/prepared", min_length=1)

    @field_validator("raw_dir", "prepared_dir")
    @classmethod
    def _home(cls, v: str) -> str:
        return os.path.expanduser(v)  # `~/data` (in -o KEY=~/x no shell expands it)

    @field_validator("source", mode="before")
    @classmethod
    def _one_word(cls, v: Any) -> Any:
        if isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ("npz", "folder"):  # `folder: /x`
            kind = next(iter(v))
            raise ValueError(
                f"write {kind}:PATH with no space after the colon (YAML read `{kind}: ...` as a mapping)"
            )
        return v

    @field_validator("source")
    @classmethod
    def _known_source(cls, v: str) -> str:
        if v in ("digits", "mnist", "fashion_mnist", "cifar10"):
            return v
        kind, _, path = v.partition(":")
        if kind in ("npz", "folder") and path:
            return v
        raise ValueError("expected digits, mnist, fashion_mnist, cifar10, npz:PATH or folder:PATH")

    @field_validator("image_size")
    @classmethod
    def _positive(cls, v):
        if v is None:
            return v
        hw = (v, v) if isinstance(v, int) else tuple(v)
        if min(hw) < 2 or max(hw) > MAX_SIDE:
            raise ValueError(f"sides must be in [2, {MAX_SIDE}]")
        return hw


class RunParams(Config):
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    threads: int | None = Field(
        None, gt=0, description="torch intra-op threads (None: the CPUs the task reserves, ray.resources)"
    )
    runs_dir: str = Field("runs", min_length=1)  # "" would be the current folder
    checkpoints_dir: str = Field("checkpoints", min_length=1)
    samples_per_class: int = Field(10, gt=0, description="columns of the per-class sample grid")
    track: bool = Field(True, description="log runs, metrics, artifacts and models to MLflow")

    @field_validator("runs_dir", "checkpoints_dir")
    @classmethod
    def _home(cls, v: str) -> str:
        return os.path.expanduser(v)


class Resources(Config):
    num_cpus: float = Field(1.0, gt=0, description="CPUs one training task reserves (its torch threads)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs, fractions allowed: 0.25 packs four on one GPU")
    memory_mb: int | None = Field(None, gt=0, description="memory a task reserves (Ray schedules by it)")


class RayParams(Config):
    address: str | None = Field(
        None, description="Ray cluster to join (e.g. ray://host:10001 or auto); null: RAY_ADDRESS, else local"
    )
    num_cpus: int | None = Field(
        None, gt=0, description="CPUs of a local Ray (null: every core, or a container's CPU quota)"
    )
    num_gpus: int | None = Field(  # (Ray refuses a fraction here, without naming the key)
        None, ge=0, description="GPUs of a local Ray, whole (null: detected; a task's share: ray.resources)"
    )
    object_store_mb: int = Field(256, ge=75, description="object store of a local Ray (Ray's least: 75 MB)")
    max_retries: int = Field(
        2, ge=0, description="re-runs of a task whose worker or node died or that Ray's memory monitor killed"
    )
    resources: dict[str, Resources] = Field(
        default_factory=lambda: {"default": Resources()},
        description="per Ray task: `default`, overridden per family name (its training and"
        " evaluation) and for `evaluator`",
    )


class EvaluateParams(Config):
    samples_per_class: int = Field(100, gt=0, description="images drawn per class from each family")
    sample_pixels: int | None = Field(
        None,
        gt=0,
        description="fewer per class for large images: at most this many pixels per class and "
        "seed (images x H x W; at least 20 images); null: samples_per_class at any size",
    )
    k: int = Field(5, gt=0, description="neighbours for precision/recall/density/coverage")
    kid_subsets: int = Field(50, gt=0)
    kid_subset_size: int = Field(500, gt=1)
    seeds: int = Field(3, gt=0, description="sampling seeds per figure: mean and 95% confidence interval")
    latency_repeats: int = Field(5, gt=0, description="single-image sampling calls timed (median)")
    latent_pairs: int = Field(
        10, gt=0, description="same-class test pairs walked for the latent strips and smoothness figures"
    )
    evaluator: EvaluatorConfig = Field(default_factory=EvaluatorConfig)
    baselines: ClassicalConfig = Field(default_factory=ClassicalConfig)
    judges: JudgesConfig = Field(
        default_factory=JudgesConfig, description="the other feature spaces quality is judged in"
    )

    def per_class(self, spec: DataSpec) -> int:
        """Images drawn per class and seed from each family and reference on ``spec``'s data."""
        return by_pixels(self.samples_per_class, self.sample_pixels, spec, 20)


QUALITY_METRICS = (
    "fd", "kid", "fd_per_class_mean", "precision", "recall", "density", "coverage", "class_accuracy",
    "fd_rank", "lift",
)  # fmt: skip
# fd_rank: a family's mean rank by Fréchet distance among every evaluated family, over every judge's
# feature space (quality.json's `spaces`): the verdict of several judges, not of one. lift: not a
# quality figure but what the dataset is for, the measured lift (usefulness.json) of the dataset's
# recipe at the smallest real fraction measured, on the CNN with classical augmentation
LOWER_IS_BETTER = ("fd", "kid", "fd_per_class_mean", "fd_rank")


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # a dataset's folder: no path, no leading dot


class AugmentParams(Config):
    """A labelled synthetic dataset: ``<out_dir>/<name>/`` (tasks/augment.py)."""

    name: str = Field("synthetic", pattern=NAME_PATTERN, description="folder name")
    families: list[str] = Field(
        ["best"], min_length=1,
        description="trained families or `best` (by metric; among families measured for usefulness, if any)",
    )  # fmt: skip
    metric: Literal[QUALITY_METRICS] = Field(
        "fd_rank",
        description="what `best` means: fd_rank (mean FD rank over every judge), lift (the measured "
        "usefulness of the dataset's recipe) or an evaluation figure",
    )
    per_class: int = Field(100, gt=0, le=100_000, description="images per class from each family")
    sample_pixels: int | None = Field(
        None,
        gt=0,
        description="fewer per class for large images: at most this many pixels per class "
        "(images x H x W; at least 10 images); null: per_class at any size",
    )
    class_ratios: dict[int, float] | None = Field(
        None, description="per-class weights on per_class (unlisted classes: 1.0; 0 leaves a class out)"
    )
    seed: int = Field(0, ge=0, le=MAX_SEED)
    min_confidence: float = Field(
        0.0, ge=0, lt=1, description="keep images the evaluator gives their label at least this probability"
    )
    reject_copies: bool = Field(True, description="drop near-copies of training images (reported)")
    max_draws: int = Field(10, ge=1, description="draw at most this many times the count before giving up")
    formats: list[Literal["npz", "imagefolder", "hf"]] = Field(
        ["npz", "imagefolder"],
        min_length=1,
        description="npz (always: genzoo.load_dataset reads it) | imagefolder (images/<NN>_<class>/, "
        "torchvision's ImageFolder) | hf (a Hugging Face datasets folder; pip install 'genzoo[hf]')",
    )
    png: bool | None = Field(
        None, description="deprecated: true adds imagefolder to formats (its PNGs replace png/<class>/)"
    )
    out_dir: str = Field("data/augment", min_length=1, description="parent folder of the datasets")
    recipe: str = Field("plain", description="how the images are made and labelled: a name under `recipes`")

    @field_validator("out_dir")
    @classmethod
    def _home(cls, v: str) -> str:
        return os.path.expanduser(v)

    @field_validator("families")
    @classmethod
    def _families_once(cls, v: list[str]) -> list[str]:
        if twice := sorted({f for f in v if v.count(f) > 1}):  # not twice the images: per_class says how many
            raise ValueError(f"{', '.join(twice)} named twice; each family gives per_class images per class")
        return v

    @field_validator("formats")
    @classmethod
    def _formats(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(["npz", *v]))  # npz always (genzoo.load_dataset reads it), named or not

    @model_validator(mode="after")
    def _png(self) -> AugmentParams:
        if self.png and "imagefolder" not in self.formats:
            self.formats = [*self.formats, "imagefolder"]
        return self

    @field_validator("class_ratios")
    @classmethod
    def _ratios(cls, v: dict[int, float] | None) -> dict[int, float] | None:
        if v is not None:
            bad = {k: w for k, w in v.items() if w < 0 or k < 0}
            if bad:
                raise ValueError(f"classes and weights must be >= 0, got {bad}")
        return v


class DetectParams(Config):
    """Anomaly detection by likelihood (tasks/detect.py)."""

    families: list[str] = Field(
        ["pixelcnn", "realnvp"],
        description="families benchmarked after evaluation (those of them in models; need a likelihood)",
    )
    quantile: float = Field(
        0.99, gt=0, lt=1,
        description="threshold: a normal image flagged at most 1 - quantile of the time (split conformal, "
        "from the validation scores)",
    )  # fmt: skip
    holdout_classes: list[Annotated[int, Field(ge=0)]] = Field(
        default_factory=list,
        description="classes each held out of a retraining of the family and scored as anomalies",
    )
    holdout_train: dict[str, Any] = Field(
        default_factory=dict, description="overrides of the train block for the held-out retrainings"
    )
    likelihood_pixels: int | None = Field(
        None,
        gt=0,
        description="the benchmark scores at most this many pixels of each set (the test split, each "
        "corruption of it, the photo patches, the validation split for the threshold; images x H x W, "
        "at least 100 images, a seeded draw); null: every image",
    )


class Recipe(Config):
    """How synthetic images are made and used beside real ones (``recipes.<name>`` in params):
    the usefulness measurement and the augment stage share it, so the dataset a user pulls is
    made the way it was measured."""

    synthetic_per_real: float = Field(1.0, gt=0, le=100, description="k: synthetic images per real one")
    mode: Literal["sample", "perturb"] = Field(
        "sample",
        description="sample: draw from the model with the real data's class balance; perturb: encode each "
        "real image, move its latent toward a fresh draw by `strength`, decode (families with an encoder)",
    )
    strength: float = Field(0.5, gt=0, le=1, description="perturb: 0 = the real image, 1 = a fresh sample")
    teacher: bool = Field(
        False,
        description="relabel with a classifier trained on the same real data (classical augmentation): "
        "soft targets at `temperature`, and the filters below",
    )
    teachers: int = Field(1, ge=1, le=32, description="teacher classifiers (seeds) voting together")
    temperature: float = Field(2.0, gt=0, le=100, description="teacher's softmax temperature for the targets")
    soft_weight: float = Field(
        1.0,
        ge=0,
        le=1,
        description="targets: this weight on the teacher's soft labels, the rest on the label the image was "
        "made for (0: hard labels, the teacher only filters)",
    )
    teacher_confidence: float = Field(0.0, ge=0, lt=1, description="drop images the teacher is less sure of")
    agree: bool = Field(True, description="drop images the teacher gives another label than their own")
    real_share: float = Field(0.5, gt=0, le=1, description="share of real images in each training batch")
    synthetic_weight: float = Field(
        1.0, ge=0, le=100, description="weight of each synthetic image's loss against a real image's"
    )


DEFAULT_RECIPES = {
    "plain": Recipe(),
    "teacher": Recipe(teacher=True, teacher_confidence=0.9),
}


class UsefulnessParams(Config):
    """Does synthetic data help a downstream classifier? (tasks/usefulness.py) Measured
    without leaks: the generator that augments a real subset is trained on that subset only."""

    families: list[str] = Field(
        ["pixelcnn"], description="families measured after evaluation (those of them in models); [] for none"
    )
    fractions: list[float] = Field(
        [0.1, 1.0], min_length=1, description="real training subsets (fractions of the training split)"
    )
    recipes: list[str] = Field(
        ["plain", "teacher"], min_length=1, description="recipes measured (names under `recipes`)"
    )
    seeds: int = Field(5, ge=2, description="classifier and sampling seeds: mean and 95% interval")
    subset_seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(
        [0],
        min_length=1,
        description="subsets (each with its own generator) per fraction; intervals over their means",
    )
    classifiers: list[Literal["cnn", "cnn_plain", "logistic"]] = Field(
        ["cnn", "logistic"],
        min_length=1,
        description="cnn: with classical augmentation (the practitioner's baseline); cnn_plain: without; "
        "logistic: on pixels",
    )
    cnn: EvaluatorConfig = Field(
        default_factory=lambda: EvaluatorConfig(steps=600, batch_size=64, shift=1, rotate=10),
        description="the downstream CNN (the evaluator's architecture, its own budget); `cnn_plain` is the "
        "same without augmentation",
    )
    logistic_c: float = Field(1.0, gt=0, description="inverse L2 strength of the logistic regression")
    train: dict[str, Any] = Field(
        default_factory=dict, description="overrides of the train block for generators trained on subsets"
    )
    val_share: float = Field(
        0.2, ge=0, lt=1,
        description="a generator with a likelihood, trained on a subset, is validated on this share of "
        "that subset (held out of its training, at least one image per class) and keeps its best weights; "
        "0: trained on the whole subset for every step",
    )  # fmt: skip
    held_out: bool = Field(
        False,
        description="a reference row of real training images outside each subset (fractions below 1) "
        "through the same sample-mode recipes: what a perfect generator would add",
    )

    @field_validator("families", "recipes", "subset_seeds", "classifiers")
    @classmethod
    def _each_once(cls, v: list) -> list:
        if twice := sorted(
            {x for x in v if v.count(x) > 1}
        ):  # its figures counted twice: a narrower interval
            raise ValueError(f"{', '.join(map(str, twice))} named twice; each is measured once")
        return v

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        bad = [f for f in v if not 0 < f <= 1]
        if bad:
            raise ValueError(f"fractions must be in (0, 1], got {bad}")
        return sorted(set(v))


class FamilyParams(Config):
    train: dict[str, Any] = Field(default_factory=dict, description="overrides of the train block")
    net: dict[str, Any] = Field(default_factory=dict, description="the family's architecture")


class Params(Config):
    seed: int = Field(0, ge=0, le=MAX_SEED)
    data: DataParams = Field(default_factory=DataParams)
    train: TrainConfig = Field(default_factory=TrainConfig)
    run: RunParams = Field(default_factory=RunParams)
    ray: RayParams = Field(default_factory=RayParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    augment: AugmentParams = Field(default_factory=AugmentParams)
    recipes: dict[str, Recipe] = Field(
        default_factory=lambda: dict(DEFAULT_RECIPES), description="ways to make and use synthetic data"
    )
    detect: DetectParams = Field(default_factory=DetectParams)
    usefulness: UsefulnessParams = Field(default_factory=UsefulnessParams)
    models: dict[str, FamilyParams] = Field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)
    _profile: str | None = PrivateAttr(None)  # the profile load_params applied (not a key of the file)
    _given: list[str] = PrivateAttr(default_factory=list)  # its --params (not the default) and -o's

    @property
    def profile(self) -> str | None:
        """The name of the params file's profile these params were loaded with (None: none)."""
        return self._profile

    def command(self, args: str) -> str:
        """``genzoo <args>`` as advice to run with these params: with their profile, params file and
        ``-o``'s, if any (a hint without the user's ``-o run.runs_dir=...`` trained into runs/)."""
        return " ".join(
            [f"genzoo {args}", *([f"--profile {self._profile}"] if self._profile else []), *self._given]
        )

    def advising(self) -> None:
        """Make these the params a hint deep in genzoo repeats (:func:`advise`): a command of the
        console script, once it has read its params."""
        _ADVISED.set(self)

    def recipe(self, name: str) -> Recipe:
        """The recipe ``name`` (a key of ``recipes``)."""
        return self.recipes[name]

    @property
    def families(self) -> list[str]:
        return list(self.models)

    def require(self, family: str) -> str:
        """``family`` when it is a block under ``models:``, else :class:`UnknownFamily` naming them."""
        if family not in self.models:
            raise UnknownFamily(
                f"models.{family}: not in params (families: {', '.join(self.families)}"
                f"{did_you_mean([family], self.families)})"
            )
        return family

    def train_config(self, family: str) -> TrainConfig:
        merged = {**self.train.model_dump(), **self.models[family].train}
        return TrainConfig(**merged)

    def net_config(self, family: str) -> NetConfig:
        return get_family(family).Config(**self.models[family].net)

    def resources(self, family: str) -> Resources:
        base = self.ray.resources.get("default", Resources()).model_dump(exclude_unset=True)
        own = (
            self.ray.resources[family].model_dump(exclude_unset=True) if family in self.ray.resources else {}
        )
        return Resources(**{**base, **own})

    def threads(self, family: str) -> int:
        """torch threads for ``family``: run.threads, else the CPUs its task reserves. The same
        number on every entry point (Ray task, DVC stage), since CPU results depend on it."""
        return self.run.threads or max(1, int(self.resources(family).num_cpus))

    def device_kind(self, family: str) -> str:
        """The kind of device ``family`` trains on, from the params alone: ``run.device``'s, and
        for ``auto`` CUDA where the family's ``ray.resources`` ask for a GPU, else the CPU (a Ray
        task is given a GPU by them; a DVC stage or a command follows the same rule, so both
        entry points train alike: tasks/layout.py ``training_device``)."""
        if self.run.device == "auto":
            return "cuda" if self.resources(family).num_gpus > 0 else "cpu"
        return self.run.device.split(":")[0]

    def family_block(self, family: str) -> dict[str, Any]:
        """Everything that decides how ``family`` trains (for fingerprints and tracking); the
        device where it is not the CPU (a model trained on a GPU is not the CPU's)."""
        kind = self.device_kind(family)
        return {
            "family": family,
            "seed": self.seed,
            "threads": self.threads(family),
            "train": self.train_config(family).model_dump(mode="json"),
            "net": self.net_config(family).model_dump(mode="json"),
            **({"device": kind} if kind != "cpu" else {}),
        }


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a nested dict under dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1.0}``)."""
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``flatten``."""
    out: dict[str, Any] = {}
    for k, v in flat.items():
        *path, last = k.split(".")
        node = out
        for p in path:
            node = node.setdefault(p, {})
        node[last] = v
    return out


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# keys an earlier genzoo read, and what took their place
RENAMED = {
    "batch_values": "batch_pixels: it counts pixels (images x H x W), not values; divide by the channels",
    "sample_values": "sample_pixels: it counts pixels (images x H x W), not values; divide by the channels",
}


_SCALARS = {"int", "float", "str", "bool", "none", "list", "dict", "tuple"}


def _is_tag(loc: tuple, i: int, kind: str) -> bool:
    """``loc[i]`` is a union member's tag pydantic puts in an error's location (``int``,
    ``tuple[int, int]``), not a key: a generic type's name, or a plain type's where no key
    follows (a user's recipe named ``none`` or a misspelt key ``dict`` is a key)."""
    part = loc[i]
    if not isinstance(part, str) or kind == "extra_forbidden":
        return False
    if re.fullmatch(r"[a-z_]+\[.+\]", part):  # tuple[int, int]; not a dict key's "[key]"
        return True
    return part in _SCALARS and all(isinstance(p, int) for p in loc[i + 1 :])


def _keys_at(model: Any, loc: tuple) -> list[str] | None:
    """The keys the block at ``loc`` of ``model`` (a pydantic model class) takes; None where
    ``loc`` is not a block of named keys (a dict of user-named entries, a value)."""
    for part in (*loc, None):
        while typing.get_origin(model) in (typing.Union, types.UnionType, Annotated):
            blocks = [a for a in typing.get_args(model) if _is_block(a) or typing.get_origin(a) is dict]
            if len(blocks) != 1:
                return None
            model = blocks[0]
        if part is None:
            return list(model.model_fields) if _is_block(model) else None
        if _is_block(model) and isinstance(part, str) and part in model.model_fields:
            model = model.model_fields[part].annotation
        elif typing.get_origin(model) is dict and len(typing.get_args(model)) == 2:
            model = typing.get_args(model)[1]
        else:
            return None
    return None


def _is_block(t: Any) -> bool:
    # (dict[str, X] is a type on Python 3.10, and issubclass of it fails in pydantic < 2.11)
    return isinstance(t, type) and typing.get_origin(t) is None and issubclass(t, BaseModel)


# a choice's other names (the deprecated `png` flag's, an image format's): what the list calls it
MEANT = {"png": "imagefolder", "jpg": "imagefolder", "jpeg": "imagefolder", "images": "imagefolder"}


def did_you_mean(names: list[str], known: list[str]) -> str:
    """``; did you mean X?`` for the first of ``names`` close to one of ``known`` (a misspelt
    family), else nothing: the tail of an unknown-name message."""
    for name in names:
        same = [k for k in known if k.lower() == name.lower()]  # VAE: vae (difflib is case-sensitive)
        if near := same or difflib.get_close_matches(name, known, n=1, cutoff=0.6):
            return f"; did you mean {near[0]}?"
    return ""


def _unknown(key: str, known: list[str] | None) -> str:
    """A misspelt key's message: the nearest known key, else every known key."""
    if not known:
        return "unknown key"
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    near = near or [k for k in known if len(key) >= 3 and key.lower() in k]  # cpu: num_cpus
    return (
        f"unknown key; did you mean {near[0]}?"
        if len(near) == 1
        else f"unknown key; known: {', '.join(known)}"
    )


def readable(errors: list[dict[str, Any]], model: Any = None) -> list[dict[str, Any]]:
    """pydantic's errors as a user reads them: the errors of one key's union members as one
    (``data.image_size: expected int or tuple[int, int]``, not a line per member with its tag in
    the key), a number YAML read as text said so (``1e3`` is a string in YAML 1.1), and a
    misspelt key of ``model`` (the class validated) with the key meant (``did you mean train?``)."""
    out: list[dict[str, Any]] = []
    unions: dict[tuple, dict[str, Any]] = {}
    for err in errors:
        loc = tuple(err["loc"])
        at = next((i for i in range(len(loc)) if _is_tag(loc, i, err["type"])), None)
        if at is not None:
            key = loc[:at]
            if key not in unions:
                unions[key] = {**err, "loc": key, "msg": "", "type": "union", "tags": []}
                out.append(unions[key])
            if loc[at] not in unions[key]["tags"]:
                unions[key]["tags"].append(loc[at])
                unions[key]["msg"] = "expected " + " or ".join(unions[key]["tags"])
            continue
        got = err.get("input")
        if err["type"] in ("int_parsing", "float_parsing") and isinstance(got, str):
            try:
                number = float(got)
            except ValueError:
                number = None
            whole = number is not None and abs(number) < 1e15 and number.is_integer()
            if whole or (number is not None and err["type"] == "float_parsing" and math.isfinite(number)):
                plain = int(number) if whole else number  # YAML 1.1 reads 1e3 (no dot) as a string
                err = {**err, "msg": f"{err['msg']}; YAML reads {got} as text, not a number: write {plain}"}
        elif err["type"] == "extra_forbidden" and loc and isinstance(loc[-1], str):
            known = _keys_at(model, loc[:-1]) if model is not None else None
            err = {**err, "msg": _unknown(loc[-1], known)}
        elif err["type"] == "literal_error" and isinstance(got, str):  # --metric fdd: the one meant
            choices = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
            meant = MEANT.get(got.lower())
            if near := did_you_mean([got], choices) or (
                f"; image files (PNG) in class folders are {meant}" if meant in choices else ""
            ):
                err = {**err, "msg": f"{err['msg']}{near}"}
        elif err["type"] == "missing" and loc and isinstance(loc[-1], int):  # a pair given one value
            err = {**err, "loc": loc[:-1], "msg": f"too few values (no item {loc[-1]})"}
        elif (
            err["type"] == "string_pattern_mismatch" and (err.get("ctx") or {}).get("pattern") == NAME_PATTERN
        ):
            err = {**err, "msg": "expected a folder name: letters, digits, '_', '.' and '-', up to 64, "
                   "starting with a letter or digit"}  # fmt: skip
        elif err["type"] == "string_pattern_mismatch" and (
            m := re.fullmatch(r"\^\(([\w|:()\\+?]*)\)\$", str((err.get("ctx") or {}).get("pattern", "")))
        ):  # ^(auto|cpu|cuda(:\d+)?|mps)$: the choices, not the expression
            alts = []
            for alt in m.group(1).split("|"):
                bare = alt.replace(r"(:\d+)?", "")
                alts += [bare, f"{bare}:N"] if bare != alt else [alt]
            err = {**err, "msg": f"expected one of {', '.join(alts)}"}
        out.append(err)
    return out


def format_error(prefix: str, err: dict[str, Any]) -> str:
    """One pydantic error as ``key.path: message (got value)``."""
    loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
    if err["type"] == "extra_forbidden" and err["loc"] and err["loc"][-1] in RENAMED:
        return f"{loc}: renamed {RENAMED[err['loc'][-1]]}"
    got = err.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    if not loc:  # a check across keys: its message names them
        return str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {str(err['msg']).removeprefix('Value error, ')}{shown}"


def apply_overrides(raw: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict copy."""
    raw = copy.deepcopy(raw)
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    for key, value in items:
        node = raw
        *parents, leaf = key.split(".")
        for i, p in enumerate(parents):
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ParamsError(f"{'.'.join(parents[: i + 1])}: is not a mapping, cannot set {key}")
            node = child
        node[leaf] = value
    return raw


def _split(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ParamsError(f"override {item!r}: expected key.path=value")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ParamsError(f"override {item!r}: the value is not valid YAML ({problem})") from None
    # {12:2.0}: YAML reads `12:2.0` as one key (a base-60 number, or a string) with no value
    if isinstance(parsed, dict) and None in parsed.values() and (glued := _GLUED.search(value)):
        raise ParamsError(
            f"override {item!r}: put a space after ':' in a mapping ({{{glued[1]}: {glued[2]}}}): "
            f"YAML reads {glued[1]}:{glued[2]} as one key with no value"
        )
    return key.strip(), parsed


_GLUED = re.compile(r"[{,]\s*([^\s:{},]+):([^\s{},]+)")


def _invalid(errors: list[str]) -> ParamsError:
    """One line for one bad key, else one line per key under a heading."""
    if len(errors) == 1:
        return ParamsError(f"invalid params: {errors[0]}")
    return ParamsError("invalid params:\n  " + "\n  ".join(errors))


def validate(raw: dict[str, Any], origins: dict[str, str | None] | None = None) -> Params:
    """``raw`` as :class:`Params`, or a :class:`ParamsError` naming every bad key: the sections'
    own checks and the families' blocks alike. ``origins`` maps keys (dotted) to where a value
    came from (``profiles.quick``), named after the errors under them."""
    if not isinstance(raw, dict):
        raise ParamsError(
            f"params: the file must hold a mapping at the top level, not a {type(raw).__name__}"
        )
    try:
        params = Params(**raw)
    except ValidationError as e:
        errors = [format_error("", x) for x in readable(e.errors(), Params)]
        with contextlib.suppress(ValidationError):  # the checks below too, defaults for the bad keys
            errors += _checks(Params(**_without(raw, [x["loc"] for x in e.errors()])))
        raise _invalid(_from(errors, origins or {})) from None
    errors = _checks(params)
    if errors:
        raise _invalid(_from(errors, origins or {}))
    return params


def _without(raw: dict[str, Any], locs: list[tuple]) -> dict[str, Any]:
    """``raw`` less the innermost mapping key of each error location (its default in its
    place): a bad key inside one family's block leaves the family, and the checks across keys
    see it."""
    raw = copy.deepcopy(raw)
    for loc in locs:
        node, key, here = None, None, raw
        for part in loc:
            if not isinstance(here, dict):  # inside a list or a value: the key holding it goes
                break
            if part not in here:  # gone already (another error under the same key)
                node = None
                break
            node, key, here = here, part, here[part]
        if node is not None:
            del node[key]
    return raw


def _from(errors: list[str], origins: dict[str, str | None]) -> list[str]:
    """Each error at or under a key a profile set, followed by the profile's name (the most
    specific key decides: an -o under a profile's block is the -o's, origin None)."""
    out = []
    for line in errors:
        loc = line.split(":", 1)[0]
        keys = [k for k in origins if loc == k or loc.startswith(f"{k}.")]
        where = origins[max(keys, key=len)] if keys else None
        below = {origins[k] for k in origins if k.startswith(f"{loc}.")}
        if not keys and len(below) == 1 and ": unknown key" in line:
            where = below.pop()  # a misspelt block a profile's key made (models.vae.trian.steps)
        out.append(f"{line} [set by {where}]" if where else line)
    return out


def _checks(params: Params) -> list[str]:
    """The checks across keys and of each family's blocks, one line per bad key."""
    errors: list[str] = []
    named = [("augment.recipe", params.augment.recipe)]
    named += [(f"usefulness.recipes[{i}]", r) for i, r in enumerate(params.usefulness.recipes)]
    for key, name in named:
        if name not in params.recipes:
            have = sorted(params.recipes)
            errors.append(
                f"{key}: no recipe {name!r} under recipes (have {have}{did_you_mean([name], have)})"
            )
    if not params.models:
        errors.append("models: at least one family is required; known: " + ", ".join(REGISTRY))
    for family in params.ray.resources:
        if family not in ("default", "evaluator") and family not in params.models:
            errors.append(
                f"ray.resources.{family}: not default, evaluator or a family in models"
                f" ({', '.join(params.models)})"
            )
    for family in params.detect.families:
        with_likelihood = families_with(ExactLikelihood | LikelihoodBound)
        if family not in with_likelihood:
            errors.append(
                f"detect.families: {family} has no likelihood; choose from {', '.join(with_likelihood)}"
            )
    for family in params.usefulness.families:
        if family not in REGISTRY:
            errors.append(f"usefulness.families: unknown family {family}; known: {', '.join(REGISTRY)}")
    for key, block in (
        ("usefulness.train", params.usefulness.train),
        ("detect.holdout_train", params.detect.holdout_train),
    ):
        if block:
            try:
                TrainConfig(**{**params.train.model_dump(), **block})
            except ValidationError as e:
                errors += [format_error(key, x) for x in readable(e.errors(), TrainConfig)]
    for family in params.augment.families:
        if family != "best" and family not in params.models:
            errors.append(
                f"augment.families: {family} is not a family in models ({', '.join(params.models)}) "
                f"nor `best`{did_you_mean([family], list(params.models))}"
            )
    for family in params.models:
        if family not in REGISTRY:
            errors.append(
                f"models.{family}: unknown family; known: {', '.join(REGISTRY)}"
                f"{did_you_mean([family], list(REGISTRY))}"
            )
            continue
        try:
            params.train_config(family)
        except ValidationError as e:
            errors += [format_error(f"models.{family}.train", x) for x in readable(e.errors(), TrainConfig)]
        try:
            params.net_config(family)
        except ValidationError as e:
            errors += [
                format_error(f"models.{family}.net", x)
                for x in readable(e.errors(), get_family(family).Config)
            ]
    return errors


class _Duplicate(Exception):
    pass


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML keeps the last
    silently: `steps: 2000` then `steps: 100` in one block trained 100 steps without a word)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: PyYAML merges it below
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, str | int | float | bool) and key in seen:
                raise _Duplicate(f"line {line}: key {key!r} given twice in one block (first at line "
                                 f"{seen[key]}; YAML would keep the last silently): remove one")  # fmt: skip
            if isinstance(key, str | int | float | bool):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


_ADVISED: contextvars.ContextVar[Params | None] = contextvars.ContextVar("genzoo_advised", default=None)


def advise(args: str) -> str:
    """``genzoo <args>`` as a hint that knows no params says it (a check of the prepared data): with
    the running command's ``--profile``, ``--params`` and ``-o``'s where a command of the console
    script read them (:meth:`Params.advising`), else bare."""
    params = _ADVISED.get()
    return params.command(args) if params is not None else f"genzoo {args}"


def load_params(
    path: str | Path = DEFAULT_PARAMS,
    overrides: list[str] | None = None,
    profile: str | None = None,
    *,
    warn: bool = True,
    families: list[str] | None = None,
    hinted: list[str] | None = None,
) -> Params:
    """Read, apply a named profile then ``key=value`` overrides, and validate; ``warn``: say what
    an override changes nothing of (off where the same params were said of already), of
    ``families`` only where given (the families the command uses). ``hinted``: the overrides a
    hint naming a command repeats (default: all; not those a command adds itself)."""
    path = Path(path)
    if not path.exists():
        where = (f" in {Path.cwd()} (run genzoo in the project's folder, or give --params PATH from it: the "
                 "folders a params file names are read from where genzoo runs)") if (
            path == Path(DEFAULT_PARAMS)) else ""  # fmt: skip
        raise ParamsError(f"{path}: params file not found{where}")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeys) or {}
    except _Duplicate as e:
        raise ParamsError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ParamsError(f"{path}: not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(raw, dict):
        raise ParamsError(
            f"{path}: the file must hold a mapping (key: value) at the top level, not a {type(raw).__name__}"
        )
    if not raw and not overrides and not profile:  # (an empty file, or only comments: it said "models: at
        # least one family is required"; -o's may give a whole configuration)
        raise ParamsError(
            f"{path}: the file is empty; a params file holds the whole configuration (the families "
            "under models:, data, train, ...): start from a copy of the project's params.yaml"
        )
    for key in (
        _split(o)[0].strip() for o in overrides or []
    ):  # applied after the profile: would change nothing
        if key == "profiles" or key.startswith("profiles."):
            inner = key.split(".", 2)[2] if key.count(".") >= 2 else "KEY"
            also = (f", or -o models.<family>.{inner}=... for a family that sets its own"
                    if inner.startswith("train.") else "")  # fmt: skip
            raise ParamsError(
                f"-o {key}: a profile's settings are applied before the -o's, so this changes nothing; "
                f"override the key itself (-o {inner}=...{also}), with --profile for the rest of the profile"
            )
    origins: dict[str, str | None] = {}  # keys a profile set (and no -o after it), for the errors
    if profile:
        profiles = raw.get("profiles") or {}
        if profile not in profiles:
            raise ParamsError(f"profiles.{profile}: no such profile; known: {', '.join(profiles) or 'none'}")
        chosen = profiles[profile] or {}
        if isinstance(chosen, dict):  # settings of a family this file (or an -o) has no block for
            own = set(raw.get("models") if isinstance(raw.get("models"), dict) else {})  # make no family
            own |= {k.split(".")[1] for k, _ in map(_split, overrides or []) if k.count(".") >= 1
                    and k.startswith("models.")}  # fmt: skip
            left = [k for k in chosen if str(k).count(".") >= 2 and str(k).startswith("models.")
                    and str(k).split(".")[1] not in own]  # fmt: skip
            for k in left if warn else ():
                logging.getLogger("genzoo.config").info(
                    "profiles.%s: %s left out (no models.%s block)", profile, k, str(k).split(".")[1]
                )
            chosen = {k: v for k, v in chosen.items() if k not in left}
        raw = apply_overrides(raw, chosen)
        origins = {k: f"profiles.{profile}" for k in chosen}
    if overrides:
        raw = apply_overrides(raw, overrides)
        given = [_split(o)[0] for o in overrides]
        origins = {
            k: o for k, o in origins.items() if not any(k == g or k.startswith(f"{g}.") for g in given)
        }
        origins |= dict.fromkeys(given)  # (the -o's own keys: no profile named under them)
    params = validate(raw, origins)  # a bad value first: no warning about an override refused anyway
    for line in shadowed(raw, overrides or [], families) if warn else []:
        logging.getLogger("genzoo.config").warning("%s", line)
    params._profile = profile or None
    params._given = ([] if path == DEFAULT_PARAMS else ["--params", shlex.quote(str(path))]) + [
        part for o in (overrides or [] if hinted is None else hinted) for part in ("-o", shlex.quote(o))
    ]
    return params


def shadowed(raw: dict[str, Any], overrides: list[str], families: list[str] | None = None) -> list[str]:
    """A line for each ``train.<key>...=...`` override (or a key of a whole ``train={...}``) that a
    family's own ``models.<f>.train.<key>`` takes precedence over (it changes nothing for that
    family: params.yaml sets each family's steps, for one; a family's ``phase_lr`` replaces the
    shared one whole); of ``families`` only, where given."""
    lines = []
    for o in overrides:
        key, _, value = o.partition("=")
        key = key.strip()
        if key == "train":  # the whole block: each of its keys a family sets is shadowed
            try:
                given = yaml.safe_load(value)
            except yaml.YAMLError:
                continue
            tops = [str(k) for k in given] if isinstance(given, dict) else []
        elif key.startswith("train."):
            tops = [key.removeprefix("train.").split(".", 1)[0]]
        else:
            continue
        for top in tops:
            own = [f for f, block in (raw.get("models") or {}).items()
                   if isinstance(block, dict) and top in (block.get("train") or {})
                   and (families is None or f in families)]  # fmt: skip
            if not own:
                continue
            whole, named = f"train.{top}", key if key != "train" else f"train.{top}"
            lines.append(
                f"{o}: changes nothing for {', '.join(own)}, which "
                + (
                    f"sets its own models.{own[0]}.{whole}; "
                    if len(own) == 1
                    else f"set their own models.<family>.{whole}; "
                )
                + f"override that instead (e.g. models.{own[0]}.{named}) if you train it"
            )
    return lines


def stage_args(
    argv: list[str] | None, description: str, target: str | None = None, target_help: str | None = None
) -> tuple[Params, str | None]:
    """The start of every stage's ``main()`` (its DVC command line): parse ``[TARGET] [--params
    FILE] [key=value ...]``, log INFO to stderr, and return the validated params and TARGET."""
    import argparse
    import logging

    ap = argparse.ArgumentParser(description=description)
    if target:
        ap.add_argument(target, help=target_help)
    ap.add_argument("--params", default=str(DEFAULT_PARAMS))
    ap.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    args = ap.parse_intermixed_args(argv)  # overrides may follow --params, as in dvc.yaml's cmd
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    chosen = getattr(args, target) if target else None
    families = [chosen] if target == "family" else None  # (a shadowed -o said of that family alone)
    return load_params(args.params, args.overrides, families=families), chosen
