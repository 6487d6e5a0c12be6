"""The one interface every generative family implements, the registry, and safe save/load.

A family is an ``nn.Module`` subclass of :class:`GenerativeModel`. Its capabilities
(exact likelihood, a likelihood bound, a latent space) are Protocols checked with
``isinstance``: a family either has the method or it does not; nothing raises
``NotImplementedError``.

Conventions shared by every family
----------------------------------
* Images enter and leave as float tensors ``(B, C, H, W)`` in ``[0, 1]`` whose values lie
  on the data's ``levels`` grid (``k / (levels - 1)``, e.g. 17 levels for digits).
* Likelihoods are in nats per image of the *discrete* data; ``bits_per_dim`` converts.
* Labels ``y`` are int64 ``(B,)``. Every family is class-conditional; ``y=None`` means the
  unconditional model. In ``sample`` a missing ``y`` is drawn from the label prior learned
  from the training split, so class-free sampling follows the data's class frequencies.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Protocol, get_args, runtime_checkable

import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, field_validator
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

# ----------------------------------------------------------------------------- data spec


@dataclass(frozen=True)
class DataSpec:
    """What a family needs to know about its data to build itself."""

    channels: int
    height: int
    width: int
    levels: int  # number of discrete pixel values (digits: 17, 8-bit images: 256)
    num_classes: int

    @property
    def dims(self) -> int:
        return self.channels * self.height * self.width

    @property
    def pixels(self) -> int:
        """H x W: what a convolution's cost grows with (the channels only widen its first layer)."""
        return self.height * self.width

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)


def _share(value: tuple[float, float]) -> tuple[float, float]:
    start, end = value
    if not 0.0 <= start < end <= 1.0:
        raise ValueError(f"{list(value)}: needs 0 <= start < end <= 1")
    return value


# [start, end): a share of a sampler's course (PixelCNN's rows, DDPM's noise levels), e.g. where to guide
Interval = Annotated[tuple[float, float], AfterValidator(_share)]


def _kinds(annotation: Any) -> set[Any]:
    """The types an annotation admits, through unions, containers' items and ``Literal``
    values (``Literal[1, 3]``: int)."""
    args = get_args(annotation)
    if args:
        return set().union(*map(_kinds, args))
    return {annotation if isinstance(annotation, type) or annotation is Any else type(annotation)}


class Config(BaseModel):
    """Base of genzoo's configs: unknown keys are errors, true/false is no number (pydantic
    alone takes ``seed: true`` as 1, ``lr: false`` as 0.0 and ``[true]`` as ``[1]``), and nan
    or inf is no number either (``lr=nan`` was refused as "less than or equal to 10")."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        kinds = _kinds(cls.model_fields[info.field_name].annotation)
        if kinds & {int, float} and not kinds & {bool, Any}:
            items = (
                value.values()
                if isinstance(value, dict)
                else value
                if isinstance(value, list | tuple)
                else [value]
            )
            if any(isinstance(v, bool) for v in items):
                raise ValueError("expected a number, not true/false")
        return value


class NetConfig(Config):
    """Base for each family's architecture config: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class StepOutput:
    loss: Tensor  # scalar to minimise
    logs: dict[str, float]


# ----------------------------------------------------------------------------- interface


class GenerativeModel(nn.Module, ABC):
    family: ClassVar[str]
    Config: ClassVar[type[NetConfig]]
    phases: ClassVar[tuple[str, ...]] = ("main",)

    def __init__(self, spec: DataSpec, cfg: NetConfig):
        super().__init__()
        self.spec = spec
        self.cfg = cfg
        # log p(y); the trainer sets it from the training split's label counts.
        self.register_buffer("log_class_prior", torch.full((spec.num_classes,), 0.0))
        self.log_class_prior -= torch.log(torch.tensor(float(spec.num_classes)))

    # -- training
    @abstractmethod
    def training_step(self, x: Tensor, y: Tensor | None, phase: str = "main") -> StepOutput:
        """Loss (and float logs) for one batch in ``phase``; the trainer steps that phase's optimizer."""

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        """The parameters the optimizer of ``phase`` updates (default: all of them)."""
        return [p for p in self.parameters() if p.requires_grad]

    def after_training(self, x: Tensor, y: Tensor) -> None:  # noqa: B027 (optional hook, no-op by default)
        """Called once on the weights a finished training returns, with its training set (x, y):
        a family that fits something to the trained network (the VAE's ex-post prior) does it here."""

    # -- sampling
    @torch.inference_mode()
    def sample(self, n: int, y: Tensor | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images ``(n, C, H, W)`` in ``[0, 1]``; same generator state -> same images."""
        y = self.fill_labels(n, y, generator)
        x = self._sample(n, y, generator)
        bad = ~torch.isfinite(x).flatten(1).all(1)
        if bad.any():  # an overflow in the network: an error, never NaN handed on as pixels
            raise FloatingPointError(
                f"{self.family}: {int(bad.sum())} of {n} sampled images hold NaN or inf pixels "
                f"(the first: image {int(bad.nonzero()[0])}): the network overflowed"
            )
        return x.clamp(0.0, 1.0)

    @abstractmethod
    def _sample(self, n: int, y: Tensor, generator: torch.Generator | None) -> Tensor:
        """``n`` images for labels ``y`` (already filled in), before clamping to [0, 1]."""

    # -- helpers shared by the families
    @property
    def device(self) -> torch.device:
        return self.log_class_prior.device

    def fill_labels(self, n: int, y: Tensor | None, generator: torch.Generator | None) -> Tensor:
        if y is None:
            probs = self.log_class_prior.exp().cpu()
            return torch.multinomial(probs, n, replacement=True, generator=generator).to(self.device)
        y = torch.as_tensor(y, dtype=torch.long, device=self.device)
        if y.ndim == 0:
            y = y.expand(n)
        if y.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(y.shape)}")
        if (bad := (y < 0) | (y >= self.spec.num_classes)).any():
            raise ValueError(f"labels must lie in [0, {self.spec.num_classes}), got {int(y[bad][0])}")
        return y

    def check_inputs(self, x: Tensor, y: Tensor | None = None) -> None:
        """Refuse, naming it, what the likelihood and encoder methods cannot score: images not of
        this model's (B, C, H, W) shape, NaN or inf pixels (values outside [0, 1] are clamped),
        labels that are not one class index per image."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.spec.shape:
            want = ", ".join(map(str, self.spec.shape))
            raise ValueError(f"images must have shape (B, {want}), got {tuple(x.shape)}")
        bad = ~torch.isfinite(x).flatten(1).all(1)
        if bad.any():
            first = int(bad.nonzero()[0])
            raise ValueError(
                f"{int(bad.sum())} of {len(x)} images hold NaN or inf pixels (the first: image {first})"
            )
        if y is None:
            return
        if tuple(y.shape) != (len(x),):
            raise ValueError(f"labels must have shape ({len(x)},), one per image, got {tuple(y.shape)}")
        if y.is_floating_point():
            raise ValueError(f"labels must be class indices in [0, {self.spec.num_classes}), got {y.dtype}")
        if (bad := (y < 0) | (y >= self.spec.num_classes)).any():
            got = int(y[bad][0])
            raise ValueError(f"labels must be class indices in [0, {self.spec.num_classes}), got {got}")

    def marginal(self, fn, x: Tensor) -> Tensor:
        """log sum_y p(y) exp(fn(x, y)): the exact marginal when fn is exact, a bound when
        fn is a bound (logsumexp of lower bounds is a lower bound of the logsumexp)."""
        b = x.shape[0]
        terms = [  # classes with no prior mass (held out of training) are not summed over
            fn(x, torch.full((b,), k, dtype=torch.long, device=x.device)) + self.log_class_prior[k]
            for k in range(self.spec.num_classes)
            if torch.isfinite(self.log_class_prior[k])
        ]
        return torch.logsumexp(torch.stack(terms, dim=1), dim=1)

    def image_seeds(self, x: Tensor) -> list[int]:
        """A seed per image of ``x`` from its own pixel levels (for :meth:`image_noise`)."""
        levels = self.to_levels(x).to(torch.int16).cpu().numpy()
        return [
            int.from_bytes(hashlib.blake2b(img.tobytes(), digest_size=8, person=b"genzoo").digest(), "little")
            for img in levels
        ]

    def image_noise(
        self,
        x: Tensor,
        shape: tuple[int, ...],
        *,
        uniform: bool = False,
        stream: int = 0,
        seeds: list[int] | None = None,
    ) -> Tensor:
        """Noise (B, *shape) on ``x``'s device, each image's drawn from a seed of its own levels
        (``seeds``, :meth:`image_seeds`, when a caller draws several times) and ``stream`` (one
        per draw of a call): a likelihood estimate that samples (a flow's dequantisation, a
        VAE's posterior draws, DDPM's noised images) gives an image the same figure in any
        batch, at any position, beside any other images."""
        seeds = self.image_seeds(x) if seeds is None else seeds
        out = torch.empty(len(seeds), *shape)
        for b, seed in enumerate(seeds):
            g = torch.Generator().manual_seed((seed + stream * 0x9E3779B97F4A7C15) % 2**63)
            out[b] = torch.rand(shape, generator=g) if uniform else torch.randn(shape, generator=g)
        return out.to(x.device)

    def to_levels(self, x: Tensor) -> Tensor:
        """[0, 1] floats -> integer levels 0..L-1 (long)."""
        return (x * (self.spec.levels - 1)).round().clamp(0, self.spec.levels - 1).long()

    def from_levels(self, k: Tensor) -> Tensor:
        return k.float() / (self.spec.levels - 1)


def needs_labels(model: GenerativeModel, y: Tensor | None, what: str) -> Tensor:
    """``y`` for a latent-space call of a family trained on labelled images only (the VAE,
    RealNVP): without labels it would run on the never-trained no-label embedding (their
    likelihoods marginalise over the labels instead)."""
    if y is None:
        raise ValueError(
            f"{model.family}.{what} needs the images' labels (y): it was trained on labelled images only"
        )
    return y


# ----------------------------------------------------------------------------- capabilities


@runtime_checkable
class ExactLikelihood(Protocol):
    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor: ...  # (B,) nats


@runtime_checkable
class LikelihoodBound(Protocol):
    def elbo(self, x: Tensor, y: Tensor | None = None) -> Tensor: ...  # (B,) nats, <= log p


@runtime_checkable
class Encoder(Protocol):
    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class Decoder(Protocol):
    """Codes to images. A code's shape is the model's ``code_shape`` where it has one (DDPM: the
    image's, x_T), else ``(cfg.latent_dim,)``, else the image's values flattened (the flow); codes
    of the prior are ``prior_codes(n, generator)`` where the model has it (the GAN's truncation),
    else N(0, I) draws (what `genzoo interpolate`, the latent strips and recipe mode perturb use)."""

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor: ...


def capabilities(model: nn.Module) -> list[str]:
    caps = {
        "log_prob": ExactLikelihood,
        "elbo": LikelihoodBound,
        "encode": Encoder,
        "decode": Decoder,
    }
    return [name for name, proto in caps.items() if isinstance(model, proto)]


def likelihood_estimator(model: nn.Module) -> str | None:
    """Which estimator a family's bits/dim come from: 'exact', 'bound', or None (GAN)."""
    if isinstance(model, ExactLikelihood):
        return "exact"
    if isinstance(model, LikelihoodBound):
        return "bound"
    return None


LIKELIHOOD_BATCH_VALUES = 512 * 64  # 512 images of 8x8 (digits) per pass, 8 of 64x64x3


def by_pixels(n: int, pixels: int | None, spec: DataSpec, least: int) -> int:
    """``n`` images, or fewer when they would hold more than ``pixels`` pixels (H x W each, any
    number of channels; at least ``least``, never more than ``n``): a count that shrinks for
    large images, the same for grey and RGB ones of a size. ``pixels`` None: ``n`` as is."""
    return n if pixels is None else min(n, max(least, pixels // spec.pixels))


def rng_devices(device: torch.device | str) -> list[int]:
    """The CUDA devices whose RNG ``torch.random.fork_rng`` must keep for work on ``device``: its
    own (``manual_seed`` inside the fork seeds every CUDA device; ``devices=[]`` restored the CPU's
    alone, and each validation left training's GPU draws starting again from seed 0)."""
    device = torch.device(device)
    if device.type == "mps":  # fork_rng's accelerator by default: the one MPS device
        return [0]
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@torch.inference_mode()
def log_likelihoods(model: GenerativeModel, x: Tensor, y: Tensor | None = None, batch: int = 512) -> Tensor:
    """log p(x | y) of each image of ``x`` (N, C, H, W) in [0, 1]: (N,) float64 nats on the CPU,
    exact or the family's bound; y=None marginalises the labels (DDPM: its null-label model).
    Seeded (a bound may sample) without touching the global RNG, so the same images get the same
    numbers. At most ``batch``
    images per pass, fewer for large images (``LIKELIHOOD_BATCH_VALUES`` values per pass: a
    bound's samples times the classes times the image must fit in memory)."""
    model.check_inputs(x, y)  # on the whole set, so an error counts every image and names its index
    batch = max(1, min(batch, LIKELIHOOD_BATCH_VALUES // model.spec.dims))
    fn = model.log_prob if isinstance(model, ExactLikelihood) else model.elbo
    ys = y.split(batch) if y is not None else [None] * len(x.split(batch))
    out = []
    with torch.random.fork_rng(devices=rng_devices(model.device)):  # manual_seed seeds CUDA's too
        torch.manual_seed(0)
        for xb, yb in zip(x.split(batch), ys, strict=True):
            out.append(fn(xb.to(model.device), None if yb is None else yb.to(model.device)).double().cpu())
    return torch.cat(out)


# ----------------------------------------------------------------------------- registry

REGISTRY: dict[str, type[GenerativeModel]] = {}


# names genzoo gives its own things beside the families': folders of a runs folder and of its
# evaluation folder, the ``default`` of ``ray.resources``, the ``best`` and ``all`` of pick lists
RESERVED_NAMES = frozenset(
    {"all", "bench", "best", "default", "evaluation", "evaluator", "human", "report", "teachers",
     "usefulness"}
)  # fmt: skip


# the modules of models/ that hold no family (models/__init__.py imports every other one)
SHARED_MODULES = frozenset({"base", "layers", "trainer", "evaluator", "judges", "classical"})


def register(cls: type[GenerativeModel]) -> type[GenerativeModel]:
    """Add ``cls`` to the registry under ``cls.family``: a lowercase identifier no other family and
    none of genzoo's own folders or keys (:data:`RESERVED_NAMES`) has, and the name of its file
    under models/ (``models/<family>.py``: dvc.yaml's stages depend on that file)."""
    name = cls.family
    if not (isinstance(name, str) and name.isidentifier() and name == name.lower()):
        raise ValueError(f"family {name!r}: a family's name is a lowercase identifier (vae, pixelcnn)")
    if name in RESERVED_NAMES:
        raise ValueError(f"family {name!r}: a name genzoo uses for its own outputs or keys "
                         f"({', '.join(sorted(RESERVED_NAMES))}); name the family otherwise")  # fmt: skip
    if name in SHARED_MODULES:  # models/<name>.py is not imported as a family
        raise ValueError(f"family {name!r}: models/{name}.py is one of genzoo's shared modules, not a "
                         "family's; name the family otherwise")  # fmt: skip
    package, _, module = cls.__module__.rpartition(".")
    if package == __name__.rpartition(".")[0] and module != name:  # a family shipped in models/
        raise ValueError(f"family {name!r} is defined in models/{module}.py: a family's file is "
                         f"models/{name}.py (dvc.yaml's train@{name} stage depends on it)")  # fmt: skip
    if name in REGISTRY:
        raise ValueError(f"family {name!r} registered twice")
    REGISTRY[name] = cls
    return cls


def families_with(*protocols: Any) -> list[str]:
    """The registered families (sorted) whose class implements every one of ``protocols``
    (a union, ``ExactLikelihood | LikelihoodBound``, for either): what a message lists as the
    families that can, a family a user adds among them."""
    return sorted(f for f, cls in REGISTRY.items() if all(issubclass(cls, p) for p in protocols))


def get_family(name: str) -> type[GenerativeModel]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown family {name!r}; known: {sorted(REGISTRY)}") from None


def build(family: str, spec: DataSpec, net: dict[str, Any] | NetConfig | None = None):
    cls = get_family(family)
    cfg = net if isinstance(net, NetConfig) else cls.Config(**(net or {}))
    return cls(spec, cfg)


# ----------------------------------------------------------------------------- files


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def umask() -> int:
    """The process's file-creation mask (read without changing it where /proc says it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and put back
    os.umask(mask)
    return mask


def as_if_created(path: str | Path, folder: bool = False) -> None:
    """Give a temp file or folder (made 0600 / 0700 by ``tempfile``) the mode a plain
    ``open`` or ``mkdir`` would have: 0666 or 0777 less the umask (0644 / 0755 under the
    usual 022), so the outputs it becomes are readable by whom the user's umask allows."""
    os.chmod(path, (0o777 if folder else 0o666) & ~umask())


def atomic_write(path: str | Path, write) -> None:
    """Write through ``write(tmp_path)`` to a temp file beside ``path``, fsync, then
    ``os.replace``: readers see the old file or the new one, never a partial one. The file gets
    the mode a plain write would give it (the umask's), not the temp file's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # a read-only folder: named, not the temp file's invented name
        if e.errno is not None:
            e.filename = str(path)
        raise
    os.close(fd)
    try:
        write(tmp)
        as_if_created(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # a full disk: a write's error names no file; the temp file means nothing to a user
        Path(tmp).unlink(missing_ok=True)
        if e.errno is not None and e.filename in (None, tmp):
            e.filename = str(path)  # the same exception (type, errno, traceback), naming the file
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def fsync_path(path: str | Path) -> None:
    """fsync a file or a folder; a file system that cannot fsync a folder (EINVAL on some FUSE,
    CIFS) is taken at its word, as PostgreSQL does."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_weights(
    net: nn.Module, path: str | Path, config: dict[str, Any], extra: dict[str, Any] | None = None
) -> Path:
    """Write ``<path>.safetensors`` (the weights) and ``<path>.json`` (``config``, the weights'
    file name and sha256, then ``extra``), each atomically; returns the ``.json`` path. One
    format for the generative models and the evaluator."""
    path = Path(path)
    weights = path.with_suffix(".safetensors")
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    atomic_write(weights, lambda tmp: save_file(state, tmp))
    meta = {**config, "weights": weights.name, "sha256": sha256_file(weights), **(extra or {})}
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2))
    return path.with_suffix(".json")


def read_weights(
    path: str | Path, map_location: str | torch.device = "cpu", *, allow_unhashed: bool = False
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The config and the weights written by :func:`save_weights`, once the weights' sha256
    matches the one recorded. Weights are safetensors: no code can run. A config without a
    sha256 is refused (its weights could be anything) unless ``allow_unhashed``; the weights
    file it names must sit beside it."""
    path = Path(path).with_suffix(".json")
    if not path.exists():
        raise FileNotFoundError(f"no model config at {path}")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a model config, unreadable as JSON ({e}); refusing to load") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: not a model config (a JSON {type(meta).__name__}); refusing to load")
    name = meta.get("weights", path.with_suffix(".safetensors").name)
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name:
        raise ValueError(f"{path}: weights {name!r} is not a file beside it; refusing to load")
    weights = path.with_name(name)
    if not weights.is_file():
        raise FileNotFoundError(
            f"no weights at {weights} ({path.name} names them): missing, train the model again"
        )
    digest = sha256_file(weights)
    if not meta.get("sha256"):
        if not allow_unhashed:
            raise ValueError(
                f"{path}: records no sha256 for {weights.name}, so tampered weights would load; "
                "pass allow_unhashed=True (on the command line: --allow-unhashed) to load it anyway"
            )
    elif digest != meta["sha256"]:
        raise ValueError(
            f"{weights}: sha256 does not match {path.name} (file {digest[:12]}..., recorded "
            f"{meta['sha256'][:12]}...): truncated, corrupted or replaced; not loaded"
        )
    return meta, load_file(weights, device=str(map_location))


def save(model: GenerativeModel, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Save to ``<path>.json`` (family, data spec, net config) + ``<path>.safetensors``."""
    config = {"family": model.family, "spec": asdict(model.spec), "net": model.cfg.model_dump(mode="json")}
    return save_weights(model, path, config, extra)


def load(
    path: str | Path, map_location: str | torch.device = "cpu", *, allow_unhashed: bool = False
) -> GenerativeModel:
    """Load a model saved by :func:`save`; its weights must match the sha256 its model.json
    records (one without a sha256 loads only with ``allow_unhashed=True``)."""
    meta, state = read_weights(path, map_location, allow_unhashed=allow_unhashed)
    where = Path(path).with_suffix(".json")
    family = meta.get("family")
    if family not in REGISTRY:
        raise ValueError(
            f"{where}: family {family!r} is not one of {', '.join(sorted(REGISTRY))}; refusing to load"
        )
    try:  # an edited config: said as such (a bug in a family's constructor keeps its traceback)
        spec = DataSpec(**meta["spec"])
        cfg = REGISTRY[family].Config(**meta["net"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(
            f"{where}: its spec or net is not a {family} model's ({_first(e)}); refusing to load"
        ) from e
    model = build(family, spec, cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        if not str(e).startswith("Error(s) in loading state_dict"):
            raise
        raise ValueError(
            f"{where}: its spec or net do not build the network its weights are of ({_first(e, 1)}); "
            "refusing to load"
        ) from e
    return model.to(map_location).eval()


def _first(e: BaseException, skip: int = 0) -> str:
    """The first line of an error's message with something in it (after ``skip`` lines: a
    state_dict error's first line only says there were errors)."""
    if callable(getattr(e, "errors", None)):  # pydantic's: the key and what is wrong with it
        first = e.errors()[0]
        return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return (lines[skip:] or lines or [type(e).__name__])[0]
